"""The engine's state as keyed entities: what a changelog stores and a restore rebuilds.

Every piece of state is one entity under a key (a tuple starting with its kind):

=========================== =========================================================
key                         value
=========================== =========================================================
``("p", symbol, account)``  position: ``(quantity, cost)`` (reserved is rebuilt from
                            the reservations)
``("w", account, asset)``   wallet: ``(balance, as_of, ((ts, amount), ...))``
``("f", fund_id)``          fund balance
``("h", fund_id)``          the fund's balances within the drawdown window:
                            ``((time, balance, until), ...)`` (:class:`.funds.FundLedger`)
``("m", symbol)``           mark: ``(price, ts)``
``("r", order_id, account)`` reservation: ``(symbol, quantity, expires_at)``
``("s", segment, part)``    de-duplicated input ids: the ids an event-time segment gained
                            between two takes (:mod:`.dedup`); ``("s", id)`` -> event time
                            is the earlier form, still read
``("l", symbol, account)``  the last ADL indicator light published (+ long, - short), 0 for
                            a closed position whose tombstone is still due
``("t",)``                  stream time
=========================== =========================================================

The engine adds the key of every entity it changes to ``Engine.changed`` (an insertion-ordered dict); :func:`take_changes`
turns them into ``(key, value)`` pairs, ``value`` None for an entity that no longer exists. Applying
all pairs ever taken, in order, to an empty mapping and handing it to :func:`restore` gives an
engine equal to the original: same snapshot, same outputs for the same next records.

The changelog stores the same entities *by kind* (:class:`Entities`): positions and wallets in the
book's own scaled integers, so neither writing nor restoring goes through a ``Decimal``. :func:`take`
and :func:`gather` give an :class:`Entities` of what changed or of given keys; :func:`restore` loads
an :class:`Entities` (or a mapping of keys to values, the form above) into a fresh engine in bulk.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any, NamedTuple

from .numbers import MONEY_SCALE, QUANTITY_SCALE, to_units

if TYPE_CHECKING:
    from .engine import Engine

POSITION, WALLET, FUND, FUND_HISTORY, MARK, RESERVATION, SEEN, LIGHT = "p", "w", "f", "h", "m", "r", "s", "l"
STREAM_TIME = ("t",)

Key = tuple[str, ...]


def value_of(engine: Engine, key: Key) -> Any:
    """The current value of the entity ``key``, or None when it does not exist."""
    kind = key[0]
    if kind == POSITION:
        position = engine.book.get(key[2], key[1])
        return None if position is None else (position.quantity, position.cost)
    if kind == WALLET:
        wallet = engine.wallets.get(key[1], key[2])
        return None if wallet is None else (wallet.balance, wallet.as_of, wallet.amounts_after())
    if kind == FUND:
        return engine.funds.held(key[1])
    if kind == FUND_HISTORY:
        return engine.funds.history(key[1])
    if kind == MARK:
        return engine.marks.get(key[1])
    if kind == RESERVATION:
        reservation = engine.reservations.get(key[1], key[2])
        if reservation is None:
            return None
        return (reservation.position.symbol, reservation.quantity, reservation.expires_at)
    if kind == SEEN:
        return engine.seen.part(key[1], key[2])
    if kind == LIGHT:
        position = engine.book.get(key[2], key[1])
        if position is not None and position.light:
            return position.light
        return 0 if (key[1], key[2]) in engine.indicators.unlit else None
    if key == STREAM_TIME:
        return engine.stream_time
    raise ValueError(f"not a state key: {key!r}")


def keys(engine: Engine) -> list[Key]:
    """The key of every entity ``engine`` holds (what a snapshot of it writes)."""
    out: list[Key] = [(POSITION, p.symbol, p.account_id) for p in engine.book]
    out += [(WALLET, account, asset) for account, asset in engine.wallets.keys()]
    funds = engine.funds
    out += [(FUND, fund_id) for fund_id in funds.balances()]
    out += [(FUND_HISTORY, fund_id) for fund_id in funds.histories()]
    out += [(MARK, symbol) for symbol in engine.marks]
    out += [(RESERVATION, r.order_id, r.position.account_id) for r in engine.reservations]
    out += [(SEEN, segment, n) for segment, n in engine.seen.part_keys()]
    out += [(LIGHT, p.symbol, p.account_id) for p in engine.book if p.light]
    out += [(LIGHT, symbol, account) for symbol, account in engine.indicators.unlit]
    if engine.stream_time >= 0:
        out.append(STREAM_TIME)
    return out


def count(engine: Engine) -> int:
    """``len(keys(engine))`` without listing the keys (what a snapshot's cadence weighs)."""
    funds, seen = engine.funds, engine.seen
    return (len(engine.book) + engine.wallets.count() + len(funds.balances()) + len(funds.histories())
            + len(engine.marks) + len(engine.reservations) + len(seen.part_keys())
            + sum(1 for p in engine.book if p.light) + len(engine.indicators.unlit) + (engine.stream_time >= 0))


def weight(engine: Engine) -> int:
    """What a snapshot of ``engine`` writes and a restore of it reads, in entities: :func:`count`,
    with each part of the de-duplication window weighing as many as the ids it holds (a window of
    an hour at an exchange's rate holds far more ids than the book holds positions)."""
    return count(engine) - len(engine.seen.part_keys()) + len(engine.seen)


def take_changes(engine: Engine) -> list[tuple[Key, Any]]:
    """The entities changed since the last call, sorted by key, with their values now."""
    changed, engine.changed = engine.changed, {}
    return [(key, value_of(engine, key)) for key in sorted(changed)] + [
        ((SEEN, segment, n), ids) for (segment, n), ids in engine.seen.take()]


class PositionRun(NamedTuple):
    """Positions as columns (a record's, decoded; :meth:`Entities.add_positions`): row ``i`` is
    ``(symbols[i], accounts[i]) -> (q[i], c[i])``."""

    symbols: list[str]
    accounts: list[str]
    q: list[int]
    c: list[int]


class WalletRun(NamedTuple):
    """Wallets as columns: row ``i`` is ``(accounts[i], assets[i]) -> (units[i], as_of[i],
    after.get(i, ()))`` (``after``: only the rows that hold fills after ``as_of``)."""

    accounts: list[str]
    assets: list[str]
    units: list[int]
    as_of: list[int]
    after: dict[int, tuple]


class Entities:
    """An engine's entities by kind (what changelog records hold and a restore folds, in log order).

    ``positions``: (symbol, account) -> (q, c) in units of 1e-18 / 1e-36; ``wallets``: (account,
    asset) -> (balance in units of 1e-36, as_of, ((ts, amount in units), ...)); ``funds``: fund ->
    balance; ``histories``: fund -> ((time, balance, until), ...); ``marks``: symbol -> (price, ts);
    ``reservations``: (order_id, account) -> (symbol, quantity, expires_at); ``seen``: (segment,
    part) -> ids (``ids``: id -> event time, the earlier one-id form); ``lights``: (symbol, account) -> light (0: its tombstone is due); ``stream_time``:
    None when unknown. ``gone``: the keys of entities that no longer exist (in a change set: a
    restore removes them before it takes the rest of the set).

    Positions and wallets decoded from records of format 3 are held as *runs* of columns
    (:meth:`add_positions`, :meth:`add_wallets`, and their tombstones in log order) until something
    reads ``positions`` or ``wallets``, which folds them into the dicts (later rows override
    earlier ones, as the dicts' ``update`` does); :func:`restore` loads the runs as columns without
    ever building the dicts (:meth:`position_columns`, :meth:`wallet_columns`)."""

    __slots__ = ("_positions", "_wallets", "funds", "histories", "marks", "reservations", "seen", "ids",
                 "lights", "stream_time", "gone", "_runs")

    def __init__(self) -> None:
        self._positions: dict[tuple[str, str], tuple[int, int]] = {}
        self._wallets: dict[tuple[str, str], tuple[int, int, tuple]] = {}
        self.funds: dict[str, Decimal] = {}
        self.histories: dict[str, tuple] = {}
        self.marks: dict[str, tuple[Decimal, int]] = {}
        self.reservations: dict[tuple[str, str], tuple[str, Decimal, int]] = {}
        self.seen: dict[tuple[int, int], tuple[str, ...]] = {}
        self.ids: dict[str, int] = {}
        self.lights: dict[tuple[str, str], int] = {}
        self.stream_time: int | None = None
        self.gone: list[Key] = []
        self._runs: list[PositionRun | WalletRun | Key] = []  # in log order; a Key: a tombstone

    @property
    def positions(self) -> dict[tuple[str, str], tuple[int, int]]:
        if self._runs:
            self._fold()
        return self._positions

    @property
    def wallets(self) -> dict[tuple[str, str], tuple[int, int, tuple]]:
        if self._runs:
            self._fold()
        return self._wallets

    def add_positions(self, run: PositionRun) -> None:
        """Positions of a later record, as columns (they override those held with the same keys)."""
        if run.accounts:
            self._runs.append(run)

    def add_wallets(self, run: WalletRun) -> None:
        """Wallets of a later record, as columns."""
        if run.accounts:
            self._runs.append(run)

    def _fold(self) -> None:
        """Fold the runs into the dicts, in log order."""
        runs, self._runs = self._runs, []
        positions, wallets = self._positions, self._wallets
        for run in runs:
            if type(run) is PositionRun:
                positions.update(zip(zip(run.symbols, run.accounts), zip(run.q, run.c)))
            elif type(run) is WalletRun:
                after = run.after
                amounts = [after.get(i, ()) for i in range(len(run.units))] if after else [()] * len(run.units)
                wallets.update(zip(zip(run.accounts, run.assets), zip(run.units, run.as_of, amounts)))
            elif run[0] == POSITION:
                positions.pop((run[1], run[2]), None)
            else:
                wallets.pop((run[1], run[2]), None)

    def position_columns(self) -> tuple[list[str], list[str], list[int], list[int]]:
        """(symbols, accounts, q, c) of the positions held, a row each. Keys may repeat when the
        positions are runs (a later row overrides an earlier one; the loader resolves it, see
        :meth:`.positions.PositionBook.load`); with a tombstone among the runs they are folded
        first."""
        runs = self._runs
        if self._positions or any(type(run) is tuple and run[0] == POSITION for run in runs):
            held = self.positions
            values = list(held.values())
            return ([symbol for symbol, _ in held], [account for _, account in held],
                    [q for q, _ in values], [c for _, c in values])
        symbols: list[str] = []
        accounts: list[str] = []
        q: list[int] = []
        c: list[int] = []
        for run in runs:
            if type(run) is PositionRun:
                symbols += run.symbols
                accounts += run.accounts
                q += run.q
                c += run.c
        return symbols, accounts, q, c

    def wallet_columns(self) -> WalletRun:
        """The wallets held as one run (keys may repeat, as in :meth:`position_columns`)."""
        runs = self._runs
        if self._wallets or any(type(run) is tuple and run[0] == WALLET for run in runs):
            held = self.wallets
            values = list(held.values())
            return WalletRun([account for account, _ in held], [asset for _, asset in held],
                             [units for units, _, _ in values], [as_of for _, as_of, _ in values],
                             {i: after for i, (_, _, after) in enumerate(values) if after})
        out = WalletRun([], [], [], [], {})
        for run in runs:
            if type(run) is WalletRun:
                start = len(out.units)
                out.accounts.extend(run.accounts)
                out.assets.extend(run.assets)
                out.units.extend(run.units)
                out.as_of.extend(run.as_of)
                if run.after:
                    out.after.update({start + i: after for i, after in run.after.items()})
        return out

    def _maps(self):
        return (self.positions, self.wallets, self.funds, self.histories, self.marks, self.reservations,
                self.seen, self.ids, self.lights)

    def __len__(self) -> int:
        """Entities held (tombstones not counted)."""
        return sum(map(len, self._maps())) + (self.stream_time is not None)

    def weight(self) -> int:
        """Entities and tombstones held, each part of seen ids weighing as many as it holds
        (:func:`weight`)."""
        return len(self) + len(self.gone) + sum(len(ids) - 1 for ids in self.seen.values() if ids)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Entities):
            return NotImplemented
        return all(getattr(self, name) == getattr(other, name) for name in _COMPARED)

    __hash__ = None  # type: ignore[assignment]

    def put(self, key: Key, value: Any) -> None:
        """Set the entity ``key`` to ``value`` in the form of :func:`value_of` (``Decimal``s), or
        remove it when ``value`` is None."""
        if value is None:
            self.drop(key)
            return
        kind = key[0]
        if kind == POSITION:
            self.positions[(key[1], key[2])] = (to_units(value[0], QUANTITY_SCALE), to_units(value[1], MONEY_SCALE))
        elif kind == WALLET:
            balance, as_of, after = value
            self.wallets[(key[1], key[2])] = (to_units(balance, MONEY_SCALE), as_of,
                                              tuple((ts, to_units(amount, MONEY_SCALE)) for ts, amount in after))
        elif kind == FUND:
            self.funds[key[1]] = value
        elif kind == FUND_HISTORY:
            self.histories[key[1]] = tuple(tuple(entry) for entry in value)
        elif kind == MARK:
            self.marks[key[1]] = tuple(value)
        elif kind == RESERVATION:
            self.reservations[(key[1], key[2])] = tuple(value)
        elif kind == SEEN and len(key) == 3:
            self.seen[(key[1], key[2])] = tuple(value)
        elif kind == SEEN:  # the earlier form: one id and its event time
            self.ids[key[1]] = value
        elif kind == LIGHT:
            self.lights[(key[1], key[2])] = value
        elif key == STREAM_TIME:
            self.stream_time = value
        else:
            raise ValueError(f"not a state key: {key!r}")

    def drop(self, key: Key) -> None:
        kind = key[0]
        if key == STREAM_TIME:
            self.stream_time = None
        elif kind == SEEN and len(key) == 2:
            self.ids.pop(key[1], None)
        elif kind in (POSITION, WALLET) and self._runs:  # after the runs, in log order
            self._runs.append(tuple(key))
        elif kind in _KINDS:
            self._maps()[_KINDS.index(kind)].pop(key[1] if len(key) == 2 else (key[1], key[2]), None)
        else:
            raise ValueError(f"not a state key: {key!r}")

    def update(self, changes: Entities) -> None:
        """Apply a change set: its tombstones, then its entities."""
        for key in changes.gone:
            self.drop(key)
        for mine, theirs in zip(self._maps(), changes._maps()):
            mine.update(theirs)
        if changes.stream_time is not None:
            self.stream_time = changes.stream_time

    def keys(self) -> list[Key]:
        """The key of every entity held."""
        out: list[Key] = []
        for kind, entities in zip(_KINDS, self._maps()):
            kind = SEEN if kind == "ids" else kind
            out += [(kind, *k) if isinstance(k, tuple) else (kind, k) for k in entities]
        return out + ([STREAM_TIME] if self.stream_time is not None else [])


_COMPARED = ("positions", "wallets", "funds", "histories", "marks", "reservations", "seen", "ids", "lights",
             "stream_time", "gone")
_KINDS = (POSITION, WALLET, FUND, FUND_HISTORY, MARK, RESERVATION, SEEN, "ids", LIGHT)


def gather(engine: Engine, keys: Iterable[Key], into: Entities | None = None) -> Entities:
    """The current values of ``keys`` (those gone are listed in ``gone``)."""
    out = Entities() if into is None else into
    by_account, wallet_of = engine.book.by_account, engine.wallets.exact
    positions, wallets, lights, gone = out.positions, out.wallets, out.lights, out.gone
    held_symbol, held = None, {}  # the positions of the symbol of the last position key (most are of one)
    for key in keys:
        kind = key[0]
        if kind == POSITION:
            _, symbol, account = key
            if symbol != held_symbol:
                held_symbol, held = symbol, by_account(symbol)
            position = held.get(account)
            if position is None:
                gone.append(key)
            else:
                positions[(symbol, account)] = (position.q, position.c)
        elif kind == LIGHT:  # (value_of's, without its look-ups: an indicator pass changes thousands)
            _, symbol, account = key
            if symbol != held_symbol:
                held_symbol, held = symbol, by_account(symbol)
            position = held.get(account)
            if position is not None and position.light:
                lights[(symbol, account)] = position.light
            elif (symbol, account) in engine.indicators.unlit:
                lights[(symbol, account)] = 0
            else:
                gone.append(key)
        elif kind == WALLET:
            _, account, asset = key
            wallet = wallet_of(account, asset)
            if wallet is None:
                gone.append(key)
            else:
                wallets[(account, asset)] = wallet
        else:
            value = value_of(engine, key)
            if value is None:
                out.gone.append(key)
            else:
                out.put(key, value)
    return out


def take(engine: Engine) -> Entities:
    """The entities changed since the last take (:func:`take_changes` by kind, in units), each
    kind in the order its entities first changed (``Engine.changed``: deterministic, no sort)."""
    changed, engine.changed = engine.changed, {}
    out = gather(engine, changed)
    for (segment, n), ids in engine.seen.take():
        if ids is None:
            out.gone.append((SEEN, segment, n))
        else:
            out.seen[(segment, n)] = ids
    return out


def restore(engine: Engine, entities: Entities | Mapping[Key, Any]) -> None:
    """Load ``entities`` (an :class:`Entities`, or key -> value with none None) into a fresh ``engine``."""
    if len(engine.book) or len(engine.seen) or engine.stream_time >= 0:
        raise ValueError("restore needs a fresh engine")
    if not isinstance(entities, Entities):
        mapping, entities = entities, Entities()
        for key, value in mapping.items():
            entities.put(key, value)
    book, index = engine.book, engine.index
    balances = engine.wallets.load(entities.wallet_columns())
    symbols, accounts, q, c = entities.position_columns()
    slots, accounts = index.account_slots(symbols, accounts)
    loaded, kept = book.load(symbols, accounts, q, c)
    if kept is not None:  # a key repeated: the rows that stayed (the book's)
        symbols, slots = [symbols[i] for i in kept], slots[kept]
        q, c = [q[i] for i in kept], [c[i] for i in kept]
    for fund_id, balance in entities.funds.items():
        engine.funds.restore(fund_id, balance)
    for fund_id, history in entities.histories.items():
        engine.funds.restore(fund_id, None, history)
    engine.marks.update(entities.marks)
    engine.seen.load(entities.seen)
    for id_, ts in entities.ids.items():
        engine.seen.add(id_, ts)
    if entities.stream_time is not None:
        engine.stream_time = entities.stream_time
    unlit = engine.indicators.unlit
    for (symbol, account), light in entities.lights.items():
        position = book.get(account, symbol)
        if light and position is not None:
            position.light = light
        else:
            unlit.add((symbol, account))
    index.load(loaded, symbols, slots, q, c, balances)
    for (order_id, account), (symbol, quantity, expires_at) in sorted(entities.reservations.items()):
        position = book.get(account, symbol)
        if position is None:
            raise ValueError(f"reservation {order_id!r} of {account!r} refers to no position in {symbol}")
        engine.reservations.reserve(order_id, position, quantity, expires_at)
    for symbol, (price, _) in engine.marks.items():
        index.mark_changed(symbol, price)
    engine.changed.clear()
