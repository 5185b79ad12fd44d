"""A hand-computed ADL scenario, shared by the engine test and the real-broker test.

Symbol BTCUSDT (fund USDT), mark 90. The opposite side of the bankrupt longs is four shorts:

| account | short | entry | upnl = q*(M-entry) | pnl_pct | notional | wallet | equity | eff lev  | score     |
|---------|-------|-------|--------------------|---------|----------|--------|--------|----------|-----------|
| S1      | 4     | 120   | 120                | 0.25    | 360      | 100    | 220    | 1.636364 | 0.409091  |
| S2      | 3     | 110   | 60                 | 0.181818| 270      | 50     | 110    | 2.454545 | 0.446281  |
| S3      | 5     | 105   | 75                 | 0.142857| 450      | 1000   | 1075   | 0.418605 | 0.059801  |
| S4      | 2     | 80    | -20                | -0.125  | 180      | 60     | 40     | 4.5      | -0.027778 |

so the queue is S2, S1, S3, S4 (S2 first: less profit but more leverage than S1).

1. E1: B (long 10 @ 100) short of 300, fund 1000 pays -> fund 700, no order.
   The liquidation engine sells 2 of B's 10 in the market (LIQUIDATION fill): B long 8.
2. E2: B, 5 left, shortfall 800 > fund 700 -> ADL: E2:1 S2 BUY 3, E2:2 S1 BUY 2 at 95.
3. E3 (before E2's ADL fills): B2 (long 12 @ 100), 12 left, shortfall 900 -> ADL on what is free:
   S2 is fully reserved, S1 has 2 free: E3:1 S1 2, E3:2 S3 5, E3:3 S4 2 at 93; 3 unfilled.
4. E2 again (a duplicate): no effect.
5. ADL fills of E2 arrive (both sides), releasing their reservations.
6. E4: B, 3 left, shortfall 100 <= fund 700 -> fund pays, fund 600.
"""

from __future__ import annotations

from decimal import Decimal as D

from adl_stream.engine import (
    AdlOrder,
    BalanceUpdate,
    Fill,
    FundFlow,
    LiquidationShortfall,
    MarkPrice,
    ShortfallDecision,
    SymbolSpec,
)

SYMBOLS = {
    "BTCUSDT": SymbolSpec("BTCUSDT", "USDT", "USDT"),
    "ETHUSDT": SymbolSpec("ETHUSDT", "USDT", "USDT-ALT"),
}


def fill(fill_id, account, side, qty, price, ts, kind="TRADE", order=None, symbol="BTCUSDT"):
    return Fill(fill_id, account, symbol, side, D(qty), D(price), D(0), kind, order, ts)


def shortfall(event_id, account, qty, bankruptcy, amount, ts, side="LONG"):
    return LiquidationShortfall(event_id, account, "BTCUSDT", side, D(qty), D(bankruptcy), D(amount), ts)


#: Records before the first shortfall: wallets, fund, positions, mark.
SETUP = [
    BalanceUpdate("S1", "USDT", D(100), 1_000),
    BalanceUpdate("S2", "USDT", D(50), 1_000),
    BalanceUpdate("S3", "USDT", D(1000), 1_000),
    BalanceUpdate("S4", "USDT", D(60), 1_000),
    FundFlow("F1", "USDT", "DEPOSIT", D(1000), 1_000),
    fill("f1", "S1", "SELL", 4, 120, 2_000),
    fill("f2", "S2", "SELL", 3, 110, 2_001),
    fill("f3", "S3", "SELL", 5, 105, 2_002),
    fill("f4", "S4", "SELL", 2, 80, 2_003),
    fill("f5", "B", "BUY", 10, 100, 2_004),
    fill("f6", "B2", "BUY", 12, 100, 2_005),
    MarkPrice("BTCUSDT", D(90), 3_000),
]
E1 = shortfall("E1", "B", 2, 95, 300, 4_000)
LIQ = fill("f7", "B", "SELL", 2, 95, 4_001, kind="LIQUIDATION")
E2 = shortfall("E2", "B", 5, 95, 800, 5_000)
E3 = shortfall("E3", "B2", 12, 93, 900, 6_000)
ADL_FILLS = [
    fill("a1", "S2", "BUY", 3, 95, 7_000, "ADL", "E2:1"),
    fill("a2", "B", "SELL", 3, 95, 7_000, "ADL", "E2:1"),
    fill("a3", "S1", "BUY", 2, 95, 7_001, "ADL", "E2:2"),
    fill("a4", "B", "SELL", 2, 95, 7_001, "ADL", "E2:2"),
]
E4 = shortfall("E4", "B", 3, 95, 100, 8_000)

#: The input stream, in order.
STREAM = [*SETUP, E1, LIQ, E2, E3, E2, *ADL_FILLS, E4]


#: Expected orders: (order_id, account, side, quantity, price, rank, approximate score).
EXPECTED_ORDERS = [
    ("E2:1", "S2", "BUY", D(3), D(95), 1, 0.446281),
    ("E2:2", "S1", "BUY", D(2), D(95), 2, 0.409091),
    ("E3:1", "S1", "BUY", D(2), D(93), 1, 0.409091),
    ("E3:2", "S3", "BUY", D(5), D(93), 2, 0.059801),
    ("E3:3", "S4", "BUY", D(2), D(93), 3, -0.027778),
]

#: Expected decisions: event_id -> (fund_covered, adl_quantity, unfilled, orders, fund_balance_after).
EXPECTED_DECISIONS = {
    "E1": (D(300), D(0), D(0), 0, D(700)),
    "E2": (D(0), D(5), D(0), 2, D(700)),
    "E3": (D(0), D(9), D(3), 3, D(700)),
    "E4": (D(100), D(0), D(0), 0, D(600)),
}


def decision_summary(decision: ShortfallDecision):
    return (decision.fund_covered, decision.adl_quantity, decision.unfilled_quantity,
            decision.orders, decision.fund_balance_after)


def order_summary(order: AdlOrder):
    return (order.order_id, order.account_id, order.side, order.quantity, order.price, order.rank)
