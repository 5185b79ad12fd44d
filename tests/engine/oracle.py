"""The plain reference of the ranking index: every score computed position by position in Python,
from the exact state, and the whole side sorted. Tests hold the index to it, order by order."""

from __future__ import annotations

from decimal import Decimal

from adl_stream.engine import Engine
from adl_stream.engine.index import LIMIT, MARGIN, UNITS, Candidate, term_units


def _abs(value: Decimal) -> float:
    return float(value.copy_abs())


def equity_units(engine: Engine, account: str, asset: str) -> int:
    """The account's equity in index units: its rounded wallet plus one rounded term per position."""
    units = round(float(engine.wallets.balance(account, asset)) * UNITS)
    for position in engine.book.of_account(account):
        mark = engine.mark(position.symbol)
        if position.quantity != 0 and mark is not None and engine.symbols[position.symbol].settle_asset == asset:
            units += term_units(position.quantity > 0, _abs(position.quantity), _abs(position.cost), float(mark))
    return units


def tight(engine: Engine, asset: str, skip: tuple[str, bool]) -> bool:
    """No wallet and no side (but ``skip``) of the asset beyond the index's error bound."""
    if any(abs(float(w.balance)) >= LIMIT for (_, a), w in engine.wallets.items() if a == asset):
        return False
    sides: dict[tuple[str, bool], list] = {}
    for p in engine.book:
        if p.quantity != 0 and engine.symbols[p.symbol].settle_asset == asset:
            sides.setdefault((p.symbol, p.quantity > 0), []).append(p)
    for (symbol, long), positions in sides.items():
        if (symbol, long) == skip:
            continue
        mark = engine.mark(symbol)
        gross = max(_abs(p.cost) for p in positions)
        if mark is not None:
            gross += max(_abs(p.quantity) for p in positions) * float(mark)
        if gross >= LIMIT:
            return False
    return True


def pnl_leverage_score(long: bool, notional: float, upnl: float, cost: float, equity: float) -> float:
    pnl_pct = upnl / cost
    leverage = notional / equity
    return pnl_pct * leverage if upnl > 0 else pnl_pct / leverage


def queue(engine: Engine, symbol: str, long: bool, mark: Decimal, score=pnl_leverage_score) -> list[Candidate]:
    """The whole queue of the ``long`` (or short) side of ``symbol`` at ``mark``, first first."""
    asset = engine.symbols[symbol].settle_asset
    is_tight = tight(engine, asset, (symbol, not long))
    ranked = []
    for p in engine.book.in_symbol(symbol):
        if p.quantity == 0 or (p.quantity > 0) != long or p.free <= 0:
            continue
        q, cost = _abs(p.quantity), _abs(p.cost)
        notional = q * float(mark)
        upnl = notional - cost if long else cost - notional
        units = equity_units(engine, p.account_id, asset)
        if is_tight and units > MARGIN:
            value = score(long, notional, upnl, cost, units / UNITS)
        elif is_tight and units < -MARGIN:
            value = float("inf")
        else:
            exact = engine.equity(p.account_id, asset)
            value = score(long, notional, upnl, cost, float(exact)) if exact > 0 else float("inf")
        ranked.append(Candidate(p, value, p.quantity.copy_abs() * mark))
    ranked.sort(key=lambda c: (-c.score, -c.notional, c.position.account_id))
    return ranked


def install(engine: Engine) -> Engine:
    """Make ``engine`` rank with the reference instead of its index (same signature)."""

    def ranked(symbol, long, mark, exact_equity, score, *, covering=None, limit=None):
        return queue(engine, symbol, long, mark)[:limit]

    engine.index.ranked = ranked
    return engine
