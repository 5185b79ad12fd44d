"""The hand-computed scenario of tests/scenarios.py, order by order, on the engine alone."""

from decimal import Decimal as D

import pytest

from adl_stream.engine import Engine
from tests import scenarios as sc


@pytest.fixture
def run():
    engine = Engine(sc.SYMBOLS)
    orders, decisions, duplicates = [], {}, 0
    for record in sc.STREAM:
        outcome = engine.apply(record)
        duplicates += outcome.duplicate
        orders += outcome.orders
        if outcome.decision:
            decisions[outcome.decision.event_id] = outcome.decision
    return engine, orders, decisions, duplicates


def test_orders_match_the_hand_computed_queue(run):
    _, orders, _, _ = run
    assert [sc.order_summary(o) for o in orders] == [e[:6] for e in sc.EXPECTED_ORDERS]
    for order, expected in zip(orders, sc.EXPECTED_ORDERS, strict=True):
        assert order.score == pytest.approx(expected[6], abs=1e-6)
        assert order.bankrupt_account_id == ("B2" if order.shortfall_event_id == "E3" else "B")


def test_decisions_match(run):
    _, _, decisions, duplicates = run
    assert {k: sc.decision_summary(d) for k, d in decisions.items()} == sc.EXPECTED_DECISIONS
    assert duplicates == 1  # E2 sent twice
    assert decisions["E3"].order_ids == ("E3:1", "E3:2", "E3:3")
    assert decisions["E2"].policy == "fund-exhausted/pnl-leverage"


def test_final_state(run):
    engine, _, _, _ = run
    state = engine.snapshot()
    assert state["funds"] == {"USDT": D(600)}
    # E2's fills changed S2, S1 and B; E3's orders are still reserved (no fills yet).
    assert "BTCUSDT/S2" not in state["positions"]  # closed flat by E2:1, nothing reserved: forgotten
    s1 = engine.book.get("S1", "BTCUSDT")
    assert (s1.quantity, s1.reserved) == (D(-2), D(2))
    b = engine.book.get("B", "BTCUSDT")
    assert (b.quantity, b.reserved) == (D(3), D(0))
    assert sorted((r[0], r[1], r[2]) for r in state["reservations"]) == [
        ("E3:1", "B2", D(2)), ("E3:1", "S1", D(2)),
        ("E3:2", "B2", D(5)), ("E3:2", "S3", D(5)),
        ("E3:3", "B2", D(2)), ("E3:3", "S4", D(2)),
    ]
    # S2 bought back its 3 short at 95 against an entry of 110: realized 45 on a wallet of 50.
    assert engine.wallets.balance("S2", "USDT") == D(95)


def test_reservations_expire_by_event_time():
    engine = Engine(sc.SYMBOLS, reservation_timeout_ms=1_000)
    for record in [*sc.SETUP, sc.E1, sc.LIQ, sc.E2]:
        engine.apply(record)
    assert engine.book.get("S2", "BTCUSDT").reserved == D(3)
    outcome = engine.apply(sc.MarkPrice("BTCUSDT", D(91), sc.E2.ts + 1_000))
    assert sorted((r.order_id, r.position.account_id) for r in outcome.expired) == [
        ("E2:1", "B"), ("E2:1", "S2"), ("E2:2", "B"), ("E2:2", "S1"),
    ]
    assert engine.book.get("S2", "BTCUSDT").reserved == 0
    assert len(engine.reservations) == 0
