"""The processor against the real broker: the hand-computed scenario, bad input, restart."""

import json
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import replace
from decimal import Decimal as D

import pytest

from adl_stream.engine import AdlOrder, LiquidationShortfall, ShortfallDecision
from adl_stream.readable import plain_decimal
from adl_stream.runtime.checkpoint import Checkpoint
from adl_stream.runtime.processor import EXIT_FATAL, Processor
from adl_stream.wire import Codec
from bench import pipeline
from tests import scenarios as sc
from tests.conftest import Feed, metric, read_topic, wait_for, write_config

pytestmark = pytest.mark.integration
codec = Codec()

#: The scenario in stages; records within a stage may be processed in any order with the same
#: result, so each stage is sent once the processor has handled the one before.
STAGES = [sc.SETUP, [sc.E1], [sc.LIQ], [sc.E2], [sc.E3, sc.E2], sc.ADL_FILLS, [sc.E4]]


def run_scenario(feed, running, stages=STAGES, handled: int = 0):
    """Send ``stages`` one by one, each once the processor has handled the ones before (and the
    ``handled`` records sent earlier)."""
    for stage in stages:
        feed.send(*stage)
        handled += len(stage)
        running.wait_handled(handled)


def decode_all(messages, cls):
    return [codec.decode(m.value(), cls) for m in messages]


def test_hand_computed_scenario_order_by_order(settings, start_processor):
    running = start_processor(replace(settings, kafka={**settings.kafka, "statistics.interval.ms": "200"}))
    run_scenario(Feed(settings), running)

    orders = decode_all(read_topic(settings, settings.topics.adl_orders, len(sc.EXPECTED_ORDERS)), AdlOrder)
    assert sorted(sc.order_summary(o) for o in orders) == sorted(e[:6] for e in sc.EXPECTED_ORDERS)
    for order in orders:  # keyed by symbol, all on one partition: in emission order
        assert order.price == (D(93) if order.shortfall_event_id == "E3" else D(95))
    assert [o.order_id for o in orders] == [e[0] for e in sc.EXPECTED_ORDERS]

    decisions = decode_all(read_topic(settings, settings.topics.adl_decisions, 4), ShortfallDecision)
    assert {d.event_id: sc.decision_summary(d) for d in decisions} == sc.EXPECTED_DECISIONS
    assert len(decisions) == 4  # the duplicate E2 produced nothing

    p = running.processor
    assert metric(p, "adl_shortfalls_total", symbol="BTCUSDT", outcome="FUND_COVERED") == 2
    assert metric(p, "adl_shortfalls_total", symbol="BTCUSDT", outcome="ADL") == 1
    assert metric(p, "adl_shortfalls_total", symbol="BTCUSDT", outcome="ADL_PARTIAL") == 1
    assert metric(p, "adl_orders_total", symbol="BTCUSDT") == 5
    assert metric(p, "adl_unfilled_quantity_total", symbol="BTCUSDT") == 3
    assert metric(p, "adl_duplicate_events_total", topic=settings.topics.liquidation_shortfalls) == 1
    assert metric(p, "adl_insurance_fund_balance", fund_id="USDT") == 600
    assert metric(p, "adl_insurance_fund_floor", fund_id="USDT") == 0  # fund-exhausted
    assert metric(p, "adl_notional_total", symbol="BTCUSDT") == 5 * 95 + 9 * 93
    # The shorts buy back above the mark 90: E2's 5 at 95, E3's 9 at 93 (SPEC §3.5).
    assert metric(p, "adl_haircut_total", symbol="BTCUSDT") == 5 * (95 - 90) + 9 * (93 - 90)
    assert metric(p, "adl_haircut_negative_total") == 0
    assert metric(p, "adl_reservations_open") == 6  # E3's three orders, both sides, unfilled
    for histogram in ("adl_shortfall_processing_seconds", "adl_event_to_output_seconds"):
        assert metric(p, histogram + "_count", symbol="BTCUSDT") == 4  # observed at commit, once each
    assert 0 < metric(p, "adl_shortfall_processing_seconds_sum") < 4 * 20  # consumed -> committed
    assert metric(p, "adl_event_to_output_seconds_bucket", symbol="BTCUSDT", le="60.0") == 0  # ts of 1970
    wait_for(lambda: {s.labels["topic"] for f in p.metrics.registry.collect() for s in f.samples
                      if s.name == "adl_consumer_lag"} == set(settings.topics.inputs()), 5, "lag of every input")
    assert metric(p, "adl_consumer_lag") == 0  # all consumed
    assert metric(p, "adl_transactions_total", result="committed") >= len(STAGES)  # one or more per stage
    assert metric(p, "adl_transactions_total", result="aborted") == 0
    assert metric(p, "adl_events_processed_total", topic=settings.topics.fills) == len(
        [r for r in sc.STREAM if isinstance(r, sc.Fill)])
    assert running.close() == 0


def test_bad_input_goes_to_the_dlq_with_its_reason_and_processing_goes_on(settings, start_processor):
    running = start_processor(settings)
    feed = Feed(settings)
    t = settings.topics
    feed.send(*sc.SETUP)
    running.wait_handled(len(sc.SETUP))
    bad = [
        (t.fills, "BTCUSDT", b"\x00garbage bytes", "undecodable"),
        (t.mark_prices, "BTCUSDT", b"\xc3\x01" + bytes(8) + b"\x00", "unknown_schema"),
        (t.fills, "BTCUSDT", codec.encode(sc.fill("n1", "A", "BUY", -1, 100, 9_000)), "invalid_quantity"),
        (t.mark_prices, "BTCUSDT", codec.encode(sc.MarkPrice("BTCUSDT", D(0), 9_000)), "invalid_price"),
        (t.mark_prices, "BTCUSDT", codec.encode(sc.MarkPrice("BTCUSDT", D(-5), 9_000)), "invalid_price"),
        (t.fills, "DOGEUSDT", codec.encode(sc.fill("n2", "A", "BUY", 1, 1, 9_000, symbol="DOGEUSDT")), "unknown_symbol"),
        (t.liquidation_shortfalls, "BTCUSDT", codec.encode(sc.shortfall("X1", "nobody", 1, 90, 5, 9_000)), "unknown_position"),
        (t.fills, "BTCUSDT", codec.encode(sc.MarkPrice("BTCUSDT", D(1), 9_000)), "wrong_schema"),
        # Keyed against SPEC §2: the key routes to another settle asset (or none) than the record.
        (t.fills, "DOGEUSDT", codec.encode(sc.fill("n3", "A", "BUY", 1, 1, 9_000)), "key_mismatch"),
        (t.mark_prices, "BTCUSDT", codec.encode(sc.MarkPrice("DOGEUSDT", D(1), 9_000)), "key_mismatch"),
    ]
    sources = {value: feed.send_raw(topic, key, value) for topic, key, value, _ in bad}
    feed.send(sc.E1)  # a valid record after the bad ones
    running.wait_handled(len(sc.SETUP) + len(bad) + 1)

    dead = read_topic(settings, t.adl_dlq, len(bad))
    assert len(dead) == len(bad)
    by_value = {m.value(): m for m in dead}
    for topic, key, value, reason in bad:
        message = by_value[value]  # original bytes, untouched
        headers = {k: v.decode() for k, v in message.headers()}
        assert message.key() == key.encode()
        assert headers["source.topic"] == topic
        assert headers["error.reason"] == reason
        assert headers["error"].startswith(reason + ": ")
        assert (int(headers["source.partition"]), int(headers["source.offset"])) == sources[value]
        assert metric(running.processor, "adl_dead_letters_total", reason=reason, topic=topic) >= 1
    assert sum(metric(running.processor, "adl_dead_letters_total", reason=r) for r in {r for *_, r in bad}) == len(bad)

    decisions = decode_all(read_topic(settings, t.adl_decisions, 1), ShortfallDecision)
    assert [(d.event_id, d.outcome) for d in decisions] == [("E1", "FUND_COVERED")]
    assert running.close() == 0


def test_restart_restores_state_from_the_changelog_and_resumes_the_inputs_where_it_stopped(
        settings, start_processor):
    first = start_processor(settings)
    feed = Feed(settings)
    run_scenario(feed, first)
    before = first.processor.domain("USDT").engine.snapshot()
    assert first.close() == 0

    second = start_processor(settings)  # same group: the changelog holds state and input offsets
    p = second.processor
    assert p.domain("USDT").engine.snapshot() == before
    assert metric(p, "adl_restore_events_total", topic=p.changelog) > 0
    assert metric(p, "adl_restore_events_total") == metric(p, "adl_restore_events_total", topic=p.changelog)
    assert metric(p, "adl_committed_input_offset", settle_asset="USDT") == len(sc.STREAM)  # inputs not re-read
    assert metric(p, "adl_events_processed_total") == 0
    assert metric(p, "adl_restore_duration_seconds") > 0
    # New input after the restart is decided on the restored state (68 s: as far ahead of E4 at 8 s
    # as max_event_skew_ms allows). At 68 s E3's restored
    # reservations (until 66 s) have expired; B still holds 3 long. S1 is now short 2 at entry 120
    # with wallet 150 (100 + 50 realized by E2:2): upnl 60, pnl 0.25, leverage 180/210 -> 0.214,
    # ahead of S3 (0.0598): E5 takes S1's 2, then 1 of S3's 5.
    feed.send(sc.shortfall("E5", "B", 3, 95, 10_000, 68_000))
    second.wait_handled(1)
    decisions = decode_all(read_topic(settings, settings.topics.adl_decisions, 5), ShortfallDecision)
    assert [d.event_id for d in decisions] == ["E1", "E2", "E3", "E4", "E5"]  # nothing twice
    e5 = decisions[-1]
    assert (e5.outcome, e5.adl_quantity, e5.unfilled_quantity) == ("ADL", D(3), D(0))
    orders = decode_all(read_topic(settings, settings.topics.adl_orders, 7), AdlOrder)
    assert len(orders) == len({o.order_id for o in orders}) == 7
    assert [sc.order_summary(o) for o in orders[-2:]] == [
        ("E5:1", "S1", "BUY", D(2), D(95), 1), ("E5:2", "S3", "BUY", D(1), D(95), 2)]
    assert orders[-2].score == pytest.approx(0.25 * 180 / 210)
    assert metric(second.processor, "adl_reservations_expired_total") == 6
    assert second.close() == 0


def test_restart_restores_from_the_latest_snapshot_and_reads_less_than_the_history(settings, start_processor):
    # Tiny transactions and snapshots: many snapshots are written, each over several transactions.
    s = replace(settings, batch_size=2, snapshot_min_records=1, snapshot_chunk_entities=3)
    first = start_processor(s)
    run_scenario(Feed(s), first)
    before = first.processor.domain("USDT").engine.snapshot()
    assert metric(first.processor, "adl_snapshot_records_total") > 0
    assert first.close() == 0

    second = start_processor(s)
    p = second.processor
    assert p.domain("USDT").engine.snapshot() == before
    history = sum(max(task.committed_end, 0) for task in p.tasks.values())
    assert 0 < metric(p, "adl_restore_events_total", topic=p.changelog) < history  # not from offset 0
    assert metric(p, "adl_committed_input_offset", settle_asset="USDT") == len(sc.STREAM)
    feed = Feed(s)
    feed.send(sc.shortfall("E5", "B", 3, 95, 10_000, 68_000))  # decided as without snapshots (above)
    second.wait_handled(1)
    orders = decode_all(read_topic(s, s.topics.adl_orders, 7), AdlOrder)
    assert [sc.order_summary(o) for o in orders[-2:]] == [
        ("E5:1", "S1", "BUY", D(2), D(95), 1), ("E5:2", "S3", "BUY", D(1), D(95), 2)]
    assert second.close() == 0


@pytest.mark.parametrize("batch_size, commit_interval_ms, committed", [
    (5, 600_000, 4),  # 23 records: four full transactions; the last 3 wait for the interval
    (10_000, 200, None),  # the count is never reached: the interval commits them
])
def test_a_transaction_is_bounded_by_count_and_by_time(settings, start_processor, batch_size, commit_interval_ms,
                                                       committed):
    running = start_processor(replace(settings, batch_size=batch_size, commit_interval_ms=commit_interval_ms))
    Feed(settings).send(*[sc.FundFlow(f"d{i}", "USDT", "DEPOSIT", D(1), 1_000 + i) for i in range(23)])
    running.wait_handled(23)
    p = running.processor
    if committed is None:
        wait_for(lambda: metric(p, "adl_transactions_total", result="committed") >= 1, 5, "a commit by time")
    else:
        time.sleep(1.0)  # well past the poll loop's own pace; the interval is ten minutes
        assert metric(p, "adl_transactions_total", result="committed") == committed
    assert running.close() == 0
    if committed is not None:  # stopping commits the rest
        assert metric(p, "adl_transactions_total", result="committed") == committed + 1


def test_a_transaction_opened_inside_a_large_consumed_batch_commits_within_the_interval(
        settings, start_processor, monkeypatch):
    # 400 records wait on the broker before the processor starts, so one consume call takes them
    # all (batch_size is larger); each takes 5 ms to apply: 2 s of work. With a 100 ms interval the
    # transactions commit every ~0.1 s, inside the batch, not once after it.
    Feed(settings).send(*[sc.FundFlow(f"d{i}", "USDT", "DEPOSIT", D(1), 1_000 + i) for i in range(400)])
    apply, commit, committed_at = Processor.apply_record, Processor._commit, []

    def slow(self, engine, record, received_ts=None):
        time.sleep(0.005)
        return apply(self, engine, record, received_ts)

    def timed_commit(self, *args, **kwargs):
        commit(self, *args, **kwargs)
        committed_at.append((time.monotonic(), metric(self, "adl_events_processed_total")))

    monkeypatch.setattr(Processor, "apply_record", slow)
    monkeypatch.setattr(Processor, "_commit", timed_commit)
    running = start_processor(replace(settings, batch_size=100_000, commit_interval_ms=100))
    running.wait_handled(400)
    wait_for(lambda: committed_at and committed_at[-1][1] == 400, 5, "the last commit")
    assert running.close() == 0
    during = [t for t, handled in committed_at if 0 < handled < 400]
    assert len(during) >= 8, committed_at  # ~2 s of work at one commit per 100 ms
    gaps = [b - a for a, b in zip(during, during[1:])]
    assert max(gaps) < 0.5, gaps  # never the whole batch in one transaction


def test_the_input_queued_is_read_while_a_transaction_commits_and_the_outcome_is_the_engines(
        settings, start_processor, monkeypatch):
    # A backlog committed in transactions of 50 records: while each commits (its broker calls, in a
    # thread), the records queued behind it are read and routed into the merges
    # (Processor._commit's read_ahead); what the processor holds at the end is what an engine of the
    # same settings makes of the same records in event-time order.
    fills = [sc.fill(f"g{i}", f"X{i % 70}", "BUY" if i % 2 else "SELL", "0.001", 90, 5_000 + i) for i in range(3_000)]
    records = [*sc.SETUP, *fills]
    commit, route, routed_while = Checkpoint.commit, Processor._route_batch, []

    def observed_commit(self):
        time.sleep(0.01)  # at least this long in the commit thread
        return commit(self)

    def observed_route(self, messages, consumed_at):
        if messages and any(t.name == "adl-commit" and t.is_alive() for t in threading.enumerate()):
            routed_while.append(len(messages))
        return route(self, messages, consumed_at)

    monkeypatch.setattr(Checkpoint, "commit", observed_commit)
    monkeypatch.setattr(Processor, "_route_batch", observed_route)
    running = start_processor(replace(settings, batch_size=50, commit_interval_ms=60_000))
    feed = Feed(settings)
    feed.send(*sc.SETUP)  # first, so that every input partition has been fetched when the fills come
    running.wait_handled(len(sc.SETUP))
    feed.send(*fills)
    running.wait_handled(len(records))
    p = running.processor
    held = p.domain("USDT").engine.snapshot()
    reference = p._new_domain("USDT").engine
    assert running.close() == 0
    assert routed_while and sum(routed_while) > 1_000, routed_while  # most of the backlog read so
    for record in sorted(records, key=lambda r: r.ts):
        reference.apply(record)
    assert held == reference.snapshot()


def test_records_applied_while_a_transaction_commits_give_the_outputs_of_commits_that_wait(
        broker, start_processor, monkeypatch):
    # A crash backlog through two processors, each on its own copy of the input topics, in
    # transactions of at most 50 records: one applies records while each transaction commits
    # (Processor._work_ahead: their outputs held until the next transaction begins), the other with
    # the work ahead turned off. Their committed outputs are the same bytes in the same order, and
    # every decision is committed once.
    records = pipeline.crash_records(300)
    runs = {}
    commit, apply = Processor._commit, Processor.apply_record
    for work_ahead in (True, False):
        settings = replace(pipeline.settings_for(broker, f"ahead{work_ahead}{uuid.uuid4().hex[:6]}."),
                           batch_size=50, indicator_interval_ms=5_000, log_level="error")
        pipeline.prefill(settings, records)
        applied_while = []

        def observed_apply(self, engine, record, received_ts=None, applied_while=applied_while):
            if any(t.name == "adl-commit" and t.is_alive() for t in threading.enumerate()):
                applied_while.append(record)
            return apply(self, engine, record, received_ts)

        monkeypatch.setattr(Processor, "apply_record", observed_apply)
        monkeypatch.setattr(Processor, "_commit", commit if work_ahead else
                            lambda self, backlog=False: commit(self, backlog=False))
        running = start_processor(settings)
        running.wait_handled(len(records))
        assert running.close() == 0
        t = settings.topics
        shortfalls = sum(isinstance(r, LiquidationShortfall) for r in records)
        committed = read_topic(settings, (t.adl_decisions, t.adl_orders, t.adl_indicators), shortfalls)
        runs[work_ahead] = (applied_while, {(m.topic().split(".", 1)[1], m.partition()): [] for m in committed})
        for m in committed:
            runs[work_ahead][1][(m.topic().split(".", 1)[1], m.partition())].append((m.key(), m.value()))
    (ahead_applied, ahead), (waited_applied, waited) = runs[True], runs[False]
    assert len(ahead_applied) > len(records) // 10 and not waited_applied  # much of it applied during commits
    decisions = [value for (topic, _), out in ahead.items() if topic == t.adl_decisions.split(".", 1)[1]
                 for _, value in out]
    assert len(decisions) == len(set(decisions)) == shortfalls  # each decided, and committed, once
    assert ahead == waited


def test_an_internal_error_stops_the_instance_without_committing_past_it(settings, start_processor):
    first = start_processor(settings)
    processor, failed = first.processor, []
    apply = processor.apply_record

    def apply_broken_from_e3_on(engine, record, received_ts=None):  # a bug: the engine fails on E3 and all after
        if getattr(record, "event_id", None) == "E3" or failed:
            failed.append(record)
            raise RuntimeError("a bug in the engine")
        return apply(engine, record, received_ts)

    processor.apply_record = apply_broken_from_e3_on
    Feed(settings).send(*sc.STREAM)
    first.thread.join(30)
    assert failed and first.exit_code == EXIT_FATAL
    assert len(failed) == 1  # stopping revokes the partitions: nothing more is applied or committed
    second = start_processor(settings)
    decisions = decode_all(read_topic(settings, settings.topics.adl_decisions, 4,
                                      identity=lambda m: codec.decode(m.value(), ShortfallDecision).event_id),
                           ShortfallDecision)
    assert {d.event_id: sc.decision_summary(d) for d in decisions} == sc.EXPECTED_DECISIONS
    assert second.close() == 0


def test_inspect_reads_the_committed_state_the_processor_holds(settings, start_processor, tmp_path):
    running = start_processor(settings)
    run_scenario(Feed(settings), running)
    engine = running.processor.domain("USDT").engine
    queues = {side: [(c.position.account_id, plain_decimal(c.position.free)) for c in engine.adl_queue("BTCUSDT", side)]
              for side in ("LONG", "SHORT")}
    funds = {fund: plain_decimal(balance) for fund, balance in engine.funds.balances().items()}
    positions = sum(1 for p in engine.book if p.quantity != 0)
    assert running.close() == 0
    assert queues["SHORT"]  # B and B2 have free quantity; every short is held by E3's reservations

    config = write_config(settings, tmp_path / "adl.toml")
    result = subprocess.run([sys.executable, "-m", "adl_stream.cli", "inspect", "--config", config,
                             "--symbol", "BTCUSDT", "--json"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    state = json.loads(result.stdout)
    usdt = state["settle_assets"]["USDT"]
    assert (usdt["funds"], usdt["positions"]) == (funds, positions) and funds["USDT"] == "600"
    for side, expected in queues.items():
        shown = state["symbol"]["queues"][f"against a bankrupt {side}"]
        assert [(row["account_id"], row["free"]) for row in shown] == expected
        assert [row["rank"] for row in shown] == list(range(1, len(expected) + 1))

    unknown = subprocess.run([sys.executable, "-m", "adl_stream.cli", "inspect", "--config", config,
                              "--group-id", "never-ran"], capture_output=True, text=True, timeout=60)
    assert unknown.returncode == 2 and "no changelog topic 'never-ran-changelog'" in unknown.stderr
