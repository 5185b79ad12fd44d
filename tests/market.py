"""A seeded, scripted market for the crash tests: balances, funds, two symbols' books built by
trades, a mark-price crash, liquidation shortfalls (some fund-covered, most ADL), fund surpluses
and ADL fills echoing some orders; under any allocation policy, with ADL indicator lights if asked.

The generator runs the pure engine beside itself: it emits only records the engine accepts, and
what the engine outputs is the reference the processor must reproduce. Event times rise strictly,
so the processor's event-time merge must apply the records in exactly this order.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from decimal import Decimal as D

from adl_stream.engine import (
    AllocationPolicy,
    BalanceUpdate,
    Engine,
    Fill,
    FundFlow,
    LiquidationShortfall,
    MarkPrice,
    Rejected,
    SymbolSpec,
)

TENTH = D("0.1")
CENT = D("0.01")


@dataclass
class Market:
    records: list
    orders: list
    decisions: list
    engine: Engine
    indicators: list = field(default_factory=list)


def symbols_of(asset: str) -> dict[str, SymbolSpec]:
    """BTC<asset> in fund <asset>, ETH<asset> in fund <asset>-ALT (for USDT: tests.scenarios.SYMBOLS)."""
    return {f"BTC{asset}": SymbolSpec(f"BTC{asset}", asset, asset),
            f"ETH{asset}": SymbolSpec(f"ETH{asset}", asset, f"{asset}-ALT")}


def generate(seed: int = 7, accounts: int = 120, trades: int = 1500, shortfalls: int = 60, asset: str = "USDT",
             start: int = 1_000, ranking: AllocationPolicy | None = None, indicator_interval_ms: int = 0,
             prefix: str | None = None) -> Market:
    """The market of ``asset``'s two symbols; ids start with ``prefix`` (default: none for USDT,
    ``<asset>-`` for another asset), and event times are ``start``, ``start + 10``, ...
    ``ranking`` and ``indicator_interval_ms`` are the engine's (the processor's settings must match)."""
    symbols = symbols_of(asset)
    rng = random.Random(seed)
    engine = Engine(symbols, ranking=ranking, indicator_interval_ms=indicator_interval_ms)
    market = Market([], [], [], engine)
    clock = iter(range(start, 10**9, 10))
    if prefix is None:
        prefix = "" if asset == "USDT" else f"{asset}-"
    names = [f"{prefix}A{i:03d}" for i in range(accounts)]
    marks = {f"BTC{asset}": D(100), f"ETH{asset}": D(50)}
    fill_ids = iter(f"{prefix}f{i}" for i in range(10**9))

    def emit(record) -> bool:
        try:
            outcome = engine.apply(record)
        except Rejected:
            return False
        market.records.append(record)
        market.indicators += outcome.indicators
        market.orders += outcome.orders
        if outcome.decision:
            market.decisions.append(outcome.decision)
        return True

    def trade(symbol: str) -> None:
        buyer, seller = rng.sample(names, 2)
        qty = D(rng.randint(1, 50)) * TENTH
        price = (marks[symbol] * D(rng.randint(990, 1010)) / 1000).quantize(CENT)
        ts = next(clock)
        for account, side in ((buyer, "BUY"), (seller, "SELL")):
            emit(Fill(next(fill_ids), account, symbol, side, qty, price, (qty * CENT).quantize(CENT), "TRADE", None, ts))

    for name in names:
        emit(BalanceUpdate(name, asset, D(rng.randint(200, 3000)), next(clock)))
    emit(FundFlow(f"{prefix}seed-{asset.lower()}", asset, "DEPOSIT", D(1500), next(clock)))
    emit(FundFlow(f"{prefix}seed-alt", f"{asset}-ALT", "DEPOSIT", D(800), next(clock)))
    for symbol, mark in marks.items():
        emit(MarkPrice(symbol, mark, next(clock)))
    for _ in range(trades // 2):  # books before the crash
        trade(rng.choice(list(marks)))

    made, step = 0, 0
    while made < shortfalls:  # the crash: marks fall, longs go bankrupt, trading goes on
        step += 1
        symbol = rng.choice(list(marks))
        if step % 3 == 0:
            marks[symbol] = (marks[symbol] * D("0.993")).quantize(CENT)
            emit(MarkPrice(symbol, marks[symbol], next(clock)))
        trade(symbol)
        if step % 4:
            continue
        longs = sorted((p for p in engine.book.in_symbol(symbol) if p.quantity > 0 and p.free > 0),
                       key=lambda p: p.account_id)
        if not longs:
            continue
        bankrupt = rng.choice(longs)
        qty = max(TENTH, (bankrupt.free * D(rng.randint(20, 100)) / 100).quantize(TENTH))
        qty = min(qty, bankrupt.free)
        shortfall = D(rng.randint(20, 400))
        event = LiquidationShortfall(f"{prefix}E{made:03d}", bankrupt.account_id, symbol, "LONG", qty,
                                     (marks[symbol] * D("0.97")).quantize(CENT), shortfall, next(clock))
        before = len(market.orders)
        if not emit(event):
            continue
        made += 1
        if rng.random() < 0.3:
            emit(FundFlow(f"{prefix}surplus{made}", symbols[symbol].fund_id, "LIQUIDATION_SURPLUS", D(rng.randint(10, 200)), next(clock)))
        for order in market.orders[before:]:
            if rng.random() < 0.5:  # the exchange executes about half of the orders in the run
                ts = next(clock)
                for account, side in ((order.account_id, order.side), (order.bankrupt_account_id, "SELL")):
                    emit(Fill(next(fill_ids), account, symbol, side, order.quantity, order.price,
                              D(0), "ADL", order.order_id, ts))
    return market
