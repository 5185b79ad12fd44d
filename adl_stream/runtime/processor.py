"""``adl-stream run``: the consume -> route -> apply -> produce -> commit loop.

The engine is the only place that computes; this module moves bytes. Work is split into tasks
(:mod:`.topology`): each settle asset has its own engine fed with that asset's records, and the
settle assets are grouped into tasks, one per partition of the changelog topic. The consumer group
(subscribed to the changelog topic) hands each instance its tasks; a second consumer reads every
input partition and routes each record to the engine of its settle asset, skipping the assets of
tasks owned elsewhere. Per settle asset, records are merged across partitions in event-time order
(:mod:`.merge`) and applied; their outputs are produced (ADL orders and decisions keyed by symbol,
dead letters, and the ADL indicator lights of a pass keyed ``<symbol>:<account_id>`` with the
pass's time as Kafka timestamp, a tombstone for a closed position), and every ``batch_size``
records or ``commit_interval_ms`` (whichever comes first) the :class:`Checkpoint` commits the
outputs, the changed state entities and each task's input offsets (its commit marker) in one Kafka
transaction; a transaction that holds a shortfall decision commits as soon as the merges release
nothing more, without waiting for the interval.

On assignment a task is restored from its changelog partition up to the group's committed offset
(:mod:`.changelog`), then its assets resume at the input offsets of the last marker. ``/readyz``
turns ready once every assigned task is restored. On revocation the instance applies what the
merge may release and commits before letting the tasks go; a task revoked and assigned back with
no commit from anyone else in between keeps its state without a restore.
"""

from __future__ import annotations

import gc
import json
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import groupby
from operator import attrgetter

import structlog
from confluent_kafka import (
    TIMESTAMP_CREATE_TIME,
    TIMESTAMP_LOG_APPEND_TIME,
    Consumer,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from ..engine import (
    AdlIndicator,
    BalanceUpdate,
    Engine,
    Fill,
    FundFlow,
    LiquidationShortfall,
    MarkPrice,
    Outcome,
    Rejected,
    SymbolSpec,
)
from ..engine.state import restore
from ..wire import Codec
from ..wire.registry import RegistryUnavailable
from .changelog import (
    BATCH_HEADERS,
    TXN_HEADER,
    Offsets,
    changelog_topic,
    encode_marker,
    marker_key,
    restore_task,
    write_changes,
)
from .checkpoint import Checkpoint, DeliveryFailed, Fenced, bounded
from .config import Settings, redacted
from .kafka import (
    check_topics,
    consumer_config,
    ensure_changelog,
    input_consumer_config,
    producer_config,
)
from .memory import collect_young_at_commits, release, restoring, settle
from .merge import EventTimeMerger
from .merge_order import MERGE_HEADER, RecordedOrder, encode_runs
from .metrics import HealthServer, ProcessorMetrics
from .replay import PrintingCheckpoint
from .serdes import codec_for
from .snapshots import SnapshotWriter
from .topology import UNROUTED, Topology, task_of

log = structlog.get_logger("adl_stream.processor")

EXIT_OK, EXIT_FATAL, EXIT_FENCED = 0, 1, 3
_KEY, _TS = attrgetter("key"), attrgetter("ts")  # of a light (an indicator or a tombstone)
_CLOCK_EVERY = 32  # records applied between two looks at the clock (a transaction's deadline)
DECISION_SHARE = 5
"""A transaction holding a shortfall decision commits at most ``commit_interval_ms / DECISION_SHARE``
after its first decision, even while the merges keep releasing records (20 ms by default)."""
KAFKA_CALL_TIMEOUT_S = 10  # of each call into the producer at a commit; longer: the batch is redone
NO_PROGRESS_LOG_EVERY_S = 10  # while input waits and nothing is committed, a no_progress line this often

PartitionKey = tuple[str, int]


class FatalError(RuntimeError):
    pass


class InternalError(FatalError):
    """An unexpected exception while applying the record at ``topic``/``partition``/``offset``."""

    def __init__(self, topic: str, partition: int, offset: int, error: Exception) -> None:
        super().__init__(f"{type(error).__name__}: {error}")
        self.topic, self.partition, self.offset = topic, partition, offset


#: What the operator does about an internal error (README "An exception on one record").
RUNBOOK = ("a bug met this record: nothing from it on was committed, and a restart meets it again. Keep the "
           "log and the record (kafka-console-consumer --topic T --partition P --offset O --max-messages 1), "
           "report it, and to go on past it set on_internal_error = \"dead-letter\" (ADL_ON_INTERNAL_ERROR), "
           "which sends such records to the dead-letter topic")


def received_ts(message, engine: Engine) -> int | None:
    """The Kafka record timestamp as the event-time guard's reference (README "Event time"): the
    broker's clock (LogAppendTime) always; the producer's (CreateTime) only while stream time is
    unknown, since a producer with a wrong clock may stamp both times alike."""
    kind, ts = message.timestamp()
    if kind == TIMESTAMP_LOG_APPEND_TIME or (kind == TIMESTAMP_CREATE_TIME and engine.stream_time < 0):
        return ts
    return None


def new_engine(settings: Settings, symbols: Mapping[str, SymbolSpec]) -> Engine:
    """The engine of one settle asset (``symbols``: its symbols) as ``settings`` configure it."""
    s = settings
    return Engine(symbols, trigger=s.trigger(), ranking=s.ranking(), reservation_timeout_ms=s.reservation_timeout_ms,
                  dedup_window_ms=s.dedup_window_ms, indicator_interval_ms=s.indicator_interval_ms,
                  max_event_skew_ms=s.max_event_skew_ms, max_lateness_ms=s.max_event_lateness_ms)


@dataclass
class Domain:
    """One settle asset: its engine, its event-time merge and the input offsets it has applied."""

    asset: str
    engine: Engine
    merger: EventTimeMerger
    offsets: Offsets = field(default_factory=dict)  # next input offset to apply, per partition
    committed: Offsets = field(default_factory=dict)  # offsets of the last marker written
    lit: int = -1  # stream time // indicator_interval_ms when the lights gauge was last set from it


@dataclass
class Task:
    id: int
    domains: dict[str, Domain]
    committed_end: int = -1  # changelog offset after this instance's last marker for the task
    snapshots: SnapshotWriter | None = None
    seq: int = 0  # the sequence number of the task's next commit marker


class Processor:
    def __init__(self, settings: Settings, metrics: ProcessorMetrics | None = None, codec: Codec | None = None,
                 start_at=None, until_caught_up: bool = False, dry_run=None,
                 merge_order: dict[str, RecordedOrder] | None = None) -> None:
        """``start_at(consumer, partitions) -> {(topic, partition): offset}`` sets where output
        starts (replay: below it, records only build state); ``until_caught_up`` stops once every
        input is consumed; ``dry_run`` is a text stream that receives the outputs as JSON lines
        instead of Kafka (no group, no producer, no changelog: the instance owns every task);
        ``merge_order``: per settle asset, the merge order of an earlier run to follow (replay)."""
        self._start_at = start_at
        self._until_caught_up = until_caught_up
        self._dry_run = dry_run
        self._merge_order = merge_order or {}
        self.settings = settings
        self.metrics = metrics or ProcessorMetrics()
        self.codec = codec or codec_for(settings)  # checks writer schemas and the registry: exit code 2
        self.changelog = changelog_topic(settings.group_id)
        t = settings.topics
        self._record_type = {
            t.fills: Fill,
            t.mark_prices: MarkPrice,
            t.balances: BalanceUpdate,
            t.insurance_fund: FundFlow,
            t.liquidation_shortfalls: LiquidationShortfall,
        }
        # Same event time: funds and wallets first, then marks and fills, shortfalls last.
        self._fund_topic = t.insurance_fund  # keyed by fund id, the others by symbol (or account)
        self._priority = {t.insurance_fund: 0, t.balances: 1, t.mark_prices: 2, t.fills: 3, t.liquidation_shortfalls: 4}
        self.topology: Topology | None = None
        self.tasks: dict[int, Task] = {}
        self._suspended: dict[int, Task] = {}  # revoked, kept in case they come back unchanged
        self._inputs: list[PartitionKey] = []
        self._live_from: Offsets = {}  # replay: below this offset, apply without output
        self._routed: Offsets = {}  # next offset the input consumer returns, per partition
        self._assigned = False  # the group has given this instance its tasks (and they are restored)
        self._uncommitted = 0  # records applied since the last commit
        self._transaction_started = 0.0
        self._commit_interval_s = settings.commit_interval_ms / 1000
        self._call_timeout_s = min(KAFKA_CALL_TIMEOUT_S, settings.broker_outage_s)
        self._run_id = uuid.uuid4().hex[:12]
        self._commits = 0
        self.health: HealthServer | None = None
        self.consumer: Consumer | None = None  # group membership (the changelog topic)
        self.inputs: Consumer | None = None  # every input partition, assigned
        self._failed = False
        self._decided: list[tuple[str, float, int]] = []  # shortfalls decided, not yet committed
        self._decided_at = 0.0  # when the first of them was decided (monotonic)
        self._read_ahead_records = 0  # input records read during the last commit (_commit)
        # records applied per counter and topic since they were last counted (_count_applied)
        self._applied: dict[tuple[str, str], int] = {}
        self._joining_since: float | None = None  # subscribed, no assignment yet (for waiting_for_tasks)
        self._joining_logged = 0
        self._producer: Producer | None = None
        self._left_behind: list[Producer] = []  # producers of failed batches (a call may still run in them)
        self._outage_since: float | None = None  # a batch failed for the broker; redone once it answers
        self._outage_error = ""
        self._producer_stale = False
        self._progress_at = time.monotonic()  # input committed, or none waiting (adl_seconds_since_progress)
        self._no_progress_logged = 0.0

    # -- state views (tests, demo, bench) ---------------------------------------------------------

    def domain(self, asset: str) -> Domain:
        """The domain of ``asset`` among the owned tasks (KeyError when another instance owns it)."""
        return self.tasks[task_of(asset, self.topology.tasks)].domains[asset]

    def domains(self, revoked: bool = False):
        """The domains of the owned tasks (and, ``revoked``, of those let go since: after a stop)."""
        tasks = {**self._suspended, **self.tasks} if revoked else self.tasks
        for task_id in sorted(tasks):
            yield from tasks[task_id].domains.values()

    def fund_balances(self) -> dict:
        return {fund: balance for d in self.domains() for fund, balance in d.engine.funds.balances().items()}

    def apply_record(self, engine: Engine, record, received_ts: int | None = None) -> Outcome:
        """The one call into the engine (a seam for tests and benchmarks)."""
        return engine.apply(record, received_ts)

    # -- lifecycle -----------------------------------------------------------------------------

    def run(self, stop: threading.Event | None = None) -> int:
        """Process until ``stop`` is set; return the process exit code."""
        stop = stop or threading.Event()
        s = self.settings
        log.info("starting", bootstrap_servers=s.bootstrap_servers, group_id=s.group_id,
                 policy=f"{s.trigger_policy}/{s.ranking_policy}", symbols=sorted(s.symbols), kafka=redacted(s.kafka))
        partitions = check_topics(s)
        tasks = ensure_changelog(s, self.changelog, create=self._dry_run is None)
        self.topology = Topology(s.symbols, tasks)
        self._inputs = sorted((topic, p) for topic in s.topics.inputs() for p in range(partitions[topic]))
        self.health = HealthServer(self.metrics, s.metrics_host, s.metrics_port).start()
        log.info("metrics_serving", port=self.health.port, partitions=partitions, tasks=tasks,
                 assets_of_task={t: assets for t, assets in self.topology.assets_of_task.items() if assets})
        self.metrics.start_series(s.symbols, float(s.fund_floor) if s.trigger_policy == "fund-floor" else 0.0)
        self.metrics.snapshot_records.labels(self.changelog)  # at 0 from the start, as the others
        self.metrics.seconds_since_progress.set_function(lambda: time.monotonic() - self._progress_at)
        self.inputs = Consumer({"statistics.interval.ms": 5000, **input_consumer_config(s), "stats_cb": self._on_stats})
        if self._start_at is not None:
            self._live_from = self._start_at(self.inputs, [TopicPartition(t, p) for t, p in self._inputs])
        producer = None
        code = EXIT_OK
        thresholds = collect_young_at_commits()
        try:
            if self._dry_run is not None:
                self.checkpoint = PrintingCheckpoint(self._dry_run, self.codec, s.topics)
                self._take_tasks(list(range(tasks)), {})
            else:
                producer = self._producer = Producer(producer_config(s))
                if s.exactly_once:
                    producer.init_transactions(s.startup_timeout_s)  # fences an earlier instance of this id
                self.consumer = Consumer(consumer_config(s))
                self.checkpoint = Checkpoint(producer, self.consumer, transactional=s.exactly_once,
                                             timeout_s=self._call_timeout_s, transactions=self.metrics.transactions)
                self.consumer.subscribe([self.changelog], on_assign=self._on_assign, on_revoke=self._on_revoke)
                self._joining_since = time.monotonic()
                log.info("joining_group", group_id=s.group_id, topic=self.changelog)
            while not stop.is_set():
                self._step()
                if self._until_caught_up and self._caught_up_everywhere():
                    log.info("caught_up", restored=self.metrics.total("adl_restore_events_total"),
                             processed=self.metrics.total("adl_events_processed_total"))
                    break
        except Fenced as exc:
            log.error("fenced", error=str(exc), transactional_id=s.transactional_id,
                      hint=f"a producer with transactional id {s.transactional_id!r} (group_id-instance_id) started "
                      "after this one and took its transactions over (it may have stopped since); this instance "
                      "stops, and what it had not committed is aborted. Give every instance its own instance_id")
            code = EXIT_FENCED
        except InternalError as exc:
            log.error("internal_error", error=str(exc), topic=exc.topic, partition=exc.partition, offset=exc.offset,
                      runbook=RUNBOOK, exc_info=exc.__cause__)
            code = EXIT_FATAL
        except (FatalError, DeliveryFailed, RegistryUnavailable) as exc:
            log.error("fatal", error=str(exc), hint="the failed batch was not committed; a restart "
                      "processes it again")
            code = EXIT_FATAL
        except Exception:
            log.exception("internal_error", hint="the failed batch was not committed")
            code = EXIT_FATAL
        finally:
            if code == EXIT_OK:
                self._commit()
            else:
                self.checkpoint.abort()
                self._decided.clear()
                self._applied.clear()
                self._failed = True  # close() revokes: nothing more may be applied or committed
            if self.consumer is not None:
                self.consumer.close()
            self.inputs.close()
            producer = self._producer  # the one in use (a new one after a broker outage)
            if producer is not None and code == EXIT_OK:
                # Only after a clean commit: after a fatal error (fencing) the outputs belong to
                # an aborted transaction, and flushing a fatally failed producer raises.
                producer.flush(10)
            self.health.set_ready(False)
            self.health.stop()
            gc.unfreeze()  # the state is the collector's again: dropped with the processor, it goes
            gc.set_threshold(*thresholds)
            log.info("stopped", exit_code=code)
        return code

    # -- tasks: assignment, restore, revocation ----------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if self._outage_since is not None:  # _recover takes them once the broker answers
            consumer.assign(partitions)
            consumer.pause(partitions)
            return
        committed = consumer.committed(partitions, timeout=30)
        consumer.assign(partitions)
        consumer.pause(partitions)  # membership only: the restore reads the changelog itself
        self._take_tasks([tp.partition for tp in committed], {tp.partition: tp.offset for tp in committed})

    def _take_tasks(self, task_ids: list[int], committed: dict[int, int]) -> None:
        started = time.monotonic()
        restored = 0
        dropped = [task_id for task_id, task in self._suspended.items()
                   if task_id not in committed or task.committed_end != committed[task_id]]
        for task_id in dropped:  # moved on elsewhere: restored from the changelog if it comes back
            del self._suspended[task_id]
        if dropped:
            release()
        for task_id in sorted(task_ids):
            end = committed.get(task_id, -1)
            task = self._suspended.pop(task_id, None)
            if task is None or task.committed_end != end:  # new here, or committed by another since
                task = self._restore(task_id, end)
                restored += 1
            self.tasks[task_id] = task
        self._suspended.clear()
        self._reposition()
        duration = time.monotonic() - started
        if restored:
            self.metrics.restore_duration.set(duration)
        log.info("tasks_assigned", tasks=sorted(self.tasks), restored=restored, duration_s=round(duration, 3),
                 assets=[d.asset or "(unrouted)" for d in self.domains()])
        self._assigned = True
        self._joining_since = None
        self._progress_at = time.monotonic()
        self.health.set_ready(True)

    def _restore(self, task_id: int, end: int) -> Task:
        """The task rebuilt from its changelog partition up to ``end`` (nothing when < 0): from the
        latest complete snapshot the last marker names (:mod:`.snapshots`)."""
        s, started = self.settings, time.monotonic()
        with restoring():
            state = restore_task(input_consumer_config(s), self.changelog, task_id, end)
            read = time.monotonic()
            engines = {asset: self._new_domain(asset) for asset in self.topology.assets_of_task[task_id]}
            for asset, domain in engines.items():
                restore(domain.engine, state.entities.pop(asset, {}))
        task = Task(task_id, {}, end, SnapshotWriter.restored(state, s.snapshot_min_records, s.snapshot_chunk_entities),
                    state.seq)
        for asset, domain in engines.items():
            domain.offsets = dict(state.offsets.get(asset, {}))
            domain.committed = dict(domain.offsets)
            for (topic, partition), offset in domain.offsets.items():
                self.metrics.committed_offset.labels(asset, topic, str(partition)).set(offset)
            task.domains[asset] = domain
        self.metrics.restored.labels(self.changelog).inc(state.records)
        log.info("task_restored", task=task_id, changelog_records=state.records, discarded=state.discarded,
                 from_offset=state.start, duration_s=round(time.monotonic() - started, 3),
                 read_s=round(read - started, 3), load_s=round(time.monotonic() - read, 3),
                 input_offsets={d.asset or "(unrouted)": sum(d.offsets.values()) for d in task.domains.values()})
        return task

    def _new_domain(self, asset: str) -> Domain:
        engine = new_engine(self.settings, self.topology.symbols_of(asset))
        return Domain(asset, engine, EventTimeMerger(self._priority, self.settings.max_idle_ms))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Apply and commit what the merge may release; what stays buffered is dropped uncommitted
        # and read again from the committed offsets by whoever gets the task.
        if not self._failed and self._outage_since is None:
            self._drain_all(*self._fetch_state())
            self._commit()
        for tp in partitions:
            task = self.tasks.pop(tp.partition, None)
            if task is not None:
                for domain in task.domains.values():  # its lights are shown by the next owner
                    self.metrics.set_lights(domain.engine.symbols, {})
                    domain.lit = -1
            if task is not None and not self._failed:
                self._suspended[tp.partition] = task
        self._reposition()
        self._assigned = False
        self.health.set_ready(False)
        log.info("tasks_revoked", tasks=[tp.partition for tp in partitions])

    def _reposition(self) -> None:
        """Read every input partition from the lowest offset an owned asset still needs; start every
        merge afresh (what was buffered and not applied is read again)."""
        positions = {key: min((d.offsets.get(key, 0) for d in self.domains()), default=0) for key in self._inputs}
        for domain in self.domains():
            domain.merger = EventTimeMerger(self._priority, self.settings.max_idle_ms)
            domain.merger.assign(self._inputs)
            order = self._merge_order.get(domain.asset)
            if order:
                order.skip_applied(domain.offsets)
                domain.merger.follow(order)
        self._routed = dict(positions)
        if self.tasks:
            self.inputs.assign([TopicPartition(t, p, o) for (t, p), o in positions.items()])
        else:
            self.inputs.unassign()
            for topic, partition in self._inputs:
                try:
                    self.metrics.consumer_lag.remove(topic, str(partition))
                except KeyError:
                    pass  # no statistics came for it

    # -- the loop ------------------------------------------------------------------------------

    def _step(self) -> None:
        self.health.beat()
        self._log_no_progress()
        if self._outage_since is not None:
            self._recover()
            return
        try:
            self._advance()
        except Fenced:
            raise
        except (DeliveryFailed, KafkaException) as exc:
            if self._dry_run is not None:
                raise
            self._abandon_batch(exc)

    # -- a broker outage: abort, wait for the broker, go on from the last commit --------------------

    def _abandon_batch(self, exc: Exception) -> None:
        """A commit (or a rebalance's) failed for the broker: give up the batch and the state built
        since the last commit; :meth:`_recover` goes on from the last commit with a new producer."""
        now = time.monotonic()
        first = self._outage_since is None
        self._outage_since = self._outage_since if not first else now
        self._outage_error = f"{type(exc).__name__}: {exc}"
        if self.checkpoint.pending or self._uncommitted:
            self.metrics.transactions.labels("aborted").inc()
        log.warning("batch_abandoned", error=self._outage_error, uncommitted=self._uncommitted,
                    gives_up_after_s=self.settings.broker_outage_s,
                    hint="the broker is unreachable or failed this batch: its transaction is aborted, and the "
                    "work since the last commit is redone from there once the broker answers (broker_outage_s)")
        for task in self.tasks.values():
            for domain in task.domains.values():
                self.metrics.set_lights(domain.engine.symbols, {})
        self.tasks.clear()  # their state holds the abandoned batch: restored from the last commit
        self._suspended.clear()
        release()
        self._decided.clear()
        self._applied.clear()
        self._uncommitted = 0
        self._assigned = False
        self._producer_stale = True
        self.health.set_ready(False)

    def _recover(self) -> None:
        """While in an outage: a new producer (its init_transactions aborts the abandoned
        transaction on the broker), then the assigned tasks restored from the group's committed
        offsets. Gives up after ``broker_outage_s``."""
        s = self.settings
        waited = time.monotonic() - self._outage_since
        if waited > s.broker_outage_s:
            raise FatalError(f"the broker has been unreachable, or failing this instance's commits, for {waited:.0f}s: "
                             f"longer than broker_outage_s = {s.broker_outage_s} (ADL_BROKER_OUTAGE_S); last error: "
                             f"{self._outage_error}. Check the Kafka cluster; raise broker_outage_s to ride through "
                             "longer outages")
        try:
            self.consumer.poll(0)  # membership: heartbeats and rebalances (_on_assign defers to here)
            if self._producer_stale:  # a new one each attempt: a call may still run in the last
                producer = Producer(producer_config(s))
                self._left_behind.append(self._producer)  # not destroyed here, for the same reason
                self._producer = producer
                if s.exactly_once:
                    bounded(producer.init_transactions, self._call_timeout_s, timeout_s=self._call_timeout_s,
                            what="init_transactions")
                self._producer_stale = False
                self.checkpoint.replace_producer(producer)
            partitions = self.consumer.assignment()
            if not partitions:
                time.sleep(s.poll_timeout_ms / 1000)  # the group hands them out (_on_assign)
                return
            committed = self.consumer.committed(partitions, timeout=self._call_timeout_s)
            self._take_tasks([tp.partition for tp in committed], {tp.partition: tp.offset for tp in committed})
        except (KafkaException, DeliveryFailed, TimeoutError) as exc:
            if isinstance(exc, Fenced):
                raise
            self._outage_error = f"{type(exc).__name__}: {exc}"
            time.sleep(min(1.0, s.poll_timeout_ms / 1000 * 10))
            return
        log.info("broker_outage_over", outage_s=round(time.monotonic() - self._outage_since, 1),
                 tasks=sorted(self.tasks), hint="the abandoned batch is redone from the last commit")
        self._outage_since = None

    # -- the loop ------------------------------------------------------------------------------

    def _advance(self) -> None:
        if self.consumer is not None:
            self.consumer.poll(0)  # group membership: heartbeats and rebalances (the callbacks)
        if not self.tasks:
            self._log_joining()
            time.sleep(self.settings.poll_timeout_ms / 1000)
            return
        self._route_batch(self._consume(), time.monotonic())
        caught_up, unfetched = self._fetch_state()
        batch_size = self.settings.batch_size
        while True:  # a transaction holds at most batch_size records and stays open commit_interval_ms
            if not self._uncommitted:
                self._transaction_started = time.monotonic()
            deadline = self._transaction_started + self._commit_interval_s
            room = batch_size - self._uncommitted
            released, more = self._drain_all(caught_up, unfetched, room, deadline)
            self._uncommitted += released
            # A shortfall decision is not held for the interval once nothing more is released now,
            # nor for more than a DECISION_SHARE of it while records keep coming (_due).
            full = self._uncommitted >= batch_size
            if full or (self._uncommitted and time.monotonic() >= self._due(deadline)) or (self._decided and not more):
                self._commit(backlog=more or len(caught_up) < len(self._inputs))
            if not more:
                break
        self._count_applied()
        if not self._uncommitted and not any(len(d.merger) for d in self.domains()) and len(caught_up) == len(self._inputs):
            self._progress_at = time.monotonic()  # nothing waits: idle, not stalled

    def _count_applied(self) -> None:
        """Add the records applied since the last call to their counters (once per consumed batch,
        not per record: a label lookup costs more than applying a mark)."""
        for (counter, topic), count in self._applied.items():
            getattr(self.metrics, counter).labels(topic).inc(count)
        self._applied.clear()

    def _consume(self) -> list:
        """The input records there are, up to ``batch_size``, as soon as there is one: librdkafka's
        ``consume(n, timeout)`` waits out its timeout until ``n`` have come, which held a paced
        input up to ``poll_timeout_ms`` before it was even consumed. Waits at most until the open
        transaction's deadline, so that it commits on time when no input comes."""
        timeout = self.settings.poll_timeout_ms / 1000
        if self._read_ahead_records:  # read during the last commit, in the merges: no wait for more
            timeout, self._read_ahead_records = 0.0, 0
        elif self._uncommitted:
            timeout = min(timeout, max(0.0, self._transaction_started + self._commit_interval_s - time.monotonic()))
        messages = self.inputs.consume(1, timeout)
        if messages and self.settings.batch_size > 1:
            messages += self.inputs.consume(self.settings.batch_size - 1, 0)  # what is queued, no wait
        return messages

    def _log_no_progress(self) -> None:
        """While input waits and nothing is committed, every NO_PROGRESS_LOG_EVERY_S a line saying
        what the processor waits for."""
        if self._joining_since is not None:  # before the first tasks: waiting_for_tasks says so
            return
        now = time.monotonic()
        stalled = now - self._progress_at
        if stalled < NO_PROGRESS_LOG_EVERY_S or now - self._no_progress_logged < NO_PROGRESS_LOG_EVERY_S:
            return
        self._no_progress_logged = now
        log.warning("no_progress", stalled_s=round(stalled), waiting_for=self._waiting_for(),
                    uncommitted=self._uncommitted, buffered=sum(len(d.merger) for d in self.domains()))

    def _waiting_for(self) -> list[str]:
        """What holds the processor back, one line per partition or cause."""
        s = self.settings
        if self._outage_since is not None:
            return [(f"the broker ({self._outage_error}): the batch is redone from the last commit once it "
                     f"answers; exits after broker_outage_s = {s.broker_outage_s}s")]
        if not self.tasks:
            return [f"tasks from the consumer group {s.group_id!r} (rebalancing)"]
        caught_up, unfetched = self._fetch_state()
        held = sorted({f"{topic}[{partition}]: {reason}" for d in self.domains()
                       for (topic, partition), reason in d.merger.holding_back(unfetched, caught_up)})
        behind = sorted(f"{topic}[{partition}]: below its high watermark, nothing fetched"
                        for topic, partition in self._inputs if (topic, partition) not in caught_up
                        and (topic, partition) not in unfetched)
        return held or behind or [f"the commit of {self._uncommitted} records"]

    def _log_joining(self) -> None:
        """Every 5 s until the group first hands out the tasks, a line saying so."""
        if self._joining_since is None or self._assigned:
            self._joining_since = None
            return
        waited = time.monotonic() - self._joining_since
        if waited >= 5 * (self._joining_logged + 1):
            self._joining_logged += 1
            log.info("waiting_for_tasks", group_id=self.settings.group_id, waited_s=round(waited),
                     hint="the consumer group is forming; on Tansu that takes 20+ s unless [kafka] sets "
                     "session.timeout.ms = 6000 and heartbeat.interval.ms = 500 (adl-stream broker prints them)")

    def _route_batch(self, messages: list, consumed_at: float) -> None:
        """Hand each consumed record to the merge of its settle asset, if this instance owns it.

        One pass over the batch with the look-ups bound once (this runs for every input record):
        the messages' fields are read by C-level maps, the settle asset of a key and the domain of
        an asset are looked up once per batch, the topic's kind once per run of one partition. The
        values are decoded before, per topic, column by column (``Codec.decode_all``)."""
        errors = list(map(Message.error, messages))
        if errors.count(None) != len(errors):
            kept = []
            for message, error in zip(messages, errors):
                if error is None:
                    kept.append(message)
                elif error.fatal():
                    raise FatalError(f"fatal Kafka error: {error}")
                else:
                    log.warning("consumer_error", error=str(error))
            messages = kept
        topics = list(map(Message.topic, messages))
        partitions = list(map(Message.partition, messages))
        offsets = list(map(Message.offset, messages))
        records = self._decode_batch(messages, topics)
        routed, record_types, topology = self._routed, self._record_type, self.topology
        tasks, n_tasks = self.tasks, topology.tasks
        asset_of_key, asset_of_record = topology.asset_of_key, topology.asset_of_record
        asset_of_symbol, asset_of_fund = topology.asset_of_symbol, topology.asset_of_fund
        of_key: dict = {}  # (topic, key) -> settle asset
        domain_of: dict = {}  # settle asset -> its domain here, or None (owned elsewhere)
        key = None
        for message, record, topic, partition, offset in zip(messages, records, topics, partitions, offsets):
            if key is None or partition != key[1] or topic != key[0]:  # a run of one partition begins
                key = (topic, partition)
                by_value = record_types[topic] is BalanceUpdate  # keyed by account: the asset is in the value
                by_fund = topic == self._fund_topic
            routed[key] = offset + 1
            rejected = isinstance(record, Rejected)
            if by_value:
                asset = UNROUTED if rejected else asset_of_record(record)
            else:
                raw_key = message.key()
                asset = of_key.get((topic, raw_key))
                if asset is None:
                    asset = of_key[(topic, raw_key)] = asset_of_key(by_fund, raw_key)
                if not rejected:
                    named = (asset_of_fund.get(record.fund_id, UNROUTED) if by_fund
                             else asset_of_symbol.get(record.symbol, UNROUTED))
                    if named != asset:
                        record, rejected = Rejected("key_mismatch", f"the key {raw_key!r} routes to settle asset "
                                                    f"{asset!r}, the record to {named!r}"), True
            domain = domain_of.get(asset, False)
            if domain is False:
                task = tasks.get(task_of(asset, n_tasks))
                domain = domain_of[asset] = None if task is None else task.domains[asset]
            if domain is None:
                continue
            if offset < domain.offsets.get(key, 0):
                continue  # applied before (the partition is read from the lowest offset any asset needs)
            domain.merger.add(key, offset, None if rejected else record.ts, (message, record, consumed_at, key, offset))

    def _decode_batch(self, messages: list, topics: list[str]) -> list:
        """The record (or the :class:`Rejected` refusal) of each message's value (``topics`` their
        topics), in order. Each topic's values are decoded in one call."""
        distinct = set(topics)
        if len(distinct) == 1:  # (most batches: one topic's records, decoded in their order)
            (topic,) = distinct
            return self.codec.decode_all(list(map(Message.value, messages)), self._record_type[topic])
        rows_of: dict[str, list[int]] = {}
        for row, topic in enumerate(topics):
            rows_of.setdefault(topic, []).append(row)
        out: list = [None] * len(messages)
        for topic, rows in rows_of.items():
            decoded = self.codec.decode_all([messages[row].value() for row in rows], self._record_type[topic])
            for row, record in zip(rows, decoded):
                out[row] = record
        return out

    def _drain_all(self, caught_up: frozenset[PartitionKey], unfetched: frozenset[PartitionKey],
                   limit: int | None = None, deadline: float | None = None, going=None) -> tuple[int, bool]:
        """Apply what the merges release (settle assets in a fixed order), up to ``limit`` records
        or until ``deadline`` (monotonic clock) or until ``going()`` turns false (both checked
        every few records). Returns the records applied and whether it stopped before the merges
        had released all they could (more may be released)."""
        if (limit is not None and limit <= 0) or (deadline is not None and time.monotonic() >= self._due(deadline)):
            return 0, True  # full or due already (with the records applied during a commit: _work_ahead)
        count = 0
        for domain in self.domains():
            # A partition no fetch has answered for yet is waited for without a time limit: whether
            # it holds older records is unknown (KIP-695 waits on unknown lag the same way).
            process = self._process
            for item in domain.merger.release(unfetched, caught_up):
                process(domain, *item)
                count += 1
                if count == limit or (deadline is not None and count % _CLOCK_EVERY == 0 and (
                        time.monotonic() >= self._due(deadline) or (going is not None and not going()))):
                    return count, True
        return count, False

    def _due(self, deadline: float) -> float:
        """When the open transaction commits: its ``deadline``, or earlier once it holds a decision."""
        if self._decided:
            return min(deadline, self._decided_at + self._commit_interval_s / DECISION_SHARE)
        return deadline

    def _commit(self, backlog: bool = False) -> None:
        """Commit the open transaction. ``backlog`` (more input is waiting: released by the merges,
        or behind the consumer's position): while the broker commits it, the next transaction's
        work goes on (:meth:`_work_ahead`), its outputs held until that transaction begins, so that
        the commit's broker calls (about 7 ms) do not stop the loop. Not for a transaction committed
        with nothing waiting (a paced input), whose decisions then are visible as soon as the broker
        has them."""
        if self._dry_run is None:
            self._write_changelog()
        else:  # no changelog to record the merge order in
            for domain in self.domains():
                domain.merger.take_runs()
        decided, self._decided = self._decided, []  # those of this transaction (work ahead decides more)
        if backlog and self._dry_run is None and self.checkpoint.pending:
            committed, (self._read_ahead_records, ahead) = self.checkpoint.commit_while(self._work_ahead)
        else:
            committed, ahead = self.checkpoint.commit(), 0
        self._uncommitted = ahead
        if committed:
            self._progress_at = time.monotonic()
        settle()
        self._count_applied()
        m = self.metrics
        for task in self.tasks.values():
            end = self.checkpoint.committed_marks.get((self.changelog, task.id))
            if end is not None:
                task.committed_end = end
                task.snapshots.committed()
                for domain in task.domains.values():
                    for (topic, partition), offset in domain.committed.items():
                        m.committed_offset.labels(domain.asset, topic, str(partition)).set(offset)
        for fund_id, balance in self.fund_balances().items():
            m.fund_balance.labels(fund_id).set(float(balance))
        m.reservations_open.set(sum(len(d.engine.reservations) for d in self.domains()))
        self._show_lights()
        if decided:  # their decisions and orders are visible from now on
            now, wall = time.monotonic(), time.time()
            for symbol, consumed_at, ts in decided:
                m.shortfall_processing.labels(symbol).observe(now - consumed_at)
                m.event_to_output.labels(symbol).observe(max(0.0, wall - ts / 1000))

    def _work_ahead(self, committing) -> tuple[int, int]:
        """While a transaction commits (``committing()`` is true until it has): the input queued in
        the consumer is read and routed into the merges, then what they release is applied, into
        the next transaction, until the commit is done (or that transaction is full or due). Its
        outputs are held by the checkpoint until the next transaction begins. Returns (records
        read, records applied)."""
        messages = self.inputs.consume(self.settings.batch_size, 0)
        if messages:
            self._route_batch(messages, time.monotonic())
        self._transaction_started = time.monotonic()
        caught_up, unfetched = self._fetch_state()
        applied, _ = self._drain_all(caught_up, unfetched, self.settings.batch_size,
                                     self._transaction_started + self._commit_interval_s, committing)
        return len(messages), applied

    def _show_lights(self) -> None:
        """The lights gauge of every engine that made an indicator pass since it was last set."""
        interval = self.settings.indicator_interval_ms
        for domain in self.domains() if interval else ():
            if domain.engine.stream_time // interval != domain.lit:
                domain.lit = domain.engine.stream_time // interval
                self.metrics.set_lights(domain.engine.symbols, domain.engine.indicators.counts)

    def _write_changelog(self) -> None:
        """Produce, per owned task, the entities changed, the next chunk of a snapshot (when one is
        due or in progress) and its commit marker (when anything moved)."""
        self._commits += 1
        headers = [(TXN_HEADER, f"{self._run_id}:{self._commits}".encode())]
        for task_id in sorted(self.tasks):
            task = self.tasks[task_id]

            def produce(raw_key, raw_value, on_offset=None, task_id=task_id):
                self.checkpoint.produce(self.changelog, raw_key, raw_value, headers + BATCH_HEADERS,
                                        partition=task_id, on_offset=on_offset)

            written = write_changes(produce, task.seq, {d.asset: d.engine for d in task.domains.values()})
            moved = False
            for domain in task.domains.values():
                for key, routed in self._routed.items():  # nothing of this asset is buffered below it
                    if routed > domain.offsets.get(key, 0) and not domain.merger.buffered(key):
                        domain.offsets[key] = routed
                moved = moved or domain.offsets != domain.committed
            snapshots = task.snapshots
            chunks = snapshots.step(produce, written, [(d.engine, d.asset) for d in task.domains.values()])
            if chunks:
                self.metrics.snapshot_records.labels(self.changelog).inc(chunks)
            if moved or written or chunks:
                for domain in task.domains.values():
                    domain.committed = dict(domain.offsets)
                offsets = {d.asset: d.offsets for d in task.domains.values()}
                merged = encode_runs({d.asset: d.merger.take_runs() for d in task.domains.values()}, offsets)
                self.checkpoint.produce(self.changelog, marker_key(task.seq), encode_marker(offsets),
                                        headers + snapshots.marker_headers(task.seq) + [(MERGE_HEADER, merged)],
                                        partition=task_id, mark=True)
                task.seq += 1
                snapshots.marked()

    def _on_stats(self, raw: str) -> None:
        """librdkafka statistics (every ``statistics.interval.ms``): the lag of each assigned partition.

        The lag is the last stable offset (``read_committed``) minus the position of the input
        consumer (from the low watermark while it has consumed nothing). Not the statistics' own
        ``consumer_lag``: it counts from a committed offset, and the input consumer commits none."""
        for topic, of_topic in json.loads(raw).get("topics", {}).items():
            for partition, stats in of_topic.get("partitions", {}).items():
                if partition == "-1" or not stats.get("desired"):
                    continue
                end, position, low = stats.get("ls_offset", -1), stats.get("app_offset", -1), stats.get("lo_offset", -1)
                position = position if position >= 0 else low
                if end >= 0 and position >= 0:
                    self.metrics.consumer_lag.labels(topic, partition).set(max(0, end - position))

    def _fetch_state(self) -> tuple[frozenset[PartitionKey], frozenset[PartitionKey]]:
        """(caught up, unfetched): input partitions whose position reached the high watermark of
        their last fetch, and those no fetch has answered for yet."""
        caught_up, unfetched = set(), set()
        if not self.tasks:
            return frozenset(), frozenset()
        for tp in self.inputs.position([TopicPartition(t, p) for t, p in self._inputs]):
            # The consumer's position (past transaction markers too) is unknown until it returns a
            # record; where it was assigned is then the position.
            key = (tp.topic, tp.partition)
            _, high = self.inputs.get_watermark_offsets(tp, cached=True)
            if high < 0:
                unfetched.add(key)
            elif max(tp.offset, self._routed.get(key, 0)) >= high:
                caught_up.add(key)
        return frozenset(caught_up), frozenset(unfetched)

    def _caught_up_everywhere(self) -> bool:
        """Tasks assigned, every input consumed to its last fetched high watermark and applied."""
        if not self._assigned or any(len(d.merger) for d in self.domains()):
            return False
        return len(self._fetch_state()[0]) == len(self._inputs)

    def _process(self, domain: Domain, message, record, consumed_at: float, key: PartitionKey, offset: int) -> None:
        """Apply one released record (``key`` its topic and partition) and emit its outputs."""
        topic, partition = key
        domain.offsets[key] = offset + 1
        live_from = self._live_from
        live = not live_from or offset >= live_from.get(key, 0)
        try:
            if isinstance(record, Rejected):
                raise record
            outcome = self.apply_record(domain.engine, record, received_ts(message, domain.engine))
        except Rejected as rejected:
            if live:
                if rejected.outcome is not None:  # what its time did before it was refused
                    self._emit(topic, rejected.outcome, consumed_at)
                self._dead_letter(message, rejected)
            return
        except Exception as exc:  # a bug: not the record's fault as far as anyone knows
            if self.settings.on_internal_error != "dead-letter":
                raise InternalError(topic, partition, offset, exc) from exc
            log.error("internal_error_dead_lettered", topic=topic, partition=partition, offset=offset,
                      error=f"{type(exc).__name__}: {exc}", exc_info=exc)
            if live:
                self._dead_letter(message, Rejected("internal_error", f"{type(exc).__name__}: {exc}"))
            return
        counted = ("events", topic) if live else ("restored", topic)  # replay: below the start, state only
        applied = self._applied
        applied[counted] = applied.get(counted, 0) + 1
        if live and (outcome.orders or outcome.decision is not None or outcome.expired or outcome.indicators
                     or outcome.duplicate):  # most records have no output
            self._emit(topic, outcome, consumed_at)

    def _emit(self, topic: str, outcome: Outcome, consumed_at: float) -> None:
        m, topics = self.metrics, self.settings.topics
        if outcome.duplicate:
            m.duplicates.labels(topic).inc()
        for reservation in outcome.expired:
            m.reservations_expired.labels(reservation.position.symbol).inc()
            log.warning("reservation_expired", order_id=reservation.order_id,
                        account_id=reservation.position.account_id, quantity=reservation.quantity)
        lights = outcome.indicators  # a pass at an interval crossed: before this record's own effect
        if lights:  # (None: a tombstone)
            self.checkpoint.produce_all(topics.adl_indicators, map(_KEY, lights),
                                        self.codec.encode_all(lights, AdlIndicator), map(_TS, lights))
        if outcome.orders:
            produce, encode = self.checkpoint.produce, self.codec.encode
            for order in outcome.orders:
                produce(topics.adl_orders, order.symbol, encode(order))
            for symbol, run in groupby(outcome.orders, attrgetter("symbol")):  # (one: a decision's symbol)
                run = list(run)  # the counters' children looked up once per decision, not per order
                m.orders.labels(symbol).inc(len(run))
                m.adl_quantity.labels(symbol).inc(sum(float(order.quantity) for order in run))
                m.adl_notional.labels(symbol).inc(sum(float(order.quantity * order.price) for order in run))
        decision = outcome.decision
        if decision is not None:
            self.checkpoint.produce(topics.adl_decisions, decision.symbol, self.codec.encode(decision))
            m.shortfalls.labels(decision.symbol, decision.outcome).inc()
            if decision.haircut:  # a counter only rises: a haircut below 0 goes to its own
                haircut = m.haircut if decision.haircut > 0 else m.haircut_negative
                haircut.labels(decision.symbol).inc(abs(float(decision.haircut)))
            if not self._decided:
                self._decided_at = time.monotonic()
            self._decided.append((decision.symbol, consumed_at, decision.ts))
            if decision.unfilled_quantity:
                m.unfilled_quantity.labels(decision.symbol).inc(float(decision.unfilled_quantity))
            log.info("shortfall_decided", event_id=decision.event_id, symbol=decision.symbol,
                     bankrupt_account_id=decision.bankrupt_account_id, outcome=decision.outcome,
                     fund_covered=decision.fund_covered, adl_quantity=decision.adl_quantity,
                     unfilled_quantity=decision.unfilled_quantity, order_ids=list(decision.order_ids),
                     haircut=decision.haircut,
                     fund_balance_after=decision.fund_balance_after)  # decimals written by logs.py

    def _dead_letter(self, message, rejected: Rejected) -> None:
        topic = message.topic()
        headers = [
            ("error", rejected.args[0].encode()),
            ("error.reason", rejected.reason.encode()),
            ("source.topic", topic.encode()),
            ("source.partition", str(message.partition()).encode()),
            ("source.offset", str(message.offset()).encode()),
        ]
        self.checkpoint.produce(self.settings.topics.adl_dlq, message.key(), message.value(), headers)
        self.metrics.dead_letters.labels(rejected.reason, topic).inc()
        log.warning("dead_letter", reason=rejected.reason, detail=rejected.detail, topic=topic,
                    partition=message.partition(), offset=message.offset())
