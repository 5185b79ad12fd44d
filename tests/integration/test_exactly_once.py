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
from adl_stream.engine import AdlIndicator, AdlOrder, IndicatorCleared, ShortfallDecision
from adl_stream.runtime.checkpoint import Checkpoint, DeliveryFailed, Fenced
from adl_stream.runtime.kafka import producer_config
from adl_stream.runtime.processor import EXIT_FENCED
from adl_stream.wire import Codec
from tests import scenarios as sc
from tests.conftest import PARTITIONS, Feed, metric, read_topic, wait_for, write_config
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


#: How each output topic's records are told apart: an id no two records of an uninterrupted run
#: share. An indicator's is its key and its pass's time (the record's Kafka timestamp): a tombstone
#: has no value to read it from.
IDENTITY = {
    "adl_orders": lambda m: CODEC.decode(m.value(), AdlOrder).order_id,
    "adl_decisions": lambda m: CODEC.decode(m.value(), ShortfallDecision).event_id,
    "adl_indicators": lambda m: (m.key().decode(), m.timestamp()[1]),
}


def _reference(market) -> dict[str, dict]:
    """Per output topic (its setting), the reference's records by id: their bytes (None: a tombstone)."""
    reference = {
        "adl_orders": {o.order_id: CODEC.encode(o) for o in market.orders},
        "adl_decisions": {d.event_id: CODEC.encode(d) for d in market.decisions},
        "adl_indicators": {(r.key, r.ts): CODEC.encode(r) if isinstance(r, AdlIndicator) else None
                           for r in market.indicators},
    }
    assert len(reference["adl_indicators"]) == len(market.indicators)  # the ids are ids
    return reference


def _check_outputs(settings, reference) -> int:
    """Every reference record on the output topics of ``settings`` (read_committed), byte-identical
    and under the same id, none extra; returns the exact re-deliveries seen."""
    redelivered = 0
    for name, expected in reference.items():
        identify, copies = IDENTITY[name], {}
        for message in read_topic(settings, getattr(settings.topics, name), len(expected), timeout=60,
                                  identity=identify):
            copies.setdefault(identify(message), []).append(message.value())
        assert set(copies) == set(expected), f"{name}: missing or extra output ids"
        for id_, values in copies.items():
            assert set(values) == {expected[id_]}, f"{name}: {id_} was emitted with different content"
        redelivered += sum(len(values) - 1 for values in copies.values())
    return redelivered


def _lights(engine):
    """The lights state: the last light published per position, the tombstones due."""
    return {(p.symbol, p.account_id): p.light for p in engine.book}, set(engine.indicators.unlit)


def test_a_record_without_a_delivery_report_that_fails_fails_its_transaction(settings):
    # The checkpoint gives the records of a transaction no delivery report, marked ones apart
    # (the checkpoint module's "Delivery reports"): one that fails delivery must still fail the
    # commit, and the next transaction go on. The record here goes to a topic that does not exist.
    producer = Producer({**producer_config(settings), "topic.metadata.propagation.max.ms": 1000,
                         "allow.auto.create.topics": False})
    producer.init_transactions(10)
    checkpoint = Checkpoint(producer, consumer=None, transactional=True, timeout_s=20)
    checkpoint.produce(f"{settings.topics.adl_orders}.missing", b"k", b"lost")
    with pytest.raises(DeliveryFailed, match="failed delivery") as raised:
        checkpoint.commit()
    assert not isinstance(raised.value, Fenced)
    checkpoint.produce(settings.topics.adl_dlq, b"k", b"kept")  # the next transaction: aborted one gone
    assert checkpoint.commit() == 1
    assert [m.value() for m in read_topic(settings, settings.topics.adl_dlq, 1)] == [b"kept"]


@pytest.mark.parametrize("ranking_policy, indicator_interval_ms, size, kills, snapshots", [
    # The default queue: 3,799 records, 60 shortfalls; an indicator pass every 5 s of event time (4).
    ("pnl-leverage", 5_000, {"trades": 3000}, 5, {}),
    # Every ADL spread over the whole side: 1,515 records, 20 shortfalls (8 to ADL, 219 orders); a
    # pass every second (9), tombstones of positions the ADL fills closed. Fewer kills: each costs
    # ~12 s (the dead member's session times out, the successor starts and fences it).
    # State snapshots every ~200 changelog records, 100 entities a transaction: kills land before,
    # inside and after snapshots, and each restart reads from the latest complete one.
    ("pro-rata", 1_000, {"trades": 1000, "shortfalls": 20, "accounts": 60}, 3,
     {"snapshot_min_records": 200, "snapshot_chunk_entities": 100}),
])
def test_kill_9_at_random_points_gives_the_outputs_and_state_of_an_uninterrupted_run(
        broker, settings, start_processor, tmp_path, ranking_policy, indicator_interval_ms, size, kills, snapshots):
    settings = replace(settings, ranking_policy=ranking_policy, indicator_interval_ms=indicator_interval_ms)
    market = generate(seed=11, **size, ranking=settings.ranking(), indicator_interval_ms=indicator_interval_ms)
    assert len(market.decisions) >= 20 and len(market.orders) > 30 and len(market.indicators) > 100
    assert any(isinstance(r, IndicatorCleared) for r in market.indicators)  # positions closed by ADL fills
    reference = _reference(market)
    Feed(settings).send(*market.records)

    # 1. Uninterrupted, in-process, into its own group and output topics over the same inputs.
    straight = replace(settings, group_id=settings.group_id + ".straight", max_idle_ms=1000, topics=replace(
        settings.topics, **{t: f"{getattr(settings.topics, t)}.straight" for t in ("adl_orders", "adl_decisions", "adl_dlq", "adl_indicators")}))
    broker.create_topics(straight.topics.outputs(), PARTITIONS)
    running = start_processor(straight)
    running.wait_handled(len(market.records))
    assert _check_outputs(straight, reference) == 0
    for counter, sign in (("adl_haircut_total", 1), ("adl_haircut_negative_total", -1)):  # counters only rise
        assert metric(running.processor, counter) == pytest.approx(
            sum(float(sign * d.haircut) for d in market.decisions if sign * d.haircut > 0))
    assert running.close() == 0

    # 2. The same inputs through `adl-stream run`, killed with SIGKILL at random points, restarted.
    config = write_config(settings, tmp_path / "adl.toml", batch_size=10, max_idle_ms=1000,
                          ranking_policy=ranking_policy, indicator_interval_ms=indicator_interval_ms, **snapshots)
    rng = random.Random(3)
    total = len(market.records)
    targets = sorted(rng.sample(range(total // 20, total * 8 // 10), kills))  # random points in the stream
    progress = []
    for target in targets:
        port = free_port()
        process = subprocess.Popen([sys.executable, "-m", "adl_stream.cli", "run", "--config", config,
                                    "--metrics-port", str(port), "--log-format", "json"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        progress.append(_wait_for_position(port, target))
        process.send_signal(signal.SIGKILL)
        process.wait(10)
    process = subprocess.Popen([sys.executable, "-m", "adl_stream.cli", "run", "--config", config,
                                "--metrics-port", "0", "--log-format", "json"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        redelivered = _check_outputs(settings, reference)
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0
    # On Apache Kafka a read_committed reader sees no copy twice. Tansu also shows records of
    # aborted transactions (README): those copies must be exact, and are counted here.
    print(f"kills={kills} input position at each kill={progress}/{total} "
          f"exact re-deliveries seen (aborted transactions on Tansu)={redelivered}")
    assert all(0 < done < total for done in progress), "a kill did not land mid-stream"

    # 3. The state restored from the changelog equals the reference state.
    restored = start_processor(settings)
    engine = restored.processor.domain("USDT").engine
    assert engine.snapshot() == market.engine.snapshot()
    if snapshots:  # read from a snapshot, not from the changelog's start
        p = restored.processor
        assert metric(p, "adl_restore_events_total", topic=p.changelog) < sum(max(t.committed_end, 0) for t in p.tasks.values())
    assert _lights(engine) == _lights(market.engine)
    assert restored.close() == 0
