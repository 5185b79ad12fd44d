"""The ranking index: what a decision needs to rank a side, kept as numpy columns beside the exact book.

The book of record stays exact (:mod:`.positions`, :mod:`.wallets`: scaled integers, read as
``Decimal``). Beside it the index
keeps, per symbol and side, columns of the numbers a score needs, and per settle asset each
account's cross-margin equity, so that a decision ranks a side in one vectorized pass and sorts only
the few positions at the top of the queue (``argpartition``), not the whole book.

Determinism
-----------
Every number here is a *pure function of the exact state*: a column is recomputed from the exact
values of the entity that changed (``units / 10**scale``, an integer division Python rounds
correctly: the same float as ``float(Decimal)``), never accumulated in floating point, so an engine
restored from its changelog ranks exactly like the one that wrote it. Equity is the one sum: it is
kept in integer units of ``2**-16`` of the settle asset (:data:`UNITS`), each term (the wallet, the
unrealized PnL of one position at its symbol's latest mark) rounded on its own, so the sum is exact,
independent of the order of updates, and can be maintained incrementally:

``term = rint((|q| * M - |cost|) * 2**16)`` for a long, ``rint((|cost| - |q| * M) * 2**16)`` for a
short, in float64 from ``float(|q|)``, ``float(|cost|)`` and ``float(M)``;
``wallet_units = rint(float(balance) * 2**16)``; ``equity_units = wallet_units + sum(terms)``.

Each term is within 2.5 units of the exact value while ``|q| * M + |cost| < 2**36`` (:data:`LIMIT`),
so the sign of an account's equity is certain beyond :data:`MARGIN` (one settle unit) either side
of zero; within it the engine computes the equity exactly, in ``Decimal``: equity <= 0 ranks first,
decided exactly. An asset with a position or a wallet beyond :data:`LIMIT` (6.9e10 settle units)
has every equity computed exactly: slower, never wrong.

The score (SPEC §3.3) is the policy's (:mod:`.ranking`), in float64, from::

    notional = |q| * M
    upnl     = notional - |cost|  (long)   |   |cost| - notional  (short)
    equity   = equity_units / 2**16, or float(exact equity) within the margin

The columns hold these in units of 2**-16 (``|cost| * 2**16``, ``|q| * (M * 2**16)``, ...): scaling
by a power of two commutes with float rounding, so a ratio of them (every score is one) has the
same bits as the ratio in settle units, and the terms need no extra pass. Ties are broken exactly
(larger exact notional, then ``account_id``) among the positions selected.

Cost
----
A fill, balance or reservation marks its entity dirty (a dict insert); the index catches up when a
decision needs it (or when many entities wait), one Python update per changed entity. A mark move
costs nothing until a decision ranks an account holding that symbol: then each side involved is
recomputed in one vectorized pass and its term differences are added to the equities (the ranked
side's own differences are added on the fly, not written back).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from itertools import repeat
from operator import attrgetter, truediv

import numpy as np

from .numbers import EXACT, MONEY_UNIT, QUANTITY_SCALE, QUANTITY_UNIT, shared_ints, to_units
from .positions import Position
from .wallets import Accounts as WalletAccounts
from .wallets import Wallet, Wallets

#: Equity and PnL terms are integers in units of 2**-16 of the settle asset.
UNITS = 65536.0
#: Accounts whose equity is within this many units of zero get their equity computed exactly.
MARGIN = 1 << 16
#: Beyond this gross amount (|q| * M + |cost|, or a wallet) the float error bound no longer holds.
LIMIT = float(1 << 36)
#: Dirty entities waiting before the index catches up without a decision asking.
FLUSH_AT = 8192
#: Positions first selected from the top of a side; grown 8x until their free quantity covers.
FIRST_K = 16
#: Stride of the sample that finds a floor for the selection on a large side.
_STRIDE = 32


@dataclass(frozen=True, slots=True)
class Candidate:
    """A position in an ADL queue with its score and exact notional at the ranking mark."""

    position: Position
    score: float
    notional: Decimal


@dataclass(slots=True)
class _Columns:
    """A side scored: per row (all rows of the side, by row number)."""

    side: _Side
    scores: np.ndarray
    notional: np.ndarray
    upnl: np.ndarray
    equity: np.ndarray
    broke: np.ndarray

    def rows(self) -> np.ndarray:
        """The rows with free quantity."""
        n = len(self.scores)
        return np.flatnonzero(~self.side.blocked[:n]) if self.side.n_blocked else np.arange(n)


@dataclass(frozen=True, slots=True)
class SideView:
    """A side's positions with free quantity in queue order, and their columns in the same order.

    Money columns are in units of 2**-16 of the settle asset (``notional``, ``upnl``, ``cost`` =
    ``|cost basis|``, ``equity`` of the account, 0 where ``broke``: equity <= 0); ``q`` and ``free``
    are ``float(|q|)`` and ``float(free quantity)``; ``mark`` is the ranking mark in units."""

    positions: list[Position]
    scores: np.ndarray
    q: np.ndarray
    free: np.ndarray
    cost: np.ndarray
    notional: np.ndarray
    upnl: np.ndarray
    equity: np.ndarray
    broke: np.ndarray
    mark: float

    def __len__(self) -> int:
        return len(self.positions)


def term_units(long: bool, q: float, cost: float, mark: float) -> int:
    """A position's unrealized PnL as equity units, from ``float(|q|)``, ``float(|cost|)``, ``float(M)``."""
    notional = q * mark
    return int(round(((notional - cost) if long else (cost - notional)) * UNITS))


def _top(scores: np.ndarray, notional: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` best by (score, float notional), and of every tie with the k-th: a set
    that holds the head of the queue, whatever the exact tie-breaks say within it.

    On a large side a strided sample first gives a floor that a few times ``k`` scores reach, and
    the selection runs on those only (if fewer than ``k`` reach it, on all): the floor changes how
    fast the set is found, never which set it is."""
    pool = None
    if len(scores) >= 64 * k:
        sample = scores[::_STRIDE]
        j = min(len(sample), k // _STRIDE + 4)
        floor = np.partition(sample, len(sample) - j)[len(sample) - j]
        pool = np.flatnonzero(scores >= floor)
        if len(pool) < k:
            pool = None
    if pool is None:
        pool = np.arange(len(scores))
    pooled = scores[pool]
    best = np.argpartition(pooled, len(pool) - k)[len(pool) - k:]
    threshold = pooled[best].min()
    if np.count_nonzero(pooled >= threshold) == k:  # no tie with the k-th outside the k
        return pool[best]
    above = pool[pooled > threshold]
    tied = pool[pooled == threshold]
    wanted = k - len(above)
    if len(tied) > wanted:  # many share the k-th score (e.g. +inf): the larger notionals among them
        cut = notional[tied][np.argpartition(notional[tied], len(tied) - wanted)[len(tied) - wanted]]
        tied = tied[notional[tied] >= cut]
    return np.concatenate([above, tied])


_ACCOUNT_ID, _Q, _C, _RESERVED, _ROW = map(attrgetter, ("account_id", "q", "c", "reserved", "row"))


def _grown(column: np.ndarray) -> np.ndarray:
    """``column`` with room for a quarter more rows (not double: less idle memory at every size)."""
    return np.concatenate([column, np.zeros(len(column) // 4 + 16, dtype=column.dtype)])


def quantity_floats(q: list[int]) -> np.ndarray:
    """``q / 10**18`` of each quantity (units), the float Python's ``int / int`` gives (correctly
    rounded): in numpy where ``q`` is exactly a float64 (then one IEEE division by 1e18, itself
    exact, rounds correctly too), in Python for the rest."""
    n = len(q)
    try:
        exact = np.array(q, np.int64)
    except OverflowError:  # beyond int64: every one in Python
        return np.fromiter(map(truediv, q, repeat(QUANTITY_UNIT, n)), np.float64, n)
    floats = exact.astype(np.float64)
    with np.errstate(invalid="ignore"):
        inexact = np.flatnonzero((np.abs(floats) >= 2.0**63) | (floats.astype(np.int64) != exact))
    out = floats / 1e18
    if len(inexact):
        out[inexact] = [q[i] / QUANTITY_UNIT for i in inexact.tolist()]
    return out


def money_floats(units: list[int]) -> np.ndarray:
    """``units / 10**36`` of each amount (units of 1e-36): Python's correctly rounded ``int / int``
    (10**36 is no float64, so no IEEE shortcut rounds the same way)."""
    return np.fromiter(map(truediv, units, repeat(MONEY_UNIT, len(units))), np.float64, len(units))


class _Accounts:
    """The accounts of one settle asset: their dense slots are the wallets' (:class:`.wallets.Accounts`,
    one account map for both); by slot, the wallet and the equity in units."""

    __slots__ = ("table", "wallet", "equity", "wide_wallets")

    def __init__(self, table: WalletAccounts) -> None:
        self.table = table
        self.wallet = np.zeros(max(64, len(table)), dtype=np.int64)
        self.equity = np.zeros(len(self.wallet), dtype=np.int64)
        self.wide_wallets: set[str] = set()

    def slot(self, account_id: str) -> int:
        slot = self.table.slot(account_id)
        if slot >= len(self.wallet):
            more = max(slot + 1 - len(self.wallet), len(self.wallet) // 4 + 16)
            self.wallet = np.concatenate([self.wallet, np.zeros(more, dtype=np.int64)])
            self.equity = np.concatenate([self.equity, np.zeros(more, dtype=np.int64)])
        return slot

    def slots(self, accounts: list[str]) -> np.ndarray:
        """:meth:`slot` of each of ``accounts``, the columns grown once."""
        slots = np.array(self.table.slots(accounts), np.intp)
        self.grow()
        return slots

    def grow(self) -> None:
        """The columns grown to hold every account of the table (a quarter's room more)."""
        if len(self.table) > len(self.wallet):
            more = len(self.table) - len(self.wallet) + len(self.table) // 4 + 16
            self.wallet = np.concatenate([self.wallet, np.zeros(more, dtype=np.int64)])
            self.equity = np.concatenate([self.equity, np.zeros(more, dtype=np.int64)])

    def set_wallets(self, balances: dict[str, int]) -> None:
        """Set the wallets of these accounts (balances in units of 1e-36) and move the differences
        into their equities."""
        self.set_slots(self.slots(list(balances)), list(balances.values()))

    def set_slots(self, slots, units: list[int]) -> None:
        """Set the wallets of the accounts in ``slots`` (distinct) to ``units`` (balances in units of
        1e-36) and move the differences into their equities."""
        if not len(slots):
            return
        slots = np.asarray(slots, np.intp)
        self.grow()
        values = money_floats(units)
        wide = np.abs(values) >= LIMIT
        if wide.any() or self.wide_wallets:
            ids = self.table.ids
            for slot, is_wide in zip(slots.tolist(), wide.tolist()):
                (self.wide_wallets.add if is_wide else self.wide_wallets.discard)(ids[slot])
        # A wide wallet's units are no int64: it is held as 0, and its account's equity is read
        # exactly while it is wide (_tight); the differences stay consistent either way.
        units = np.rint(np.where(wide, 0.0, values) * UNITS).astype(np.int64)
        self.equity[slots] += units - self.wallet[slots]
        self.wallet[slots] = units


class _Side:
    """The positions of one symbol on one side (long or short), as columns by row.

    Rows are dense (a removed row is filled by the last one). ``q`` is ``float(|q|)``, ``cost`` is
    ``float(|cost|) * 2**16``, ``free`` is ``float(|q| - reserved)``; ``term`` holds each position's PnL term at ``mark`` (the mark, in
    units, the side was last synced to), which is what the account equities contain.
    """

    __slots__ = ("symbol", "long", "accounts", "positions", "q", "cost", "free", "term", "slot", "blocked",
                 "n_blocked", "mark", "_view", "_wide", "_n")

    def __init__(self, symbol: str, long: bool, accounts: _Accounts) -> None:
        self.symbol, self.long, self.accounts = symbol, long, accounts
        self.positions: list[Position] = []
        self.q = np.zeros(16)
        self.cost = np.zeros(16)
        self.free = np.zeros(16)
        self.term = np.zeros(16, dtype=np.int64)
        self.slot = np.zeros(16, dtype=np.intp)
        self.blocked = np.zeros(16, dtype=bool)
        self.n_blocked = 0
        self.mark: float | None = None
        self._view: tuple | None = None
        self._wide: tuple[float | None, bool] | None = None
        self._n = 0

    def __len__(self) -> int:
        return self._n

    def put(self, positions: list[Position]) -> None:
        """Add these positions (none on another side) or update their rows, and move their terms into
        their accounts' equities."""
        # The columns' values made by C-level maps over the positions, the numpy columns written
        # once (a numpy item set per value cost more than the rest of a loop; a Python loop per
        # position was a fifth of applying a fill)
        new = [position for position in positions if position.row < 0]
        if new:
            start = self._n
            end = self._n = start + len(new)
            while end > len(self.q):
                for name in ("q", "cost", "free", "term", "slot", "blocked"):
                    setattr(self, name, _grown(getattr(self, name)))
            deque(map(setattr, new, repeat("row"), shared_ints(start, end)), 0)
            self.positions += new
            self.slot[start:end] = self.accounts.slots(list(map(_ACCOUNT_ID, new)))
            self.term[start:end] = 0
            self.blocked[start:end] = False
        sizes = list(map(abs, map(_Q, positions)))  # int / int is correctly rounded: the float of the exact value
        q_list = list(map(truediv, sizes, repeat(QUANTITY_UNIT)))
        cost_list = list(map(truediv, map(abs, map(_C, positions)), repeat(MONEY_UNIT)))
        reserved = list(map(_RESERVED, positions))
        free_list = q_list if not any(reserved) else [
            (size - to_units(held, QUANTITY_SCALE)) / QUANTITY_UNIT if held else q
            for size, held, q in zip(sizes, reserved, q_list)]
        rows = list(map(_ROW, positions))
        if len(rows) == 1:  # (most flushes between two decisions: items set, not arrays of one made)
            (row,), (q,), (free,) = rows, q_list, free_list
            cost = cost_list[0] * UNITS
            self.q[row], self.cost[row], self.free[row] = q, cost, free
            if self.mark is not None:  # the same float64 operations as the columns' below
                term = round(q * self.mark - cost if self.long else cost - q * self.mark)
                self.accounts.equity[self.slot[row]] += term - int(self.term[row])
                self.term[row] = term
            self.n_blocked += (free <= 0) - bool(self.blocked[row])
            self.blocked[row] = free <= 0
            self._view = self._wide = None
            return
        rows = np.array(rows, dtype=np.intp)
        q, cost, free = np.array(q_list), np.array(cost_list), np.array(free_list)
        cost *= UNITS
        blocked = free <= 0
        self.q[rows], self.cost[rows], self.free[rows] = q, cost, free
        if self.mark is not None:
            upnl = q * self.mark - cost if self.long else cost - q * self.mark
            terms = np.rint(upnl).astype(np.int64)
            self.accounts.equity[self.slot[rows]] += terms - self.term[rows]
            self.term[rows] = terms
        self.n_blocked += int(np.count_nonzero(blocked)) - int(np.count_nonzero(self.blocked[rows]))
        self.blocked[rows] = blocked
        self._view = self._wide = None

    def load(self, positions: list[Position], q: np.ndarray, cost: np.ndarray, slots: np.ndarray) -> None:
        """Add ``positions`` (none indexed yet, none reserved), with their ``q`` and ``cost`` columns
        (as :meth:`put` computes them) and their accounts' slots (:meth:`RankingIndex.account_slots`),
        in bulk."""
        n, start = len(positions), self._n
        end = start + n
        size = max(len(self.q), end + end // 4)  # a quarter's room, as the columns grow (_grown)
        if size > len(self.q):
            for name in ("q", "cost", "free", "term", "slot", "blocked"):
                column = getattr(self, name)
                setattr(self, name, np.concatenate([column, np.zeros(size - len(column), column.dtype)]))
        self.q[start:end] = q
        self.free[start:end] = q
        self.cost[start:end] = cost
        self.term[start:end] = 0
        self.blocked[start:end] = q <= 0
        self.n_blocked += int(np.count_nonzero(q <= 0))
        self.slot[start:end] = slots
        for row, position in zip(shared_ints(start, end), positions):
            position.row = row
        self.positions += positions
        self._n = end
        self._view = self._wide = None
        if self.mark is not None:
            mark, self.mark = self.mark, None
            self.sync(mark)

    def remove(self, position: Position) -> None:
        row, last = position.row, self._n - 1
        self.accounts.equity[self.slot[row]] -= self.term[row]
        self.n_blocked -= bool(self.blocked[row])
        if row != last:
            moved = self.positions[last]
            self.positions[row] = moved
            moved.row = row
            for column in (self.q, self.cost, self.free, self.term, self.slot, self.blocked):
                column[row] = column[last]
        self.positions.pop()
        self._n = last
        position.row = -1
        self._view = self._wide = None

    def at(self, mark: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(notional, upnl, terms) of every row at ``mark`` (in units), computed once per mark and rows."""
        view = self._view
        if view is None or view[0] != mark:
            n = self._n
            notional = self.q[:n] * mark
            upnl = notional - self.cost[:n] if self.long else self.cost[:n] - notional
            view = self._view = (mark, notional, upnl, np.rint(upnl).astype(np.int64))
        return view[1], view[2], view[3]

    def sync(self, mark: float) -> None:
        """Recompute every term at ``mark`` (units) and move the differences into the equities."""
        if mark == self.mark:
            return
        if self._n:
            terms = self.at(mark)[2]
            stored = self.term[:self._n]
            self.accounts.equity[self.slot[:self._n]] += terms - stored
            stored[:] = terms
        self.mark = mark

    def equity(self, mark: float | None) -> np.ndarray:
        """Each row's account equity in units with this side's terms at ``mark`` (units, or None for
        no mark yet), without writing them back."""
        n = self._n
        equity = self.accounts.equity[self.slot[:n]]
        if mark != self.mark:
            equity -= self.term[:n]
            if mark is not None:
                equity += self.at(mark)[2]
        return equity

    def wide(self, mark: float | None) -> bool:
        """True when a row's |q| * M + |cost| may reach :data:`LIMIT` at ``mark`` (units)."""
        if self._wide is None or self._wide[0] != mark:
            n, gross = self._n, 0.0
            if n:
                gross = float(self.cost[:n].max()) + (0.0 if mark is None else float(self.q[:n].max()) * mark)
            self._wide = (mark, gross >= LIMIT * UNITS)
        return self._wide[1]


class RankingIndex:
    """Columns for ranking, maintained from the exact book (see the module docstring)."""

    def __init__(self, asset_of: Callable[[str], str], wallets: Wallets | None = None) -> None:
        """``wallets``: the engine's, whose account slots the index shares (its own when None)."""
        self._asset_of = asset_of
        self._tables = Wallets() if wallets is None else wallets
        self._accounts: dict[str, _Accounts] = {}
        self._sides: dict[tuple[str, bool], _Side] = {}
        self._sides_of_asset: dict[str, list[_Side]] = {}
        self._marks: dict[str, float] = {}
        self._positions: dict[int, Position] = {}
        self._wallets: dict[tuple[str, str], int] = {}

    # -- what the engine tells it ------------------------------------------------------------

    def position_changed(self, position: Position) -> None:
        self._positions[id(position)] = position
        if len(self._positions) >= FLUSH_AT:
            self.flush()

    def wallet_changed(self, account_id: str, asset: str, wallet: Wallet) -> None:
        self.balance_changed(account_id, asset, wallet.units)

    def balance_changed(self, account_id: str, asset: str, units: int) -> None:
        """The wallet's balance is now ``units`` (of 1e-36)."""
        self._wallets[(account_id, asset)] = units
        if len(self._wallets) >= FLUSH_AT:
            self.flush()

    def mark_changed(self, symbol: str, mark: Decimal) -> None:
        self._marks[symbol] = float(mark) * UNITS

    def account_slots(self, symbols: list[str], accounts: list[str]) -> tuple[np.ndarray, list[str]]:
        """For a restore's position columns, before :meth:`load`: the slot of each row's account
        among the accounts of its symbol's settle asset (an account new there gets one), and the
        account ids as those accounts hold them, so that the book, the index and the wallets share
        one string object per account (as they do live) and each id is hashed once."""
        distinct = dict.fromkeys(symbols)
        assets = dict.fromkeys(map(self._asset_of, distinct))
        if len(assets) == 1:
            table = self._accounts_of(next(iter(assets)))
            held, n = table.table.ids, len(accounts)
            if held[:n] == accounts:  # row i is slot i, no look-up (when positions came in their wallets' order)
                table.grow()
                return np.arange(n, dtype=np.intp), held[:n]
            slots = table.slots(accounts)  # (may replace the table's list of ids: read it after)
            return slots, list(map(table.table.ids.__getitem__, slots.tolist()))
        slots, held = np.zeros(len(accounts), np.intp), list(accounts)
        asset_of = {symbol: self._asset_of(symbol) for symbol in distinct}
        for asset in assets:
            rows = [row for row, symbol in enumerate(symbols) if asset_of[symbol] == asset]
            table = self._accounts_of(asset)
            slots[rows] = of_asset = table.slots([accounts[row] for row in rows])
            for row, slot in zip(rows, of_asset.tolist()):
                held[row] = table.table.ids[slot]
        return slots, held

    def load(self, positions: list[Position], symbols: list[str], slots: np.ndarray, q: list[int],
             c: list[int], balances: dict[str, tuple[list[int], list[int]]]) -> None:
        """Index a restored engine: its ``positions`` (none indexed yet, none reserved: reservations
        are restored afterwards) with, in the same order, their symbols, accounts' slots
        (:meth:`account_slots`) and exact ``q`` and ``c`` (units), and per settle asset the wallet
        slots set and their balances (units), as
        :meth:`.wallets.Wallets.load` returns them; in bulk, every float as :meth:`_Side.put` and
        :meth:`_Accounts.set_wallets` compute it (:func:`quantity_floats`, :func:`money_floats`)."""
        for asset, (set_slots, units) in balances.items():
            self._accounts_of(asset).set_slots(set_slots, units)
        n = len(positions)
        if not n:
            return
        signed = quantity_floats(q)
        q_abs = np.abs(signed)
        cost = np.abs(money_floats(c)) * UNITS
        distinct = dict.fromkeys(symbols)
        if len(distinct) == 1:
            group = np.zeros(n, np.int64)
        else:
            code = {symbol: i for i, symbol in enumerate(distinct)}
            group = np.fromiter(map(code.__getitem__, symbols), np.int64, n) * 3
        symbols = list(distinct)
        group += np.sign(signed).astype(np.int64) + 1  # 0 short, 1 flat, 2 long
        objects = np.empty(n, dtype=object)
        objects[:] = positions
        order = np.argsort(group, kind="stable")
        bounds = np.searchsorted(group[order], np.arange(3 * len(symbols) + 1))
        for g in range(3 * len(symbols)):
            if g % 3 == 1 or bounds[g] == bounds[g + 1]:
                continue
            rows = order[bounds[g]:bounds[g + 1]]
            self._side(symbols[g // 3], g % 3 == 2).load(objects[rows].tolist(), q_abs[rows], cost[rows], slots[rows])

    # -- catching up ---------------------------------------------------------------------------

    def _accounts_of(self, asset: str) -> _Accounts:
        accounts = self._accounts.get(asset)
        if accounts is None:
            accounts = self._accounts[asset] = _Accounts(self._tables.accounts(asset))
        return accounts

    def _side(self, symbol: str, long: bool) -> _Side:
        side = self._sides.get((symbol, long))
        if side is None:
            asset = self._asset_of(symbol)
            side = self._sides[(symbol, long)] = _Side(symbol, long, self._accounts_of(asset))
            self._sides_of_asset.setdefault(asset, []).append(side)
        return side

    def flush(self) -> None:
        """Bring the columns up to date with every entity changed since the last flush."""
        if self._wallets:
            wallets, self._wallets = self._wallets, {}
            by_asset: dict[str, dict[str, int]] = {}
            for (account_id, asset), units in wallets.items():
                by_asset.setdefault(asset, {})[account_id] = units
            for asset, balances in by_asset.items():
                self._accounts_of(asset).set_wallets(balances)
        if self._positions:
            positions, self._positions = self._positions, {}
            by_side: dict[tuple[str, bool], list[Position]] = {}
            sides = self._sides
            for position in positions.values():
                quantity, row = position.q, position.row
                if row >= 0:  # indexed: on the long side if that side holds it at its row
                    longs = sides.get((position.symbol, True))
                    indexed_long = longs is not None and row < longs._n and longs.positions[row] is position
                    if quantity == 0 or (quantity > 0) != indexed_long:
                        sides[(position.symbol, indexed_long)].remove(position)
                if quantity != 0:
                    key = (position.symbol, quantity > 0)
                    changed = by_side.get(key)
                    if changed is None:  # (not setdefault: it would make a list per position)
                        changed = by_side[key] = []
                    changed.append(position)
            for (symbol, long), changed in by_side.items():
                self._side(symbol, long).put(changed)

    def _tight(self, side: _Side) -> bool:
        """Sync every side of ``side``'s asset that ranked accounts may hold (all but the opposite
        side of its symbol, and ``side`` itself, which is read at its latest mark without syncing);
        True when none of them, and no wallet of the asset, is beyond the error bound."""
        accounts, marks = side.accounts, self._marks
        tight = not accounts.wide_wallets and not side.wide(marks.get(side.symbol))
        for other in self._sides_of_asset[self._asset_of(side.symbol)]:
            if other.symbol == side.symbol:
                continue
            mark = marks.get(other.symbol)
            if mark is not None:
                other.sync(mark)
            tight = tight and not other.wide(mark)
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
        :mod:`.allocation`). With ``covering``, only the head of the queue whose free quantity sums
        to at least ``covering`` (or all of it); ``limit`` caps how many are returned."""
        columns = self._columns(symbol, long, mark, exact_equity, score)
        if columns is None:
            return []
        side, scores, notional = columns.side, columns.scores, columns.notional
        count = len(scores) - side.n_blocked
        k = FIRST_K if covering is not None else count
        while True:
            if k >= count:
                rows, ordered = self._order(side, columns.rows(), scores, notional, mark)
                return self._candidates(side, rows, ordered, mark, limit, covering)[0]
            rows, ordered = self._order(side, _top(scores, notional, k), scores, notional, mark)
            head, covered = self._candidates(side, rows, ordered, mark, limit, covering)
            if covered:
                return head
            k *= 8

    def view(self, symbol: str, long: bool, mark: Decimal, exact_equity: Callable[[str], Decimal],
             score: Callable[..., np.ndarray]) -> SideView | None:
        """The whole queue of a side as columns in queue order (for the policies that spread a
        shortfall over every position, and for the ADL indicators), None for an empty side."""
        columns = self._columns(symbol, long, mark, exact_equity, score)
        if columns is None:
            return None
        side = columns.side
        rows, scores = self._order(side, columns.rows(), columns.scores, columns.notional, mark)
        if not len(rows):
            return None
        return SideView(list(map(side.positions.__getitem__, rows.tolist())), scores, side.q[rows], side.free[rows],
                        side.cost[rows], columns.notional[rows], columns.upnl[rows], columns.equity[rows],
                        columns.broke[rows], float(mark) * UNITS)

    def _columns(self, symbol: str, long: bool, mark: Decimal, exact_equity: Callable[[str], Decimal],
                 score: Callable[..., np.ndarray]) -> _Columns | None:
        """Every row of the side scored at ``mark``; +inf where equity <= 0 (exactly), -inf where
        no quantity is free. None for an empty side."""
        self.flush()
        side = self._sides.get((symbol, long))
        if side is None or not len(side):
            return None
        n, units_mark = len(side), float(mark) * UNITS
        tight = self._tight(side)
        equity_units = side.equity(self._marks.get(side.symbol))
        notional, upnl, _ = side.at(units_mark)
        equity = equity_units.astype(np.float64)
        if tight:  # beyond the margin the sign is certain; within it, the engine's exact equity says
            low = np.flatnonzero(equity_units <= MARGIN)
            first = low[equity_units[low] < -MARGIN].tolist()
            uncertain = low[equity_units[low] >= -MARGIN].tolist()
        else:
            first, uncertain = [], range(n)
        for row in uncertain:
            value = exact_equity(side.positions[row].account_id)
            if value > 0:
                equity[row] = float(value) * UNITS
            else:
                first.append(row)
        broke = np.zeros(n, dtype=bool)
        if first:
            equity[first] = 1.0
            broke[first] = True
        scores = score(side.long, notional, upnl, side.cost[:n], equity)
        if first:
            scores[first] = np.inf
            equity[first] = 0.0
        if side.n_blocked:  # no free quantity: last, and never selected
            scores[np.flatnonzero(side.blocked[:n])] = -np.inf
        return _Columns(side, scores, notional, upnl, equity, broke)

    @staticmethod
    def _order(side: _Side, picked: np.ndarray, scores: np.ndarray, notional: np.ndarray,
               mark: Decimal) -> tuple[np.ndarray, np.ndarray]:
        """(rows, scores) of the rows ``picked`` in queue order: score, then notional, then account
        id. Floats order first (a float notional never orders two exact notionals the wrong way
        round); runs equal in both are ordered exactly."""
        s, n = scores[picked], notional[picked]
        order = np.lexsort((-n, -s))
        rows, s, n = picked[order], s[order], n[order]
        ties = np.flatnonzero((s[1:] == s[:-1]) & (n[1:] == n[:-1])).tolist()
        if ties:
            positions = side.positions

            # |q| * mark orders as |q| * sign(mark) (marks are positive): integers, not Decimal products
            sign = (mark > 0) - (mark < 0)

            def exact(row):
                position = positions[row]
                return (-sign * abs(position.q), position.account_id)

            start = end = ties[0]
            for i in ties[1:] + [None]:
                if i is not None and i == end + 1:
                    end = i
                    continue
                rows[start:end + 2] = sorted(rows[start:end + 2].tolist(), key=exact)
                start = end = i
        return rows, s

    @staticmethod
    def _candidates(side: _Side, rows: np.ndarray, scores: np.ndarray, mark: Decimal, limit: int | None,
                    covering: Decimal | None = None) -> tuple[list[Candidate], bool]:
        """The candidates of ``rows`` in that order (at most ``limit``); with ``covering``, only up to
        the first whose free quantity, with those before it, reaches it (a queue policy takes no
        more: usually the first covers, and a candidate's exact notional and free quantity are
        ``Decimal`` work). Also whether they cover."""
        positions = side.positions
        if covering is None:
            return [Candidate(positions[row], score, positions[row].quantity.copy_abs() * mark)
                    for row, score in zip(rows[:limit].tolist(), scores[:limit].tolist())], True
        out, free, wanted = [], 0, covering.scaleb(QUANTITY_SCALE, EXACT)  # (free quantity in units)
        for row, score in zip(rows[:limit].tolist(), scores[:limit].tolist()):
            position = positions[row]
            out.append(Candidate(position, score, position.quantity.copy_abs() * mark))
            free += abs(position.q) if not position.reserved else to_units(position.free, QUANTITY_SCALE)
            if free >= wanted:
                return out, True
        return out, False

    # -- views ---------------------------------------------------------------------------------

    def __iter__(self) -> Iterator[Position]:
        self.flush()
        for side in self._sides.values():
            yield from side.positions
