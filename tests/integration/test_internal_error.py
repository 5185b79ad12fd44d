"""``on_internal_error``: a record on which the processor raises an unexpected exception either stops
it, naming the record's topic/partition/offset with a runbook line (``stop``), or goes to the
dead-letter topic with the exception while processing goes on (``dead-letter``)."""

from dataclasses import replace

import pytest
import structlog

from adl_stream.engine import ShortfallDecision
from adl_stream.runtime.processor import EXIT_FATAL
from adl_stream.wire import Codec
from tests import scenarios as sc
from tests.conftest import Feed, metric, read_topic, wait_for

pytestmark = pytest.mark.integration
codec = Codec()


def break_on_e3(processor) -> list:
    """A bug: applying E3 raises. Returns the records it failed on."""
    apply, failed = processor.apply_record, []

    def apply_broken_on_e3(engine, record, received_ts=None):
        if getattr(record, "event_id", None) == "E3":
            failed.append(record)
            raise RuntimeError("a bug in the engine")
        return apply(engine, record, received_ts)

    processor.apply_record = apply_broken_on_e3
    return failed


def feed_until_e3(settings, running) -> tuple[Feed, tuple[int, int]]:
    feed = Feed(settings)
    handled = 0
    for stage in [sc.SETUP, [sc.E1], [sc.LIQ], [sc.E2]]:
        feed.send(*stage)
        handled += len(stage)
        running.wait_handled(handled)
    return feed, feed.send_raw(settings.topics.liquidation_shortfalls, "BTCUSDT", codec.encode(sc.E3))


def test_stop_names_the_record_and_the_runbook(settings, start_processor):
    running = start_processor(settings)
    failed = break_on_e3(running.processor)
    with structlog.testing.capture_logs() as logs:
        _, (partition, offset) = feed_until_e3(settings, running)
        running.thread.join(30)
    assert failed and running.exit_code == EXIT_FATAL
    (line,) = [entry for entry in logs if entry["event"] == "internal_error"]
    assert (line["topic"], line["partition"], line["offset"]) == (settings.topics.liquidation_shortfalls, partition, offset)
    assert line["error"] == "RuntimeError: a bug in the engine"
    assert 'on_internal_error = "dead-letter"' in line["runbook"] and "--offset O" in line["runbook"]


def test_dead_letter_sends_the_record_on_with_its_exception_and_goes_on(settings, start_processor):
    running = start_processor(replace(settings, on_internal_error="dead-letter"))
    failed = break_on_e3(running.processor)
    feed, (partition, offset) = feed_until_e3(settings, running)
    feed.send(*sc.ADL_FILLS, sc.E4)  # after the failing record, processing goes on
    running.wait_handled(len(sc.SETUP) + 4 + len(sc.ADL_FILLS) + 1)
    assert len(failed) == 1  # not retried
    (dead,) = read_topic(settings, settings.topics.adl_dlq, 1)
    headers = {k: v.decode() for k, v in dead.headers()}
    assert dead.value() == codec.encode(sc.E3)
    assert headers["error.reason"] == "internal_error"
    assert headers["error"] == "internal_error: RuntimeError: a bug in the engine"
    assert (headers["source.topic"], int(headers["source.partition"]), int(headers["source.offset"])) == (
        settings.topics.liquidation_shortfalls, partition, offset)
    decisions = [codec.decode(m.value(), ShortfallDecision) for m in read_topic(settings, settings.topics.adl_decisions, 3)]
    assert [d.event_id for d in decisions] == ["E1", "E2", "E4"]
    assert metric(running.processor, "adl_dead_letters_total", reason="internal_error",
                  topic=settings.topics.liquidation_shortfalls) == 1
    wait_for(lambda: metric(running.processor, "adl_transactions_total", result="committed") >= 1, 5, "a commit")
    assert running.close() == 0
