"""Exactly-once on the real broker: fencing, and kill -9 at random points."""

import random
import signal
import subprocess
import sys
import time
from dataclasses import replace

import pytest
import structlog
from confluent_kafka import Producer

from adl_stream.embedded import free_port
from adl_stream.engine import AdlOrder, ShortfallDecision
from adl_stream.runtime.processor import EXIT_FENCED
from adl_stream.wire import Codec
from tests import scenarios as sc
from tests.conftest import PARTITIONS, Feed, read_topic, wait_for, write_config
from tests.integration.test_cli import http
from tests.market import generate

CODEC = Codec()

pytestmark = pytest.mark.integration


def test_a_second_instance_with_the_same_transactional_id_fences_the_first(settings, start_processor):
    first = start_processor(settings)
    feed = Feed(settings)
    feed.send(*sc.SETUP)
    first.wait_handled(len(sc.SETUP))

    # The zombie's successor: same transactional id, initialised -> the broker fences the first.
    successor = Producer({"bootstrap.servers": settings.bootstrap_servers,
                          "transactional.id": settings.transactional_id})
    successor.init_transactions(10)

    with structlog.testing.capture_logs() as logs:
        feed.send(sc.E1)  # the first instance decides E1 but cannot commit it
        wait_for(lambda: not first.thread.is_alive(), 30, "fenced instance to stop")
    assert first.exit_code == EXIT_FENCED
    (fenced,) = [line for line in logs if line["event"] == "fenced"]  # says what happened, not "another runs"
    assert f"a producer with transactional id {settings.transactional_id!r}" in fenced["hint"]
    assert "started after this one" in fenced["hint"] and "initialised this transactional id after" in fenced["error"]
    decisions = read_topic(settings, settings.topics.adl_decisions, 0, timeout=2, settle=1)
    assert [Codec().decode(m.value(), ShortfallDecision).event_id for m in decisions] == []


def _outputs(settings, topic, cls, distinct: int):
    """Every copy of every output record: id -> list of raw values (read_committed)."""
    id_field = "order_id" if cls is AdlOrder else "event_id"
    copies: dict[str, list[bytes]] = {}
    for message in read_topic(settings, topic, distinct, timeout=60, identity=lambda m: m.value()):
        copies.setdefault(getattr(CODEC.decode(message.value(), cls), id_field), []).append(message.value())
    return copies


def _position(port: int) -> float:
    """Where the instance on ``port`` is in the input: the input offsets it has committed (restored,
    then each commit's), from its metrics; 0 until it serves."""
    status, body = http(port, "/metrics")
    return sum(float(line.rsplit(" ", 1)[1]) for line in body.splitlines()
               if line.startswith("adl_committed_input_offset{") and 'settle_asset="USDT"' in line) if status == 200 else 0


def _wait_for_position(port: int, target: int, timeout: float = 60.0) -> int:
    """Poll the instance until its input position reaches ``target``; return the position seen."""
    deadline = time.monotonic() + timeout
    while (position := _position(port)) < target:
        assert time.monotonic() < deadline, f"processing did not reach record {target} (at {position})"
        time.sleep(0.01)
    return int(position)


def _check_against_reference(copies, reference, id_field):
    """Every reference record present, byte-identical, no extra id; returns exact re-deliveries."""
    expected = {getattr(r, id_field): CODEC.encode(r) for r in reference}
    assert set(copies) == set(expected), "missing or extra output ids"
    for id_, values in copies.items():
        assert set(values) == {expected[id_]}, f"{id_} was emitted with different content"
    return sum(len(values) - 1 for values in copies.values())


def test_kill_9_at_random_points_gives_the_outputs_and_state_of_an_uninterrupted_run(
        broker, settings, start_processor, tmp_path):
    market = generate(seed=11, trades=3000)
    assert len(market.decisions) >= 50 and len(market.records) > 2000
    Feed(settings).send(*market.records)

    # 1. Uninterrupted, in-process, into its own group and output topics over the same inputs.
    straight = replace(settings, group_id=settings.group_id + ".straight", max_idle_ms=1000, topics=replace(
        settings.topics, **{t: f"{getattr(settings.topics, t)}.straight" for t in ("adl_orders", "adl_decisions", "adl_dlq", "adl_indicators")}))
    broker.create_topics(straight.topics.outputs(), PARTITIONS)
    running = start_processor(straight)
    running.wait_handled(len(market.records))
    straight_decisions = _outputs(straight, straight.topics.adl_decisions, ShortfallDecision, len(market.decisions))
    assert _check_against_reference(straight_decisions, market.decisions, "event_id") == 0
    assert _check_against_reference(_outputs(straight, straight.topics.adl_orders, AdlOrder, len(market.orders)),
                                    market.orders, "order_id") == 0
    assert running.close() == 0

    # 2. The same inputs through `adl-stream run`, killed with SIGKILL at random points, restarted.
    config = write_config(settings, tmp_path / "adl.toml", batch_size=10, max_idle_ms=1000)
    rng = random.Random(3)
    total = len(market.records)
    targets = sorted(rng.sample(range(total // 20, total * 8 // 10), 5))  # random points in the stream
    kills, progress = 0, []
    for target in targets:
        port = free_port()
        process = subprocess.Popen([sys.executable, "-m", "adl_stream.cli", "run", "--config", config,
                                    "--metrics-port", str(port), "--log-format", "json"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        progress.append(_wait_for_position(port, target))
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        kills += 1
    process = subprocess.Popen([sys.executable, "-m", "adl_stream.cli", "run", "--config", config,
                                "--metrics-port", "0", "--log-format", "json"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        decisions = _outputs(settings, settings.topics.adl_decisions, ShortfallDecision, len(market.decisions))
        orders = _outputs(settings, settings.topics.adl_orders, AdlOrder, len(market.orders))
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0
    redelivered = _check_against_reference(decisions, market.decisions, "event_id")
    redelivered += _check_against_reference(orders, market.orders, "order_id")
    # On Apache Kafka a read_committed reader sees no copy twice. Tansu also shows records of
    # aborted transactions (README): those copies must be exact, and are counted here.
    print(f"kills={kills} input position at each kill={progress}/{total} "
          f"exact re-deliveries seen (aborted transactions on Tansu)={redelivered}")
    assert all(0 < done < total for done in progress), "a kill did not land mid-stream"

    # 3. The state restored from the changelog equals the reference state.
    restored = start_processor(settings)
    assert restored.processor.domain("USDT").engine.snapshot() == market.engine.snapshot()
    assert restored.close() == 0
