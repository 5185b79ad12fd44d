"""``adl-stream replay``: decide again from offsets or a timestamp, the same decisions as the original."""

import json
import subprocess
import sys
from dataclasses import asdict, replace

import pytest
import structlog

from adl_stream.engine import AdlOrder, ShortfallDecision
from adl_stream.readable import plain
from adl_stream.runtime import replay
from adl_stream.runtime.kafka import create_missing_topics
from adl_stream.runtime.processor import Processor
from adl_stream.wire import Codec
from tests.conftest import Feed, read_topic, write_config
from tests.integration.test_processor import run_scenario
from tests.market import generate

pytestmark = pytest.mark.integration
CODEC = Codec()


def _plain(record) -> dict:
    """The record as a dry run's JSON line carries it: decimals as exact strings without trailing
    zeros, tuples as lists."""
    return plain(asdict(record))


@pytest.fixture
def original(settings, start_processor):
    running = start_processor(settings)
    run_scenario(Feed(settings), running)
    assert running.close() == 0
    decisions = {d.event_id: d for d in (CODEC.decode(m.value(), ShortfallDecision)
                                         for m in read_topic(settings, settings.topics.adl_decisions, 4))}
    orders = [CODEC.decode(m.value(), AdlOrder) for m in read_topic(settings, settings.topics.adl_orders, 5)]
    return decisions, orders


def test_dry_run_from_offsets_prints_the_original_decisions_after_them(settings, original, tmp_path):
    decisions, orders = original
    config = write_config(settings, tmp_path / "adl.toml")
    # Shortfalls partition of BTCUSDT: E1, E2, E3, E2 (duplicate), E4 at offsets 0..4.
    partition = next(m.partition() for m in read_topic(settings, settings.topics.liquidation_shortfalls, 5))
    result = subprocess.run(
        [sys.executable, "-m", "adl_stream.cli", "replay", "--config", config, "--dry-run", "--metrics-port", "0",
         "--from-offsets", f"{settings.topics.liquidation_shortfalls}:{partition}:2", "--log-format", "json"],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    replayed_decisions = [line for line in lines if line["record"] == "ShortfallDecision"]
    replayed_orders = [line for line in lines if line["record"] == "AdlOrder"]
    strip = lambda line: {k: v for k, v in line.items() if k not in ("topic", "record")}  # noqa: E731
    assert [strip(d) for d in replayed_decisions] == [_plain(decisions["E3"]), _plain(decisions["E4"])]
    assert [strip(o) for o in replayed_orders] == [_plain(o) for o in orders if o.shortfall_event_id == "E3"]
    assert '"event": "caught_up"' in result.stderr


def test_replay_from_a_timestamp_into_new_topics_reproduces_the_decisions_after_it(settings, original, tmp_path):
    decisions, _ = original
    config = write_config(settings, tmp_path / "adl.toml")
    result = subprocess.run(
        [sys.executable, "-m", "adl_stream.cli", "replay", "--config", config, "--output-suffix", "audit",
         "--metrics-port", "0", "--from-timestamp", "6000", "--log-format", "json"],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    audit = replace(settings.topics, adl_decisions=settings.topics.adl_decisions + ".audit")
    replayed = {}
    for message in read_topic(replace(settings, topics=audit), audit.adl_decisions, 2):
        decision = CODEC.decode(message.value(), ShortfallDecision)
        replayed[decision.event_id] = message.value()
    # Shortfalls at or after 6 s are E3 and E4; each replayed decision is the original, byte for byte.
    # (Apache Kafka starts at E3; Tansu's offsets_for_times answers 0, so it replays all of them.)
    assert {"E3", "E4"} <= set(replayed)
    for event_id, value in replayed.items():
        assert value == CODEC.encode(decisions[event_id])


def live_outputs(settings, decisions: int) -> tuple[dict, dict]:
    """Decisions by event id and orders by order id on the output topics (read_committed, once
    ``decisions`` decisions are there), as a dry run prints them; an id is never there twice with
    two contents."""
    out = []
    for topic, cls, id_field, expect in ((settings.topics.adl_decisions, ShortfallDecision, "event_id", decisions),
                                         (settings.topics.adl_orders, AdlOrder, "order_id", 1)):
        by_id = {}
        for message in read_topic(settings, topic, expect, timeout=60, settle=1):  # (a loaded CI machine)
            record = _plain(CODEC.decode(message.value(), cls))
            assert by_id.setdefault(record[id_field], record) == record, f"{record[id_field]} with two contents"
        out.append(by_id)
    return out[0], out[1]


def dry_run(config: str, *flags: str) -> tuple[dict, dict, str]:
    """Decisions by event id and orders by order id of a whole-input dry-run replay, and its log."""
    result = subprocess.run(
        [sys.executable, "-m", "adl_stream.cli", "replay", "--config", config, "--dry-run", "--metrics-port", "0",
         "--from-timestamp", "0", "--log-format", "json", *flags], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    strip = lambda line: {k: v for k, v in line.items() if k not in ("topic", "record")}  # noqa: E731
    return ({line["event_id"]: strip(line) for line in lines if line.get("record") == "ShortfallDecision"},
            {line["order_id"]: strip(line) for line in lines if line.get("record") == "AdlOrder"}, result.stderr)


def replay_in_process(settings, suffix: str) -> tuple[dict, object]:
    """A whole-input replay of the group of ``settings`` in this process, following the merge order
    it recorded, into ``<output topic>.<suffix>``: its engines by settle asset once it stopped at the
    end of the input, and the settings naming its output topics."""
    replayed = replay.replay_settings(settings, suffix)
    create_missing_topics(replayed, replayed.topics.outputs())
    with structlog.testing.capture_logs() as logs:
        processor = Processor(replayed, start_at=replay.from_timestamp(0), until_caught_up=True,
                              merge_order=replay.recorded_orders(settings))
        assert processor.run() == 0
    events = {line["event"] for line in logs}
    assert "recorded_order" in events and not events & {"recorded_order_incomplete", "recorded_order_abandoned"}
    return {domain.asset: domain.engine for domain in processor.domains(revoked=True) if domain.asset}, replayed


def test_a_replay_decides_like_the_live_run_also_where_records_arrived_late(settings, start_processor, tmp_path):
    # Two feeds with overlapping event times: the second arrives after the first was decided, and
    # its records are older than the first's later ones. Live decided the first alone; a merge of
    # everything by event time would interleave them.
    first = generate(seed=3, accounts=40, trades=400, shortfalls=20)
    second = generate(seed=4, accounts=40, trades=400, shortfalls=20, prefix="B-")
    running = start_processor(settings)
    feed = Feed(settings)
    feed.send(*first.records)
    running.wait_handled(len(first.records))
    feed.send(*second.records)
    running.wait_handled(len(first.records) + len(second.records))
    assert running.close() == 0
    live_decisions, live_orders = live_outputs(settings, 40)
    assert len(live_decisions) == 40

    config = write_config(settings, tmp_path / "adl.toml")
    decisions, orders, log = dry_run(config)
    assert '"event": "recorded_order"' in log and "recorded_order_abandoned" not in log
    assert decisions == live_decisions
    assert orders == live_orders
    # The test means something: merged by event time, the same input is decided otherwise.
    by_event_time, orders_by_event_time, log = dry_run(config, "--order", "event-time")
    assert '"event": "recorded_order"' not in log
    assert by_event_time != live_decisions and orders_by_event_time != live_orders
