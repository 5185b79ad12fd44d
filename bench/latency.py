"""Shortfall latency, consumed -> committed: paced at half the throughput, and under a backlog.

The clock: each shortfall's latency is measured inside the processor's own process, from the
``time.monotonic()`` at which ``consume()`` handed over the batch holding the shortfall (the
processor's ``consumed_at``, the same the ``adl_shortfall_processing_seconds`` histogram starts
from) to the moment ``Checkpoint.commit()`` returned for the transaction that holds its decision
and orders: from then on a ``read_committed`` reader of ``adl-decisions`` / ``adl-orders`` sees
them. The processor is observed (:class:`Probe` wraps three of its methods on the instance, as
``bench/pipeline.py`` wraps ``apply_record``), so every decided shortfall gives exactly one sample,
with exact times where the histogram has buckets (0.05, 0.1, 0.25 s ...). This is the right clock
for what the processor controls: a ``read_committed`` consumer of the outputs compared against the
input's Kafka timestamp would mix two clocks of millisecond resolution, add its own fetch wait,
and, under a backlog, count the time the input waited on the broker before the processor reached
it (the backlog itself, not the processor's latency).

The paced run also reports **sent -> committed**: the feed runs in a process of its own (so it does
not take the processor's GIL) and notes the ``time.monotonic()`` at which it handed each shortfall
to its producer; ``CLOCK_MONOTONIC`` is one clock for every process of the machine. That figure
adds what happens before ``consume()`` returns: the producer's linger, the broker, the fetch, and
the wait inside ``consume()`` for its batch.

Two steps (three runs), on the embedded broker, over the soak's market (``bench/soak.py``: the simulator's
crash, which reaches ADL, again and again with new ids, each pass ending where it began):

1. **backlog**: ``--latency-backlog`` records of it are published first, then a processor starts
   and catches up; its records/s is the measured throughput, and the latency percentiles, the
   transactions' sizes and how long each stayed open are reported;
2. **paced**: a new processor on fresh topics, running, is fed the same market at half that
   throughput by a steady producer (records due by now sent every 2 ms) for
   ``--latency-seconds``: the latency percentiles (target p99 <= 100 ms), shortfalls and orders;
   then again with :data:`QUICK_FETCH` on the processor's clients (``paced_fetch_wait_10ms``);
3. **broker floor**: after each paced run, the same feed read by a bare consumer that does nothing
   else (:func:`floor`, ``*_broker_floor``): its sent -> consumed is what the broker and the client
   alone cost, the baseline no processor on this broker can beat.

Each run reports where the loop's time went (``stages_s``: seconds in consume and the rest,
routing, draining the merges (applying), writing the changelog and the commit call), the
garbage collections, and the p99 per tenth of the run. Under a backlog, the routing of the input
read during a full transaction's commit (``Processor._commit``, read ahead) counts in both
``route`` and ``commit_call``, so ``consume_and_rest`` can be below 0.
"""

from __future__ import annotations

import gc
import multiprocessing
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from itertools import islice

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from adl_stream.embedded import EmbeddedBroker
from adl_stream.engine import LiquidationShortfall
from adl_stream.runtime.config import Settings
from adl_stream.runtime.kafka import create_missing_topics, input_consumer_config
from adl_stream.runtime.processor import Processor
from adl_stream.simulation.publish import topic_and_key
from adl_stream.wire import Codec

from .pipeline import PARTITIONS, settings_for
from .report import percentiles
from .soak import market, passes

TARGET_P99_MS = 100.0
#: A second paced run sets this on the processor's clients: the embedded Tansu answers a fetch
#: late while records keep arriving on other partitions (README "Shortfall latency"), which
#: Apache Kafka does not (it answers once ``fetch.min.bytes`` = 1 byte is there).
QUICK_FETCH = {"fetch.wait.max.ms": "10"}
#: The feed sends what is due every this many seconds (a steady rate, not one burst per second).
FEED_SLICE_S = 0.002


@dataclass
class Probe:
    """What one processor did, observed from outside its code (wrapped methods on the instance)."""

    decided: dict[str, list[float]] = field(default_factory=dict)  # event id -> [consumed, applied, committed]
    pending: list[str] = field(default_factory=list)  # decided, in the open transaction
    #: per transaction: records applied, records produced (outputs, changelog), seconds open, seconds
    #: of the commit call, seconds writing the changelog, when it committed (monotonic)
    transactions: list[tuple[int, int, float, float, float, float]] = field(default_factory=list)
    stages: dict[str, float] = field(default_factory=lambda: dict.fromkeys(
        ("loop", "route", "drain", "changelog", "commit_call", "commit_rest"), 0.0))
    abandoned: int = 0
    repeated: int = 0  # a shortfall decided twice (a redone batch): must stay 0
    gc_pauses: list[tuple[int, float]] = field(default_factory=list)  # (generation, seconds) of each collection
    detach: Callable[[], None] = field(default=lambda: None, repr=False)  # stop noting collections

    def reset_stages(self) -> None:
        """Count the loop's time from now (not the group join nor the idle wait before the feed)."""
        for name in self.stages:
            self.stages[name] = 0.0
        self.gc_pauses.clear()

    def samples_ms(self, start: int, end: int) -> list[float]:
        """Milliseconds between two of the times (0 consumed, 1 applied, 2 committed) of every
        committed shortfall."""
        return [(times[end] - times[start]) * 1000 for times in self.decided.values() if len(times) == 3]


def attach(processor: Processor) -> Probe:
    """Observe ``processor`` (before its ``run``): per decided shortfall, when its batch was consumed,
    when it was applied and when the commit that made it visible returned; per transaction, its
    records and how long it stayed open; time per stage of the loop."""
    probe = Probe()
    emit, commit, write_changelog = processor._emit, processor._commit, processor._write_changelog
    abandon, advance, route, drain = (processor._abandon_batch, processor._advance, processor._route_batch,
                                      processor._drain_all)
    stages = probe.stages

    def timed(name, call):
        def wrapper(*args, **kwargs):
            started = time.perf_counter()
            try:
                return call(*args, **kwargs)
            finally:
                stages[name] += time.perf_counter() - started
        return wrapper

    def observed_emit(topic, outcome, consumed_at):
        emit(topic, outcome, consumed_at)
        if outcome.decision is not None:
            event_id = outcome.decision.event_id
            if event_id in probe.decided:
                probe.repeated += 1
            probe.decided[event_id] = [consumed_at, time.monotonic()]
            probe.pending.append(event_id)

    visible: list[float] = [0.0]  # when the last Checkpoint.commit returned
    checkpoint_pending: list[int] = [0]  # records it produced in that transaction (outputs, changelog)

    def checkpoint_commit(checkpoint, call):
        def wrapper():
            checkpoint_pending[0] = checkpoint.pending
            started = time.perf_counter()
            try:
                return call()
            finally:
                visible[0] = time.monotonic()
                stages["commit_call"] += time.perf_counter() - started
        return wrapper

    def observed_commit(*args, **kwargs):
        checkpoint = processor.checkpoint
        if not getattr(checkpoint, "_probed", False):  # created by run(): wrapped at its first commit
            checkpoint.commit = checkpoint_commit(checkpoint, checkpoint.commit)
            checkpoint._probed = True
        records, opened = processor._uncommitted, processor._transaction_started
        call_before, changelog_before = stages["commit_call"], stages["changelog"]
        checkpoint_pending[0] = 0
        committing, probe.pending = probe.pending, []  # decided during the commit (work ahead): the next one's
        started = time.perf_counter()
        try:
            commit(*args, **kwargs)
        except BaseException:
            probe.pending = committing + probe.pending  # the batch abandoned: all of them redone
            raise
        call, changelog = stages["commit_call"] - call_before, stages["changelog"] - changelog_before
        stages["commit_rest"] += time.perf_counter() - started - call - changelog
        produced = checkpoint_pending[0]
        if records or produced:
            probe.transactions.append((records, produced, visible[0] - opened, call, changelog, visible[0]))
        for event_id in committing:
            probe.decided[event_id].append(visible[0])

    def observed_abandon(exc):
        probe.abandoned += 1
        for event_id in probe.pending:  # redone from the last commit: decided again
            del probe.decided[event_id]
        probe.pending.clear()
        abandon(exc)

    gc_started: list[float] = [0.0]

    def on_gc(phase, info):  # the process's collections (the processor's heap is most of it)
        if phase == "start":
            gc_started[0] = time.perf_counter()
        else:
            probe.gc_pauses.append((info["generation"], time.perf_counter() - gc_started[0]))

    gc.callbacks.append(on_gc)
    probe.detach = lambda: gc.callbacks.remove(on_gc)
    processor._emit = observed_emit
    processor._commit = observed_commit
    processor._abandon_batch = observed_abandon
    processor._write_changelog = timed("changelog", write_changelog)
    processor._advance = timed("loop", advance)
    processor._route_batch = timed("route", route)
    processor._drain_all = timed("drain", drain)
    return probe


def summary(probe: Probe, processor: Processor, seconds: float) -> dict:
    """The figures of a run: latency percentiles (ms), shortfalls, orders, transactions, stages."""
    m = processor.metrics
    handled = m.total("adl_events_processed_total") + m.total("adl_dead_letters_total")
    consumed = probe.samples_ms(0, 2)
    out = {"records": int(handled), "seconds": round(seconds, 3), "events_per_s": round(handled / seconds),
           "shortfalls": len(consumed), "orders": int(m.total("adl_orders_total")),
           "dead_letters": int(m.total("adl_dead_letters_total")),
           # the processor's own count of what it observed into adl_shortfall_processing_seconds
           "histogram_samples": int(m.total("adl_shortfall_processing_seconds_count"))}
    out.update({f"{k}_ms": v for k, v in percentiles(consumed).items()} if consumed else {})
    out["applied_to_committed_ms"] = percentiles(probe.samples_ms(1, 2)) if consumed else {}
    out["consumed_to_applied_ms"] = percentiles(probe.samples_ms(0, 1)) if consumed else {}
    committed = sorted((times[0], (times[2] - times[0]) * 1000) for times in probe.decided.values() if len(times) == 3)
    if committed:  # the p99 of each tenth of the run, by consumed time: does it grow as the state does?
        start, span = committed[0][0], committed[-1][0] - committed[0][0] or 1.0
        tenths: list[list[float]] = [[] for _ in range(10)]
        for at, ms in committed:
            tenths[min(9, int((at - start) / span * 10))].append(ms)
        out["p99_ms_by_tenth"] = [percentiles(t)["p99"] if t else None for t in tenths]
    sizes = [t[0] for t in probe.transactions]
    if sizes:
        out["transactions"] = {"count": len(sizes), "records": sum(sizes), "records_mean": round(sum(sizes) / len(sizes)),
                               "records_max": max(sizes), "open_ms": percentiles([t[2] * 1000 for t in probe.transactions])}
        out["transactions"]["commit_call_ms"] = percentiles([t[3] * 1000 for t in probe.transactions])
        first, span = probe.transactions[0][5], probe.transactions[-1][5] - probe.transactions[0][5] or 1.0
        tenths: list[list[tuple]] = [[] for _ in range(10)]
        for t in probe.transactions:
            tenths[min(9, int((t[5] - first) / span * 10))].append(t)
        # per tenth of the run: records produced per record applied, and changelog ms per record applied
        out["transactions"]["produced_per_record_by_tenth"] = [
            round(sum(t[1] for t in part) / max(1, sum(t[0] for t in part)), 2) for part in tenths]
        out["transactions"]["changelog_us_per_record_by_tenth"] = [
            round(sum(t[4] for t in part) * 1e6 / max(1, sum(t[0] for t in part)), 1) for part in tenths]
    loop = probe.stages["loop"]
    inner = sum(v for k, v in probe.stages.items() if k in ("route", "drain", "changelog", "commit_call", "commit_rest"))
    out["stages_s"] = {"consume_and_rest": round(loop - inner, 3),
                       **{k: round(v, 3) for k, v in probe.stages.items() if k != "loop"}}
    oldest = [seconds for generation, seconds in probe.gc_pauses if generation == 2]
    out["gc"] = {"collections": len(probe.gc_pauses), "seconds": round(sum(s for _, s in probe.gc_pauses), 3),
                 "gen2": len(oldest), "gen2_max_ms": round(max(oldest, default=0.0) * 1000, 1)}
    out["abandoned_batches"] = probe.abandoned
    out["decided_twice"] = probe.repeated
    return out


def backlog(settings: Settings, records: list, probes: list | None = None) -> dict:
    """Publish ``records``, then run a processor until it has caught up; the figures of :func:`summary`
    (``probes``, if given, receives the :class:`Probe`)."""
    create_missing_topics(settings, [*settings.topics.inputs(), *settings.topics.outputs()], PARTITIONS)
    _send(settings, records)
    processor = Processor(settings, until_caught_up=True)
    probe = attach(processor)
    if probes is not None:
        probes.append(probe)
    first: list[float] = []
    apply = processor.apply_record

    def timed_apply(engine, record, received_ts=None):
        if not first:
            first.append(time.monotonic())
            probe.reset_stages()
        return apply(engine, record, received_ts)

    processor.apply_record = timed_apply
    try:
        assert processor.run(threading.Event()) == 0, "the processor failed: see its log"
    finally:
        probe.detach()
    out = summary(probe, processor, time.monotonic() - first[0])
    assert out["records"] == len(records), f"handled {out['records']} of {len(records)}"
    out["backlog"] = len(records)
    return out


def market_records(accounts: int, count: int, start_ts: int = 1_700_000_000_000) -> list:
    """``count`` records of the soak's market of ``accounts`` traders, pass after pass with new ids."""
    return [record for record, _ in islice(passes(market(accounts), start_ts, 1e9), count)]


def _send(settings: Settings, records: list) -> None:
    from adl_stream.simulation.publish import Publisher
    Publisher({"bootstrap.servers": settings.bootstrap_servers, "linger.ms": 20}, settings.topics).send_all(records)


def _feed(settings: Settings, accounts: int, count: int, rate: float, go, out) -> None:
    """The paced producer (its own process): :func:`market_records` encoded, then once ``go`` is set
    sent at ``rate`` per second; sends back the send time of every shortfall and the achieved rate."""
    from confluent_kafka import Producer

    codec = Codec()
    encoded = []
    for record in market_records(accounts, count):
        topic, key = topic_and_key(record, settings.topics)
        event = record.event_id if isinstance(record, LiquidationShortfall) else None
        encoded.append((topic, key, codec.encode(record), record.ts, event))
    producer = Producer({"bootstrap.servers": settings.bootstrap_servers, "linger.ms": 5, "enable.idempotence": True})
    out.send(len(encoded))  # ready
    go.wait()
    sent_at: dict[str, float] = {}
    started = time.monotonic()
    behind = 0.0
    for n, (topic, key, value, ts, event) in enumerate(encoded):
        due = started + n / rate
        wait = due - time.monotonic()
        if wait > FEED_SLICE_S:
            producer.poll(0)
            time.sleep(wait)
        behind = max(behind, -wait)
        while True:
            try:
                producer.produce(topic, value, key, timestamp=ts)
                break
            except BufferError:
                producer.poll(0.01)
        if event is not None:
            sent_at[event] = time.monotonic()
    last = time.monotonic()
    remaining = producer.flush(60)
    out.send({"sent": len(encoded) - remaining, "first": started, "last": last, "behind_max_s": behind,
              "sent_at": sent_at})


def paced(settings: Settings, accounts: int, count: int, rate: float, timeout_s: float = 600,
          probes: list | None = None) -> dict:
    """A running processor fed ``count`` records of :func:`market_records` at ``rate`` per second;
    :func:`summary`'s figures, the achieved rate and the sent -> committed percentiles."""
    create_missing_topics(settings, [*settings.topics.inputs(), *settings.topics.outputs()], PARTITIONS)
    context = multiprocessing.get_context("spawn")
    go, (ours, theirs) = context.Event(), context.Pipe()
    feed = context.Process(target=_feed, args=(settings, accounts, count, rate, go, theirs),
                           daemon=True)
    feed.start()
    processor = Processor(settings)
    probe = attach(processor)
    if probes is not None:
        probes.append(probe)
    stop = threading.Event()
    code: list[int] = []
    runner = threading.Thread(target=lambda: code.append(processor.run(stop)), daemon=True)
    runner.start()
    try:
        deadline = time.monotonic() + 120
        while not processor.metrics.total("adl_ready"):
            if code or time.monotonic() > deadline:
                raise RuntimeError(f"the processor did not become ready (exit code {code})")
            time.sleep(0.05)
        _wait_for(ours, feed, 300, "get ready (encoding its records)")
        ours.recv()
        probe.reset_stages()
        go.set()
        _wait_for(ours, feed, timeout_s, "finish")
        fed = ours.recv()
        m = processor.metrics
        deadline = time.monotonic() + 60
        while m.total("adl_events_processed_total") + m.total("adl_dead_letters_total") < fed["sent"] or probe.pending:
            if code or time.monotonic() > deadline:
                raise RuntimeError(f"the processor did not handle the {fed['sent']:,} records fed (exit code {code})")
            time.sleep(0.05)
    finally:
        stop.set()
        runner.join(60)
        feed.join(10)
        probe.detach()
    assert code == [0], f"the processor exited with {code}: see its log"
    seconds = fed["last"] - fed["first"]
    out = summary(probe, processor, seconds)
    out["rate_asked"] = round(rate)
    out["rate_sent"] = round((fed["sent"] - 1) / seconds) if seconds > 0 else 0
    out["feed_behind_max_ms"] = round(fed["behind_max_s"] * 1000, 1)
    sent_ms = [(probe.decided[event][2] - at) * 1000 for event, at in fed["sent_at"].items()
               if len(probe.decided.get(event, ())) == 3]
    out["sent_to_committed_ms"] = percentiles(sent_ms) if sent_ms else {}
    waited = [(probe.decided[event][0] - at) * 1000 for event, at in fed["sent_at"].items() if event in probe.decided]
    out["sent_to_consumed_ms"] = percentiles(waited) if waited else {}
    out["shortfalls_sent"] = len(fed["sent_at"])
    return out


def floor(settings: Settings, accounts: int, count: int, rate: float, timeout_s: float = 600) -> dict:
    """The broker's own floor under the same feed: a bare consumer (the processor's input consumer
    configuration, every input partition assigned, ``consume`` as the processor calls it: one
    record awaited, then what is queued) fed as :func:`paced` feeds the processor, and nothing else
    done: **sent -> consumed** of each shortfall. No processor on this broker can do better."""
    create_missing_topics(settings, [*settings.topics.inputs(), *settings.topics.outputs()], PARTITIONS)
    context = multiprocessing.get_context("spawn")
    go, (ours, theirs) = context.Event(), context.Pipe()
    feed = context.Process(target=_feed, args=(settings, accounts, count, rate, go, theirs), daemon=True)
    feed.start()
    codec, shortfalls = Codec(), settings.topics.liquidation_shortfalls
    consumer = Consumer(input_consumer_config(settings))
    consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t in settings.topics.inputs() for p in range(PARTITIONS)])
    consumed_at: dict[str, float] = {}
    records, fed = 0, None
    try:
        _wait_for(ours, feed, 300, "get ready (encoding its records)")
        ours.recv()
        go.set()
        deadline = time.monotonic() + timeout_s
        while fed is None or records < fed["sent"]:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the bare consumer did not read the {count:,} records fed within {timeout_s:g} s")
            batch = consumer.consume(1, 0.1)
            if batch:
                batch += consumer.consume(settings.batch_size - 1, 0)
            at = time.monotonic()
            for message in batch:
                if message.error() is None:
                    records += 1
                    if message.topic() == shortfalls:
                        consumed_at[codec.decode(message.value(), LiquidationShortfall).event_id] = at
            if fed is None and ours.poll(0):
                fed = ours.recv()
    finally:
        consumer.close()
        feed.join(10)
    waited = [(consumed_at[event] - sent) * 1000 for event, sent in fed["sent_at"].items() if event in consumed_at]
    seconds = fed["last"] - fed["first"]
    return {"events_per_s": round((fed["sent"] - 1) / seconds) if seconds > 0 else 0, "records": records,
            "shortfalls": len(waited), "orders": 0, "sent_to_consumed_ms": percentiles(waited) if waited else {}}


def _wait_for(pipe, feed, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not pipe.poll(0.2):
        if not feed.is_alive():
            raise RuntimeError(f"the feed process exited ({feed.exitcode}) before it could {what}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the feed did not {what} within {timeout_s:g} s")


def run(broker: EmbeddedBroker, accounts: int, backlog_records: int, seconds: float) -> dict:
    """Backlog first (its records/s is the throughput), then paced at half of it for ``seconds``,
    with the clients' defaults and again with ``fetch.wait.max.ms = 10`` (see :data:`QUICK_FETCH`)."""
    out: dict = {}
    gc.collect()  # an earlier part's garbage is not this part's pause
    first = replace(settings_for(broker, f"backlog{uuid.uuid4().hex[:6]}."), log_level="error")
    out["backlog"] = backlog(first, market_records(accounts, backlog_records))
    rate = out["backlog"]["events_per_s"] / 2
    for name, kafka in (("paced", {}), ("paced_fetch_wait_10ms", QUICK_FETCH)):
        gc.collect()  # nor the previous run's processor
        settings = replace(settings_for(broker, f"{name[:5]}{uuid.uuid4().hex[:6]}."), log_level="error")
        out[name] = paced(replace(settings, kafka={**settings.kafka, **kafka}), accounts, int(rate * seconds), rate)
        out[name]["met"] = out[name].get("p99_ms", float("inf")) <= TARGET_P99_MS
        gc.collect()
        bare = replace(settings_for(broker, f"floor{uuid.uuid4().hex[:6]}."), log_level="error")
        out[f"{name}_broker_floor"] = floor(replace(bare, kafka={**bare.kafka, **kafka}), accounts, int(rate * seconds),
                                            rate)
    return out


def rows(results: dict) -> list[dict]:
    """One table row per run (the JSON has the rest: breakdowns, stages, transactions)."""
    table = []
    for name, r in results.items():
        t = r.get("transactions", {})
        sent = r.get("sent_to_committed_ms") or r.get("sent_to_consumed_ms")  # (a broker floor: to consumed)
        table.append({"run": name, "rec/s": r["events_per_s"], "shortfalls": r["shortfalls"], "orders": r["orders"],
                      **{f"{q} ms": float(r[f"{q}_ms"]) if f"{q}_ms" in r else "-" for q in ("p50", "p99", "max")},
                      "sent p99": float(sent["p99"]) if sent else "-",
                      "txn rec": t.get("records_mean", 0),
                      "txn p99 ms": float(t.get("open_ms", {}).get("p99", 0.0))})
    return table
