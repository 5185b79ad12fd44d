"""Hand-computed cases of every allocation policy and of the drawdown trigger (SPEC §3), shared by
the engine test and the real-broker test. Each case: settings, records in stages, the orders
expected (order_id, account, side, quantity, price, rank) and the decisions expected
(event_id -> outcome, adl_quantity, unfilled, haircut, fund_balance_after).

BTCUSDT has lots of 1, the mark is 90, every bankruptcy price 95: a short bought back at 95 pays
5 per unit over the mark, so each case's haircut is 5 x the quantity closed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal as D

from adl_stream.engine import BalanceUpdate, Fill, FundFlow, LiquidationShortfall, MarkPrice, SymbolSpec

SYMBOLS = {"BTCUSDT": SymbolSpec("BTCUSDT", "USDT", "USDT", D(1))}


def fill(fill_id, account, side, qty, price, ts):
    return Fill(fill_id, account, "BTCUSDT", side, D(qty), D(price), D(0), "TRADE", None, ts)


def shortfall(event_id, qty, amount, ts):
    return LiquidationShortfall(event_id, "B", "BTCUSDT", "LONG", D(qty), D(95), D(amount), ts)


def book(shorts, ts=1_000):
    """Wallets, then each short (account, quantity, entry) sold to the bankrupt long B, then mark 90."""
    records = [BalanceUpdate(a, "USDT", D(w), ts) for a, _, _, w in shorts]
    for account, quantity, entry, _ in shorts:
        records.append(fill(f"f-{account}", account, "SELL", quantity, entry, ts + 1))
        records.append(fill(f"b-{account}", "B", "BUY", quantity, entry, ts + 1))
    return records + [MarkPrice("BTCUSDT", D(90), ts + 2)]


@dataclass
class Case:
    settings: dict
    stages: list[list]
    orders: list[tuple]
    decisions: dict = field(default_factory=dict)


CASES = {
    # Free 5, 3, 2 (total 10), quantity 4: shares 2.0, 1.2, 0.8 -> 2, 1, 0 and one lot left over,
    # which goes to the largest remainder (S3's 0.8). Queue (pnl_pct 0.1 each; leverage
    # 450/1050, 270/130, 180/70): S3, S2, S1 -> ranks 1, 2, 3.
    "pro-rata": Case(
        {"ranking_policy": "pro-rata"},
        [book([("S1", 5, 100, 1000), ("S2", 3, 100, 100), ("S3", 2, 100, 50)]), [shortfall("E1", 4, 10, 2_000)]],
        [("E1:1", "S3", "BUY", D(1), D(95), 1), ("E1:2", "S2", "BUY", D(1), D(95), 2),
         ("E1:3", "S1", "BUY", D(2), D(95), 3)],
        {"E1": ("ADL", D(4), D(0), D(20), D(0))},
    ),
    # haircut_cap 0.25: a position may pay at most 0.25 x its upnl, 5 per unit -> upnl / 20 units.
    # S1 (1 @ 130, upnl 40): free 1 binds (cap 2); S2 (4 @ 100, upnl 40): cap 2; S3 (4 @ 95,
    # upnl 20): cap 1. Quantity 3 < 4: water-fill over upnl 40, 40, 20: S1 reaches its cap 1 at
    # level 1/40, the other 2 spread over S2, S3 at level 1/30: 1.33, 0.67 -> 1, 0 and the lot
    # left to the larger remainder, S3 (0.67; within its cap). Queue (wallets 100): S2 0.257,
    # S1 0.198, S3 0.158.
    "pnl-pro-rata": Case(
        {"ranking_policy": "pnl-pro-rata", "haircut_cap": D("0.25")},
        [book([("S1", 1, 130, 100), ("S2", 4, 100, 100), ("S3", 4, 95, 100)]), [shortfall("E1", 3, 10, 2_000)]],
        [("E1:1", "S2", "BUY", D(1), D(95), 1), ("E1:2", "S1", "BUY", D(1), D(95), 2),
         ("E1:3", "S3", "BUY", D(1), D(95), 3)],
        {"E1": ("ADL", D(3), D(0), D(15), D(0))},
    ),
    # Leverage now: S1 4 short, equity 40 + 40 = 80: 360/80 = 4.5; S3 2 short, equity 20 + 20:
    # 180/40 = 4.5; S2 equity 440: 0.82. Giving x, leverage is (q - x) 90 / (equity - 5x):
    # 3 lots as S1 2, S3 1 leave both at 180/70 = 90/35 = 2.571 (S1 3 leaves S3 at 4.5; S1 1,
    # S3 2 leaves S1 at 3.6): the optimum. Queue: S1 and S3 tie at 0.45, S1 first by notional.
    "min-max-leverage": Case(
        {"ranking_policy": "min-max-leverage"},
        [book([("S1", 4, 100, 40), ("S2", 4, 100, 400), ("S3", 2, 100, 20)]), [shortfall("E1", 3, 10, 2_000)]],
        [("E1:1", "S1", "BUY", D(2), D(95), 1), ("E1:2", "S3", "BUY", D(1), D(95), 2)],
        {"E1": ("ADL", D(3), D(0), D(15), D(0))},
    ),
    # S1 (1 @ 200, wallet -20: equity 90, leverage 1): pnl-leverage 0.55 x 1, mark-entry 200/90 x 1
    # = 2.22; S2 (1 @ 100, wallet 20: equity 30, leverage 3): pnl-leverage 0.1 x 3 = 0.3,
    # mark-entry 100/90 x 3 = 3.33. Hyperliquid's queue takes S2 first; pnl-leverage would take S1.
    "mark-entry-leverage": Case(
        {"ranking_policy": "mark-entry-leverage"},
        [book([("S1", 1, 200, -20), ("S2", 1, 100, 20)]), [shortfall("E1", 1, 10, 2_000)]],
        [("E1:1", "S2", "BUY", D(1), D(95), 1)],
        {"E1": ("ADL", D(1), D(0), D(5), D(0))},
    ),
    # drawdown 30 % within 1 s. Fund 1000 at t=1000 (the peak). E1 (t=2000) 200: 800 >= 700 ->
    # paid. E2 (t=2100) 150: 650 < 70 % of 1000 -> ADL. E3 (t=3100): the 1000 was held until
    # 2000, out of the window [2100, 3100]; the peak is now 800 and 650 >= 560 -> paid.
    "drawdown": Case(
        {"trigger_policy": "drawdown", "drawdown_pct": D(30), "drawdown_window_ms": 1_000},
        [[FundFlow("F1", "USDT", "DEPOSIT", D(1000), 1_000)], book([("S1", 5, 100, 1000)], ts=1_001),
         [shortfall("E1", 1, 200, 2_000)], [shortfall("E2", 1, 150, 2_100)], [shortfall("E3", 1, 150, 3_100)]],
        [("E2:1", "S1", "BUY", D(1), D(95), 1)],
        {"E1": ("FUND_COVERED", D(0), D(0), D(0), D(800)), "E2": ("ADL", D(1), D(0), D(5), D(800)),
         "E3": ("FUND_COVERED", D(0), D(0), D(0), D(650))},
    ),
}


def order_summary(order):
    return (order.order_id, order.account_id, order.side, order.quantity, order.price, order.rank)


def decision_summary(decision):
    return (decision.outcome, decision.adl_quantity, decision.unfilled_quantity, decision.haircut,
            decision.fund_balance_after)
