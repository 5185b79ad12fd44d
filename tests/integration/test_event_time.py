"""The event-time guard through the broker: a record with a clock a year ahead is dead-lettered as
``future_event`` (the first record against its Kafka timestamp, later ones against stream time),
and the stream is decided as if it had not been there: no reservation expires, nothing is late."""

from decimal import Decimal as D

import pytest

from adl_stream.engine import ShortfallDecision
from adl_stream.wire import Codec
from tests import scenarios as sc
from tests.conftest import Feed, metric, read_topic
from tests.integration.test_processor import run_scenario

pytestmark = pytest.mark.integration
codec = Codec()
YEAR_MS = 365 * 24 * 3_600_000


def test_records_with_a_clock_a_year_ahead_are_dead_lettered_and_change_nothing(settings, start_processor):
    running = start_processor(settings)
    feed, t = Feed(settings), settings.topics
    # The very first record: no stream time yet, so its Kafka timestamp is the reference.
    first = codec.encode(sc.MarkPrice("BTCUSDT", D(1), 500 + YEAR_MS))
    feed.producer.produce(t.mark_prices, first, "BTCUSDT", timestamp=500)
    feed.producer.flush(10)
    running.wait_handled(1)
    # Later: a fill and a shortfall a year ahead while E2 and E3 hold reservations (Kafka timestamp
    # = event time, as the publisher stamps them: only stream time can tell).
    ahead = [sc.fill("far", "S3", "BUY", 1, 90, 6_500 + YEAR_MS), sc.shortfall("Efar", "B", 1, 95, 1, 6_500 + YEAR_MS)]
    stages = [sc.SETUP, [sc.E1], [sc.LIQ], [sc.E2], [sc.E3, sc.E2], ahead, sc.ADL_FILLS, [sc.E4]]
    run_scenario(feed, running, stages)
    running.wait_handled(1 + sum(map(len, stages)))

    dead = read_topic(settings, t.adl_dlq, 3)
    reasons = sorted((dict(m.headers())["source.topic"].decode(), dict(m.headers())["error.reason"].decode())
                     for m in dead)
    assert reasons == sorted([(t.mark_prices, "future_event"), (t.fills, "future_event"),
                              (t.liquidation_shortfalls, "future_event")])
    assert first in {m.value() for m in dead}
    decisions = [codec.decode(m.value(), ShortfallDecision) for m in read_topic(settings, t.adl_decisions, 4)]
    assert {d.event_id: sc.decision_summary(d) for d in decisions} == sc.EXPECTED_DECISIONS  # E4 not late
    p = running.processor
    assert metric(p, "adl_dead_letters_total", reason="future_event") == 3
    assert metric(p, "adl_dead_letters_total", reason="late_event") == 0
    assert metric(p, "adl_reservations_expired_total") == 0
    assert metric(p, "adl_reservations_open") == 6  # E3's orders still hold their quantity
    assert p.domain("USDT").engine.stream_time == sc.E4.ts
    assert running.close() == 0
