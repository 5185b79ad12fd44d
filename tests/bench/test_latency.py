"""The shortfall latency benchmark's machinery (bench/latency.py) on a tiny market, on the real broker:
one sample per decided shortfall, times in order, the feed's pace. No assertion on how fast."""

import uuid
from dataclasses import replace

import pytest

from adl_stream.engine import LiquidationShortfall
from bench import latency
from bench.pipeline import settings_for

pytestmark = pytest.mark.integration


def fresh(broker, name: str):
    return replace(settings_for(broker, f"{name}{uuid.uuid4().hex[:6]}."), log_level="error")


def ordered(figures: dict) -> bool:
    return 0 <= figures["p50"] <= figures["p99"] <= figures["max"]


def test_backlog_one_sample_per_shortfall_every_record_in_one_transaction(broker):
    records = latency.market_records(60, 3_000)
    probes: list = []
    settings = fresh(broker, "lb")
    out = latency.backlog(settings, records, probes)
    (probe,) = probes
    shortfalls = {r.event_id for r in records if isinstance(r, LiquidationShortfall)}
    assert shortfalls and out["dead_letters"] == 0
    assert set(probe.decided) == shortfalls  # each decided once (a dict by event id), none left out
    assert out["shortfalls"] == len(shortfalls) == out["histogram_samples"] and out["decided_twice"] == 0
    assert all(len(t) == 3 and t[0] <= t[1] <= t[2] for t in probe.decided.values())
    assert 0 < out["p50_ms"] <= out["p99_ms"] <= out["max_ms"]
    assert ordered(out["applied_to_committed_ms"]) and ordered(out["consumed_to_applied_ms"])
    assert out["transactions"]["records"] == out["records"] == len(records)  # every record in exactly one
    assert out["transactions"]["records_max"] <= settings.batch_size
    assert out["orders"] > 0 and out["abandoned_batches"] == 0
    tenths = [v for v in out["p99_ms_by_tenth"] if v is not None]
    assert len(out["p99_ms_by_tenth"]) == 10 and tenths and max(tenths) <= out["max_ms"]


def test_paced_feed_keeps_its_rate_and_every_decision_is_of_a_shortfall_it_sent(broker):
    probes: list = []
    out = latency.paced(fresh(broker, "lp"), 60, 3_000, 1_500.0, probes=probes)
    (probe,) = probes
    assert out["records"] == 3_000
    assert abs(out["rate_sent"] - 1_500) <= 75, out  # 5 %: sent on schedule, every 2 ms
    assert out["seconds"] == pytest.approx(2.0, rel=0.05)
    assert 0 < out["shortfalls"] <= out["shortfalls_sent"] and out["shortfalls"] == out["histogram_samples"]
    assert all(len(t) == 3 and t[0] <= t[1] <= t[2] for t in probe.decided.values())
    # one clock for both processes: nothing is consumed before it was sent
    assert out["sent_to_consumed_ms"]["p50"] >= 0 and ordered(out["sent_to_consumed_ms"])
    assert out["sent_to_committed_ms"]["p50"] >= out["sent_to_consumed_ms"]["p50"]
    assert 0 < out["p50_ms"] <= out["p99_ms"] <= out["max_ms"]
