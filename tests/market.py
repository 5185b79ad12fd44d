"""A seeded, scripted market for the crash tests: balances, funds, two symbols' books built by
trades, a mark-price crash, liquidation shortfalls (some fund-covered, most ADL), fund surpluses
and ADL fills echoing some orders.

The generator runs the pure engine beside itself: it emits only records the engine accepts, and
what the engine outputs is the reference the processor must reproduce. Event times rise strictly,
so the processor's event-time merge must apply the records in exactly this order.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from decimal import Decimal as D

from adl_stream.engine import (
    BalanceUpdate,
    Engine,
    Fill,
    FundFlow,
    LiquidationShortfall,
    MarkPrice,
    Rejected,
)
from tests.scenarios import SYMBOLS

TENTH = D("0.1")
CENT = D("0.01")


@dataclass
class Market:
    records: list
    orders: list
    decisions: list
    engine: Engine


def generate(seed: int = 7, accounts: int = 120, trades: int = 1500, shortfalls: int = 60) -> Market:
    rng = random.Random(seed)
    engine = Engine(SYMBOLS)
    market = Market([], [], [], engine)
    clock = iter(range(1_000, 10**9, 10))
    names = [f"A{i:03d}" for i in range(accounts)]
    marks = {"BTCUSDT": D(100), "ETHUSDT": D(50)}
    fill_ids = iter(range(10**9))

    def emit(record) -> bool:
        try:
            outcome = engine.apply(record)
        except Rejected:
            return False
        market.records.append(record)
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
            emit(Fill(f"f{next(fill_ids)}", account, symbol, side, qty, price, (qty * CENT).quantize(CENT), "TRADE", None, ts))

    for name in names:
        emit(BalanceUpdate(name, "USDT", D(rng.randint(200, 3000)), next(clock)))
    emit(FundFlow("seed-usdt", "USDT", "DEPOSIT", D(1500), next(clock)))
    emit(FundFlow("seed-alt", "USDT-ALT", "DEPOSIT", D(800), next(clock)))
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
        event = LiquidationShortfall(f"E{made:03d}", bankrupt.account_id, symbol, "LONG", qty,
                                     (marks[symbol] * D("0.97")).quantize(CENT), shortfall, next(clock))
        before = len(market.orders)
        if not emit(event):
            continue
        made += 1
        if rng.random() < 0.3:
            emit(FundFlow(f"surplus{made}", SYMBOLS[symbol].fund_id, "LIQUIDATION_SURPLUS", D(rng.randint(10, 200)), next(clock)))
        for order in market.orders[before:]:
            if rng.random() < 0.5:  # the exchange executes about half of the orders in the run
                ts = next(clock)
                for account, side in ((order.account_id, order.side), (order.bankrupt_account_id, "SELL")):
                    emit(Fill(f"f{next(fill_ids)}", account, symbol, side, order.quantity, order.price,
                              D(0), "ADL", order.order_id, ts))
    return market
