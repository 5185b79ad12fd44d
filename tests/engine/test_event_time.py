"""The event-time guard (SPEC §4, README "Event time: how far ahead, how far behind"): a record too far
ahead is refused as ``future_event`` and changes nothing; one too far behind as ``late_event``."""

from __future__ import annotations

import copy
from decimal import Decimal as D

import pytest
from hypothesis import given, settings, strategies as st

from adl_stream.engine import Engine, Rejected
from tests import scenarios as sc
from tests.market import generate

YEAR_MS = 365 * 24 * 3_600_000
SKEW = 60_000


def engine(**options) -> Engine:
    return Engine(sc.SYMBOLS, max_event_skew_ms=SKEW, **options)


def outputs(outcome):
    return (outcome.orders, outcome.decision, [r.order_id for r in outcome.expired], outcome.indicators,
            outcome.duplicate, outcome.stale)


def test_a_record_a_year_ahead_is_refused_and_moves_nothing():
    e = engine()
    for record in [*sc.SETUP, sc.E1, sc.LIQ, sc.E2, sc.E3]:  # E2 and E3 hold reservations
        e.apply(record)
    before, changed = e.snapshot(), list(e.changed)
    assert before["reservations"]
    future = [sc.fill("far", "S1", "BUY", 1, 90, 8_000 + YEAR_MS),
              sc.MarkPrice("BTCUSDT", D(91), 8_000 + YEAR_MS),
              sc.BalanceUpdate("S1", "USDT", D(1), 8_000 + YEAR_MS),
              sc.FundFlow("Ffar", "USDT", "DEPOSIT", D(1), 8_000 + YEAR_MS),
              sc.shortfall("Efar", "B", 1, 95, 1, 8_000 + YEAR_MS)]
    for record in future:
        with pytest.raises(Rejected, match="future_event") as refused:
            e.apply(record)
        assert refused.value.outcome is None  # nothing expired, no lights: stream time did not move
    assert e.snapshot() == before
    assert e.stream_time == 6_000
    assert list(e.changed) == changed  # no entity to write to the changelog (nor a new order)
    assert "far" not in e.seen and "Efar" not in e.seen
    for record in [*sc.ADL_FILLS, sc.E4]:  # the stream goes on as if the bad records were not there
        e.apply(record)
    reference = Engine(sc.SYMBOLS)
    decisions = [reference.apply(r).decision for r in sc.STREAM]
    assert e.snapshot() == reference.snapshot()
    assert decisions[-1] is not None


def test_up_to_the_skew_ahead_is_accepted():
    e = engine()
    e.apply(sc.MarkPrice("BTCUSDT", D(90), 1_000))
    e.apply(sc.MarkPrice("BTCUSDT", D(91), 1_000 + SKEW))  # exactly the skew: accepted
    with pytest.raises(Rejected, match="future_event"):
        e.apply(sc.MarkPrice("BTCUSDT", D(92), 1_000 + 2 * SKEW + 1))
    assert e.stream_time == 1_000 + SKEW


def test_the_first_records_are_held_to_the_time_the_bus_received_them():
    e = engine()
    with pytest.raises(Rejected, match="future_event.*received"):
        e.apply(sc.MarkPrice("BTCUSDT", D(90), 5_000 + YEAR_MS), received_ts=5_000)
    assert e.stream_time == -1
    e.apply(sc.MarkPrice("BTCUSDT", D(90), 5_000 + SKEW), received_ts=5_000)
    assert e.stream_time == 5_000 + SKEW
    first = Engine(sc.SYMBOLS, max_event_skew_ms=SKEW)  # no stream time, no bus time: nothing to compare
    first.apply(sc.MarkPrice("BTCUSDT", D(90), YEAR_MS))
    assert first.stream_time == YEAR_MS


def test_a_later_broker_time_lets_stream_time_catch_up_after_a_pause():
    e = engine()
    e.apply(sc.MarkPrice("BTCUSDT", D(90), 1_000))
    later = 1_000 + 10 * SKEW  # the exchange paused ten minutes
    with pytest.raises(Rejected, match="future_event"):
        e.apply(sc.MarkPrice("BTCUSDT", D(90), later))
    e.apply(sc.MarkPrice("BTCUSDT", D(90), later), received_ts=later - 5)  # LogAppendTime: the broker's clock
    assert e.stream_time == later


def test_late_event_has_its_own_bound_within_the_dedup_window():
    e = Engine(sc.SYMBOLS, dedup_window_ms=10_000, max_lateness_ms=1_000)
    e.apply(sc.fill("a", "A", "BUY", 1, 100, 10_000))
    e.apply(sc.fill("b", "A", "BUY", 1, 100, 9_000))  # exactly the bound behind
    with pytest.raises(Rejected, match="late_event.*max_event_lateness_ms"):
        e.apply(sc.fill("c", "A", "BUY", 1, 100, 8_999))
    assert e.apply(sc.fill("a", "A", "BUY", 1, 100, 10_000)).duplicate
    with pytest.raises(ValueError, match="de-duplication window"):
        Engine(sc.SYMBOLS, dedup_window_ms=1_000, max_lateness_ms=1_001)


MARKET = generate(seed=3, accounts=30, trades=150, shortfalls=8)


def _future(kind: int, ts: int):
    return [sc.fill("bad-fill", "A000", "BUY", 1, 100, ts),
            sc.MarkPrice("BTCUSDT", D(100), ts),
            sc.BalanceUpdate("A001", "USDT", D(5), ts),
            sc.FundFlow("bad-flow", "USDT", "DEPOSIT", D(1), ts),
            sc.shortfall("bad-event", "A002", 1, 100, 1, ts)][kind]


@settings(max_examples=25, deadline=None)
@given(at=st.integers(1, len(MARKET.records) - 1), kind=st.integers(0, 4),
       ahead=st.integers(SKEW + 1, 10 * YEAR_MS))
def test_one_record_ahead_anywhere_changes_no_later_decision(at, kind, ahead):
    records = MARKET.records
    clean = Engine(MARKET.engine.symbols, max_event_skew_ms=SKEW)
    expected = [outputs(clean.apply(r)) for r in records]
    guarded = Engine(MARKET.engine.symbols, max_event_skew_ms=SKEW)
    got = [outputs(guarded.apply(r)) for r in records[:at]]
    bad = copy.copy(_future(kind, max(r.ts for r in records[:at]) + ahead))
    with pytest.raises(Rejected, match="future_event"):
        guarded.apply(bad)
    got += [outputs(guarded.apply(r)) for r in records[at:]]
    assert got == expected
    assert guarded.snapshot() == clean.snapshot()
