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

The engine adds the key of every entity it changes to ``Engine.changed``; :func:`take_changes`
turns them into ``(key, value)`` pairs, ``value`` None for an entity that no longer exists. Applying
all pairs ever taken, in order, to an empty mapping and handing it to :func:`restore` gives an
engine equal to the original: same snapshot, same outputs for the same next records.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .wallets import Wallet

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
    out += [(WALLET, account, asset) for (account, asset), _ in engine.wallets.items()]
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


def take_changes(engine: Engine) -> list[tuple[Key, Any]]:
    """The entities changed since the last call, sorted by key, with their values now."""
    changed, engine.changed = engine.changed, set()
    return [(key, value_of(engine, key)) for key in sorted(changed)] + [
        ((SEEN, segment, n), ids) for (segment, n), ids in engine.seen.take()]


def restore(engine: Engine, entities: Mapping[Key, Any]) -> None:
    """Load ``entities`` (key -> value, none None) into a fresh ``engine``."""
    if len(engine.book) or len(engine.seen) or engine.stream_time >= 0:
        raise ValueError("restore needs a fresh engine")
    reservations, lights = [], []
    for key, value in entities.items():
        kind = key[0]
        if kind == POSITION:
            position = engine.book.open(key[2], key[1])
            position.quantity, position.cost = value
        elif kind == WALLET:
            balance, as_of, after = value
            engine.wallets.put(key[1], key[2], Wallet(balance, as_of, list(after) or None))
        elif kind == FUND:
            engine.funds.restore(key[1], value)
        elif kind == FUND_HISTORY:
            engine.funds.restore(key[1], None, value)
        elif kind == MARK:
            engine.marks[key[1]] = tuple(value)
        elif kind == RESERVATION:
            reservations.append((key, value))
        elif kind == SEEN and len(key) == 3:
            engine.seen.restore_part(key[1], key[2], value)
        elif kind == SEEN:
            engine.seen.add(key[1], value)
        elif kind == LIGHT:
            lights.append((key, value))
        elif key == STREAM_TIME:
            engine.stream_time = value
        else:
            raise ValueError(f"not a state key: {key!r}")
    for (_, order_id, account), (symbol, quantity, expires_at) in sorted(reservations):
        position = engine.book.get(account, symbol)
        if position is None:
            raise ValueError(f"reservation {order_id!r} of {account!r} refers to no position in {symbol}")
        engine.reservations.reserve(order_id, position, quantity, expires_at)
    for (_, symbol, account), light in lights:
        position = engine.book.get(account, symbol)
        if light and position is not None:
            position.light = light
        else:
            engine.indicators.unlit.add((symbol, account))
    index = engine.index
    for position in engine.book:
        index.position_changed(position)
    for (account, asset), wallet in engine.wallets.items():
        index.wallet_changed(account, asset, wallet)
    for symbol, (price, _) in engine.marks.items():
        index.mark_changed(symbol, price)
    engine.changed.clear()

