"""The ranking index: what a decision needs to rank a side, kept as numpy columns beside the exact book.

The book of record stays exact (:mod:`.positions`, :mod:`.wallets`, ``Decimal``). Beside it the index
keeps, per symbol and side, columns of the numbers a score needs, and per settle asset each
account's cross-margin equity, so that a decision ranks a side in one vectorized pass and sorts only
the few positions at the top of the queue (``argpartition``), not the whole book.

Determinism
-----------
Every number here is a *pure function of the exact state*: a column is recomputed from the
``Decimal`` values of the entity that changed, never accumulated in floating point, so an engine
restored from its changelog ranks exactly like the one that wrote it. Equity is the one sum: it is
kept in integer units of ``2**-16`` of the settle asset (:data:`UNITS`), each term (the wallet, the
unrealized PnL of one position at its symbol's latest mark) rounded on its own, so the sum is exact,
independent of the order of updates, and can be maintained incrementally:

``term(position) = rint((|q| * M - |cost|) * 2**16)`` for a long, ``rint((|cost| - |q| * M) * 2**16)``
for a short, computed in float64 from ``float(|q|)``, ``float(|cost|)`` and ``float(M)``;
``wallet_units = rint(float(balance) * 2**16)``; ``equity_units = wallet_units + sum(terms)``.

Each term is then within 2.5 units of the exact value (while ``|q| * M + |cost| < 2**36``), so an
account whose ``equity_units <= MARGIN`` (one settle unit) has its equity computed exactly, in
``Decimal``, by the engine: equity <= 0 ranks first, decided exactly. An asset holding a position
or wallet beyond :data:`LIMIT` (6.9e10 settle units, where the error bound no longer holds) has
every equity computed exactly: slower, never wrong.

The score (SPEC §3.3, ``pnl-leverage``) is then, in float64::

    notional = |q| * M
    upnl     = notional - |cost|  (long)   |   |cost| - notional  (short)
    pnl_pct  = upnl / |cost|
    leverage = notional / equity          (equity = equity_units / 2**16, or float(exact equity))
    score    = pnl_pct * leverage if upnl > 0 else pnl_pct / leverage;  +inf when equity <= 0

Ties are broken exactly (larger exact notional, then ``account_id``) among the positions selected.

Cost
----
A fill, balance or reservation marks its entity dirty (a dict insert); the index is brought up to
date when a decision needs it (or when many entities wait), one Python update per changed entity.
A mark move costs nothing until a decision ranks an account holding that symbol: then the side's
terms are recomputed in one vectorized pass and their differences added to the equities.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal

import numpy as np

from .positions import Position

#: Equity and PnL terms are integers in units of 2**-16 of the settle asset.
UNITS = 65536.0
#: Accounts whose equity is within this many units of zero get their equity computed exactly.
MARGIN = 1 << 16
#: Beyond this gross amount (|q| * M + |cost|, or a wallet) the float error bound no longer holds.
LIMIT = float(1 << 36)
#: Dirty entities waiting before the index is brought up to date without a decision asking.
FLUSH_AT = 8192
#: Positions first selected from the top of a side; grown 8x until their free quantity covers.
FIRST_K = 16

@dataclass(frozen=True, slots=True)
class Candidate:
    """A position in an ADL queue with its score and exact notional at the ranking mark."""

    position: Position
    score: float
    notional: Decimal


def term_units(long: bool, q: float, cost: float, mark: float) -> int:
    """The unrealized PnL of a position as equity units (the scalar form of :meth:`_Side.sync`)."""
    notional = q * mark
    return int(round(((notional - cost) if long else (cost - notional)) * UNITS))


class _Accounts:
    """The accounts of one settle asset: a dense slot each, its wallet and its equity in units."""

    __slots__ = ("slot_of", "wallet", "equity", "wide_wallets", "_n")

    def __init__(self) -> None:
        self.slot_of: dict[str, int] = {}
        self.wallet = np.zeros(64, dtype=np.int64)
        self.equity = np.zeros(64, dtype=np.int64)
        self.wide_wallets: set[str] = set()
        self._n = 0

    def slot(self, account_id: str) -> int:
        slot = self.slot_of.get(account_id)
        if slot is None:
            slot = self.slot_of[account_id] = self._n
            self._n += 1
            if slot == len(self.wallet):
                self.wallet = np.concatenate([self.wallet, np.zeros_like(self.wallet)])
                self.equity = np.concatenate([self.equity, np.zeros_like(self.equity)])
        return slot

    def set_wallet(self, account_id: str, balance: Decimal) -> None:
        slot, value = self.slot(account_id), float(balance)
        if abs(value) >= LIMIT:
            self.wide_wallets.add(account_id)
        else:
            self.wide_wallets.discard(account_id)
        units = int(round(value * UNITS))
        self.equity[slot] += units - int(self.wallet[slot])
        self.wallet[slot] = units


class _Side:
    """The positions of one symbol on one side (long or short), as columns by row.

    Rows are dense (a removed row is filled by the last one). ``term`` holds each position's PnL term
    at ``mark`` (the mark the side was last synced to), which is what the account equities contain.
    """

    __slots__ = ("symbol", "long", "accounts", "positions", "q", "cost", "term", "slot", "blocked", "n_blocked",
                 "mark", "_wide", "_n")

    def __init__(self, symbol: str, long: bool, accounts: _Accounts) -> None:
        self.symbol = symbol
        self.long = long
        self.accounts = accounts
        self.positions: list[Position] = []
        self.q = np.zeros(16)
        self.cost = np.zeros(16)
        self.term = np.zeros(16, dtype=np.int64)
        self.slot = np.zeros(16, dtype=np.intp)
        self.blocked = np.zeros(16, dtype=bool)
        self.n_blocked = 0
        self.mark: float | None = None
        self._wide: bool | None = False
        self._n = 0

    def __len__(self) -> int:
        return self._n

    def _term(self, q: float, cost: float) -> int:
        return 0 if self.mark is None else term_units(self.long, q, cost, self.mark)

    def _grow(self) -> None:
        for name in ("q", "cost", "term", "slot", "blocked"):
            column = getattr(self, name)
            setattr(self, name, np.concatenate([column, np.zeros_like(column)]))

    def put(self, position: Position, q: float, cost: float, blocked: bool) -> None:
        """Add ``position`` or update its row, and move its term into its account's equity."""
        row = position.row
        if row < 0:
            row = position.row = self._n
            if row == len(self.q):
                self._grow()
            self.positions.append(position)
            self._n += 1
            slot = self.slot[row] = self.accounts.slot(position.account_id)
            old_term, was_blocked = 0, False
        else:
            slot, old_term, was_blocked = self.slot[row], int(self.term[row]), bool(self.blocked[row])
        self.q[row], self.cost[row] = q, cost
        term = self._term(q, cost)
        self.term[row] = term
        self.accounts.equity[slot] += term - old_term
        self.blocked[row] = blocked
        self.n_blocked += blocked - was_blocked
        self._wide = None

    def remove(self, position: Position) -> None:
        row, last = position.row, self._n - 1
        slot = self.slot[row]
        self.accounts.equity[slot] -= self.term[row]
        self.n_blocked -= bool(self.blocked[row])
        if row != last:
            moved = self.positions[last]
            self.positions[row] = moved
            moved.row = row
            for column in (self.q, self.cost, self.term, self.slot, self.blocked):
                column[row] = column[last]
        self.positions.pop()
        self._n = last
        position.row = -1
        self._wide = None

    def sync(self, mark: float) -> None:
        """Recompute every term at ``mark`` and move the differences into the account equities."""
        if mark == self.mark:
            return
        self.mark, n = mark, self._n
        if n:
            x = self.q[:n] * mark
            if self.long:
                x -= self.cost[:n]
            else:
                np.subtract(self.cost[:n], x, out=x)
            x *= UNITS
            new = np.rint(x, out=x).astype(np.int64)
            term = self.term[:n]
            self.accounts.equity[self.slot[:n]] += new - term
            term[:] = new
        self._wide = None

    def wide(self) -> bool:
        """True when some row's |q| * M + |cost| may reach :data:`LIMIT` (a pure function of the rows)."""
        if self._wide is None:
            n = self._n
            self._wide = bool(n) and (
                float(self.cost[:n].max()) + (0.0 if self.mark is None else float(self.q[:n].max()) * self.mark)
            ) >= LIMIT
        return self._wide


class RankingIndex:
    """Columns for ranking, maintained from the exact book (see the module docstring)."""

    def __init__(self, asset_of: Callable[[str], str]) -> None:
        self._asset_of = asset_of
        self._accounts: dict[str, _Accounts] = {}
        self._sides: dict[tuple[str, bool], _Side] = {}
        self._sides_of_asset: dict[str, list[_Side]] = {}
        self._marks: dict[str, float] = {}
        self._positions: dict[int, Position] = {}
        self._wallets: dict[tuple[str, str], Decimal] = {}

    # -- what the engine tells it ------------------------------------------------------------

    def position_changed(self, position: Position) -> None:
        self._positions[id(position)] = position
        if len(self._positions) >= FLUSH_AT:
            self.flush()

    def wallet_changed(self, account_id: str, asset: str, balance: Decimal) -> None:
        self._wallets[(account_id, asset)] = balance
        if len(self._wallets) >= FLUSH_AT:
            self.flush()

    def mark_changed(self, symbol: str, mark: Decimal) -> None:
        self._marks[symbol] = float(mark)

    # -- keeping up --------------------------------------------------------------------------

    def _side(self, symbol: str, long: bool) -> _Side:
        side = self._sides.get((symbol, long))
        if side is None:
            asset = self._asset_of(symbol)
            accounts = self._accounts.get(asset)
            if accounts is None:
                accounts = self._accounts[asset] = _Accounts()
            side = self._sides[(symbol, long)] = _Side(symbol, long, accounts)
            self._sides_of_asset.setdefault(asset, []).append(side)
        return side

    def flush(self) -> None:
        """Bring the columns up to date with every entity changed since the last flush."""
        if self._wallets:
            wallets, self._wallets = self._wallets, {}
            for (account_id, asset), balance in wallets.items():
                accounts = self._accounts.get(asset)
                if accounts is None:
                    accounts = self._accounts[asset] = _Accounts()
                accounts.set_wallet(account_id, balance)
        if self._positions:
            positions, self._positions = self._positions, {}
            for position in positions.values():
                self._refresh(position)

    def _refresh(self, position: Position) -> None:
        quantity = position.quantity
        indexed = position.row >= 0
        if indexed and (quantity == 0 or (quantity > 0) != position.indexed_long):
            self._side(position.symbol, position.indexed_long).remove(position)
            indexed = False
        if quantity == 0:
            return
        long = quantity > 0
        position.indexed_long = long
        self._side(position.symbol, long).put(
            position, float(quantity.copy_abs()), float(position.cost.copy_abs()),
            position.reserved >= quantity.copy_abs())

    def _sync_asset(self, asset: str, skip: _Side | None = None) -> bool:
        """Sync every side of ``asset`` (but ``skip``) to its symbol's latest mark; True when every
        equity of the asset is within the error bound (no wide position or wallet)."""
        marks, tight = self._marks, not self._accounts[asset].wide_wallets
        for side in self._sides_of_asset.get(asset, ()):
            if side is skip:
                continue
            mark = marks.get(side.symbol)
            if mark is not None:
                side.sync(mark)
            tight = tight and not side.wide()
        return tight

    # -- ranking -----------------------------------------------------------------------------

    def ranked(
        self,
        symbol: str,
        long: bool,
        mark: Decimal,
        exact_equity: Callable[[str], Decimal],
        score: Callable[..., np.ndarray],
        *,
        covering: Decimal | None = None,
        limit: int | None = None,
    ) -> list[Candidate]:
        """The queue of the ``long`` (or short) side of ``symbol`` at ``mark``, first first: the
        positions with free quantity, ordered by ``score`` (a policy's vectorized score, see
        :class:`~adl_stream.engine.ranking.PnlLeverage`). With ``covering``, only the head of the
        queue whose free quantity sums to at least ``covering`` (or all of it); ``limit`` caps how
        many candidates are returned."""
        self.flush()
        side = self._sides.get((symbol, long))
        if side is None or not len(side):
            return []
        tight = self._sync_asset(self._asset_of(symbol), skip=self._sides.get((symbol, not long)))
        n = len(side)
        rows = np.flatnonzero(~side.blocked[:n]) if side.n_blocked else np.arange(n)
        scores, notional = self._scores(side, rows, float(mark), tight, exact_equity, score)
        count, k = len(rows), FIRST_K if covering is not None else len(rows)
        while True:
            if k >= count:
                return self._candidates(side, self._order(side, rows, np.arange(count), scores, notional, mark),
                                        mark, limit)
            threshold = scores[np.argpartition(scores, count - k)[count - k]]
            top = np.flatnonzero(scores >= threshold)  # the k best and every tie with the k-th
            head = self._candidates(side, self._order(side, rows, top, scores, notional, mark), mark, limit)
            if sum((c.position.free for c in head), Decimal(0)) >= covering:
                return head
            k *= 8

    def _scores(self, side: _Side, rows: np.ndarray, mark: float, tight: bool,
                exact_equity: Callable[[str], Decimal], score: Callable[..., np.ndarray]):
        """(scores, float notionals) of ``rows`` of ``side``; +inf where equity <= 0 (exactly)."""
        slots = side.slot[rows]
        q, cost, equity_units = side.q[rows], side.cost[rows], side.accounts.equity[slots]
        notional = q * mark
        upnl = notional - cost if side.long else cost - notional
        equity = equity_units / UNITS
        first = []
        for i in (np.flatnonzero(equity_units <= MARGIN).tolist() if tight else range(len(rows))):
            value = exact_equity(side.positions[rows[i]].account_id)
            if value > 0:
                equity[i] = float(value)
            else:
                equity[i] = 1.0
                first.append(i)
        scores = score(side.long, notional, upnl, cost, equity)
        if first:
            scores[first] = np.inf
        return scores, notional

    @staticmethod
    def _order(side: _Side, rows: np.ndarray, picked: np.ndarray, scores: np.ndarray,
               notional: np.ndarray, mark: Decimal) -> list[tuple[int, float]]:
        """(row, score) of ``picked`` in queue order: score, then notional, then account id. Floats
        order first (a float notional never orders two exact notionals the wrong way round); runs
        equal in both are ordered exactly."""
        s, n = scores[picked], notional[picked]
        order = np.lexsort((-n, -s))
        s, n, chosen = s[order], n[order], rows[picked[order]]
        out = list(zip(chosen.tolist(), s.tolist()))
        ties = np.flatnonzero((s[1:] == s[:-1]) & (n[1:] == n[:-1]))
        if len(ties):
            positions = side.positions

            def exact(item):
                position = positions[item[0]]
                return (-(position.quantity.copy_abs() * mark), position.account_id)

            start = None
            for i in ties.tolist():
                if start is None or i != end:
                    if start is not None:
                        out[start:end + 1] = sorted(out[start:end + 1], key=exact)
                    start = i
                end = i + 1
            out[start:end + 1] = sorted(out[start:end + 1], key=exact)
        return out

    @staticmethod
    def _candidates(side: _Side, ordered: list[tuple[int, float]], mark: Decimal,
                    limit: int | None) -> list[Candidate]:
        positions = side.positions
        return [Candidate(positions[row], score, positions[row].quantity.copy_abs() * mark)
                for row, score in ordered[:limit]]

    # -- views ---------------------------------------------------------------------------------

    def __iter__(self) -> Iterator[Position]:
        self.flush()
        for side in self._sides.values():
            yield from side.positions
