"""``adl-stream run``: the consume -> decode -> apply -> produce -> commit loop.

The engine is the only place that computes; this module moves bytes. Each consumed batch is
decoded and merged across partitions in event-time order (:mod:`.merge`); released records are
applied and their outputs produced, and every ``batch_size`` records or ``commit_interval_ms``
(whichever comes first) the :class:`Checkpoint` commits outputs and input offsets together (a
Kafka transaction; or, at-least-once, offsets after acknowledged outputs).

State is rebuilt from the input topics: the first time this process is assigned a partition it
reads it from the beginning, re-applying the records below the group's committed offset to the
engine without producing anything (restore), and processing live from there. While a partition
restores, the merge waits for it, so restored records are applied in the same order on every run.
``/readyz`` turns ready once every assigned partition has passed its committed offset.
"""

from __future__ import annotations

import json
import threading
import time

import structlog
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from ..engine import (
    BalanceUpdate,
    Engine,
    Fill,
    FundFlow,
    LiquidationShortfall,
    MarkPrice,
    Outcome,
    Rejected,
)
from ..wire import Codec
from .checkpoint import Checkpoint, DeliveryFailed, Fenced
from .config import Settings, redacted
from .kafka import check_topics, consumer_config, producer_config
from .merge import EventTimeMerger
from .metrics import HealthServer, ProcessorMetrics
from .replay import PrintingCheckpoint

log = structlog.get_logger("adl_stream.processor")

EXIT_OK, EXIT_FATAL, EXIT_FENCED = 0, 1, 3


class FatalError(RuntimeError):
    pass


class Processor:
    def __init__(self, settings: Settings, metrics: ProcessorMetrics | None = None, codec: Codec | None = None,
                 start_at=None, until_caught_up: bool = False, dry_run=None) -> None:
        """``start_at(consumer, partitions) -> {(topic, partition): offset}`` sets where output
        starts for partitions the group has no committed offset for (replay); ``until_caught_up``
        stops once every input is consumed; ``dry_run`` is a text stream that receives the outputs
        as JSON lines instead of Kafka (no producer, no commits)."""
        self._start_at = start_at
        self._until_caught_up = until_caught_up
        self._dry_run = dry_run
        self.settings = settings
        self.metrics = metrics or ProcessorMetrics()
        self.codec = codec or Codec()
        self.engine = Engine(
            settings.symbols,
            trigger=settings.trigger(),
            ranking=settings.ranking(),
            reservation_timeout_ms=settings.reservation_timeout_ms,
            dedup_window_ms=settings.dedup_window_ms,
        )
        t = settings.topics
        self._record_type = {
            t.fills: Fill,
            t.mark_prices: MarkPrice,
            t.balances: BalanceUpdate,
            t.insurance_fund: FundFlow,
            t.liquidation_shortfalls: LiquidationShortfall,
        }
        # Same event time: funds and wallets first, then marks and fills, shortfalls last.
        self._merger = EventTimeMerger({t.insurance_fund: 0, t.balances: 1, t.mark_prices: 2, t.fills: 3,
                                        t.liquidation_shortfalls: 4}, settings.max_idle_ms)
        self._restored: set[tuple[str, int]] = set()  # partitions whose state this process has rebuilt
        self._resume: dict[tuple[str, int], int] = {}  # partitions restoring: their committed offset
        self._live_from: dict[tuple[str, int], int] = {}  # below this offset, apply without output
        self._restore_started: float | None = None
        self._assigned: list[TopicPartition] = []
        self._uncommitted = 0  # records applied since the last commit
        self._transaction_started = 0.0
        self._commit_interval_s = settings.commit_interval_ms / 1000
        self.health: HealthServer | None = None
        self.consumer: Consumer | None = None
        self._failed = False
        self._decided: list[tuple[str, float, int]] = []  # shortfalls decided, not yet committed

    # -- lifecycle -----------------------------------------------------------------------------

    def run(self, stop: threading.Event | None = None) -> int:
        """Process until ``stop`` is set; return the process exit code."""
        stop = stop or threading.Event()
        s = self.settings
        log.info("starting", bootstrap_servers=s.bootstrap_servers, group_id=s.group_id,
                 policy=self.engine.policy, symbols=sorted(s.symbols), kafka=redacted(s.kafka))
        partitions = check_topics(s)
        self.health = HealthServer(self.metrics, s.metrics_host, s.metrics_port).start()
        log.info("metrics_serving", port=self.health.port, partitions=partitions)
        self.metrics.start_series(s.symbols, float(s.fund_floor) if s.trigger_policy == "fund-floor" else 0.0)
        self.consumer = Consumer({"statistics.interval.ms": 5000, **consumer_config(s), "stats_cb": self._on_stats})
        if self._dry_run is not None:
            producer = None
            self.checkpoint = PrintingCheckpoint(self._dry_run, self.codec, s.topics)
        else:
            producer = Producer(producer_config(s))
            if s.exactly_once:
                producer.init_transactions(s.startup_timeout_s)  # fences an earlier instance of this id
            self.checkpoint = Checkpoint(producer, self.consumer, transactional=s.exactly_once,
                                         transactions=self.metrics.transactions)
        self.consumer.subscribe(list(s.topics.inputs()), on_assign=self._on_assign, on_revoke=self._on_revoke)
        code = EXIT_OK
        try:
            while not stop.is_set():
                self._step()
                if self._until_caught_up and self._caught_up_everywhere():
                    log.info("caught_up", restored=self.metrics.total("adl_restore_events_total"),
                             processed=self.metrics.total("adl_events_processed_total"))
                    break
        except Fenced as exc:
            log.error("fenced", error=str(exc), transactional_id=s.transactional_id,
                      hint="another instance runs with this group_id and instance_id; this one stops "
                      "without producing")
            code = EXIT_FENCED
        except (FatalError, DeliveryFailed) as exc:
            log.error("fatal", error=str(exc), hint="offsets of the failed batch were not committed; "
                      "a restart processes it again")
            code = EXIT_FATAL
        except Exception:
            log.exception("internal_error", hint="offsets of the failed batch were not committed")
            code = EXIT_FATAL
        finally:
            if code == EXIT_OK:
                self._commit()
            else:
                self.checkpoint.abort()
                self._decided.clear()
                self._failed = True  # close() revokes: nothing more may be applied or committed
            self.consumer.close()
            if producer is not None and code == EXIT_OK:
                # Only after a clean commit: after a fatal error (fencing) the outputs belong to
                # an aborted transaction, and flushing a fatally failed producer raises.
                producer.flush(10)
            self.health.set_ready(False)
            self.health.stop()
            log.info("stopped", exit_code=code)
        return code

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        committed = consumer.committed(partitions, timeout=30)
        starts = self._start_at(consumer, committed) if self._start_at else {}
        for tp in committed:
            key = (tp.topic, tp.partition)
            if key in self._restored:
                continue  # state already rebuilt by this process: resume at the committed offset
            # Not yet rebuilt (first assignment, or revoked before its restore finished): read the
            # partition from its start; below the committed offset, apply without output.
            self._resume.pop(key, None)
            offset = tp.offset if tp.offset >= 0 else starts.get(key, 0)  # a resumed replay keeps its commits
            self._live_from[key] = offset
            if offset > 0:
                low, _ = consumer.get_watermark_offsets(tp, timeout=10)
                if low > 0:
                    log.warning("restore_incomplete", topic=tp.topic, partition=tp.partition, low_watermark=low,
                                hint="retention removed the start of the topic; state before it is lost")
                self._resume[key] = offset
            else:
                self._restored.add(key)  # nothing committed: nothing to rebuild
            tp.offset = OFFSET_BEGINNING
        if self._resume and self._restore_started is None:
            self._restore_started = time.monotonic()
        consumer.assign(committed)
        self._assigned = committed
        self._merger.assign((tp.topic, tp.partition) for tp in committed)
        log.info("partitions_assigned", partitions=[f"{tp.topic}[{tp.partition}]" for tp in committed],
                 restoring=len(self._resume))
        self._update_readiness(self._restoring())

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Apply and commit what the merge may release (a restoring partition is still waited for:
        # the order must not depend on the rebalance); what stays buffered is dropped uncommitted
        # and read again from the committed offset by whoever gets the partition.
        if not self._failed:
            self._drain(self._restoring(), self._caught_up())
            self._commit()
        self._merger.drop((tp.topic, tp.partition) for tp in partitions)
        for tp in partitions:
            try:
                self.metrics.consumer_lag.remove(tp.topic, str(tp.partition))
            except KeyError:
                pass  # no statistics came for it
        self._assigned = []
        self.health.set_ready(False)
        log.info("partitions_revoked", partitions=[f"{tp.topic}[{tp.partition}]" for tp in partitions])

    def _restoring(self) -> frozenset[tuple[str, int]]:
        """Restoring partitions not yet fetched up to their committed offset (the merge waits)."""
        if not self._resume:
            return frozenset()
        positions = self.consumer.position([TopicPartition(t, p) for t, p in self._resume])
        return frozenset((tp.topic, tp.partition) for tp in positions if tp.offset < self._resume[(tp.topic, tp.partition)])

    def _update_readiness(self, waiting: frozenset[tuple[str, int]] = frozenset()) -> None:
        for key in [k for k in self._resume if k not in waiting and not self._merger.buffered(k)]:
            del self._resume[key]  # fetched past the committed offset and all of it applied
            self._restored.add(key)
            log.info("partition_restored", topic=key[0], partition=key[1], offset=self._live_from[key])
        if not self._resume and self._restore_started is not None:
            duration, self._restore_started = time.monotonic() - self._restore_started, None
            self.metrics.restore_duration.set(duration)
            log.info("restore_completed", duration_s=round(duration, 3), records=self.metrics.total("adl_restore_events_total"))
        self.health.set_ready(bool(self._assigned) and not self._resume)

    # -- the loop ------------------------------------------------------------------------------

    def _step(self) -> None:
        messages = self.consumer.consume(self.settings.batch_size, self.settings.poll_timeout_ms / 1000)
        consumed_at = time.monotonic()
        self.health.beat()
        for message in messages:
            error = message.error()
            if error is not None:
                if error.fatal():
                    raise FatalError(f"fatal Kafka error: {error}")
                log.warning("consumer_error", error=str(error))
                continue
            topic = message.topic()
            try:
                record = self.codec.decode(message.value(), self._record_type[topic])
            except Rejected as rejected:
                record = rejected
            self._merger.add(topic, message.partition(), message.offset(), getattr(record, "ts", None),
                             (message, record, consumed_at))
        waiting = self._restoring()
        caught_up = self._caught_up()
        batch_size = self.settings.batch_size
        while True:  # a transaction holds at most batch_size records and stays open commit_interval_ms
            room = batch_size - self._uncommitted
            released = self._drain(waiting, caught_up, room)
            if released and not self._uncommitted:
                self._transaction_started = time.monotonic()
            self._uncommitted += released
            if self._uncommitted >= batch_size or (
                self._uncommitted and time.monotonic() - self._transaction_started >= self._commit_interval_s
            ):
                self._commit()
            if released < room:
                break
        if self._resume or not self.health.ready:
            self._update_readiness(waiting)

    def _commit(self) -> None:
        self.checkpoint.commit()
        self._uncommitted = 0
        m = self.metrics
        for fund_id, balance in self.engine.funds.balances().items():
            m.fund_balance.labels(fund_id).set(float(balance))
        m.reservations_open.set(len(self.engine.reservations))
        if self._decided:  # their decisions and orders are visible from now on
            now, wall = time.monotonic(), time.time()
            for symbol, consumed_at, ts in self._decided:
                m.shortfall_processing.labels(symbol).observe(now - consumed_at)
                m.event_to_output.labels(symbol).observe(max(0.0, wall - ts / 1000))
            self._decided.clear()

    def _on_stats(self, raw: str) -> None:
        """librdkafka statistics (every ``statistics.interval.ms``): the lag of each assigned partition.

        The lag is the last stable offset (``read_committed``) minus the position of this consumer
        (from the low watermark while it has consumed nothing: a restore reads from there). Not the
        statistics' own ``consumer_lag``: it counts from the committed offset, which a
        transactional processor commits through its producer, so the consumer never learns it."""
        for topic, of_topic in json.loads(raw).get("topics", {}).items():
            for partition, stats in of_topic.get("partitions", {}).items():
                if partition == "-1" or not stats.get("desired"):
                    continue
                end, position, low = stats.get("ls_offset", -1), stats.get("app_offset", -1), stats.get("lo_offset", -1)
                position = position if position >= 0 else low
                if end >= 0 and position >= 0:
                    self.metrics.consumer_lag.labels(topic, partition).set(max(0, end - position))

    def _caught_up(self) -> frozenset[tuple[str, int]]:
        """Empty partitions whose position reached the high watermark of their last fetch."""
        empty = [TopicPartition(t, p) for t, p in self._merger.empty()]
        if not empty:
            return frozenset()
        caught_up = set()
        for tp in self.consumer.position(empty):
            _, high = self.consumer.get_watermark_offsets(tp, cached=True)
            if high >= 0 and (tp.offset >= high or (high == 0 and tp.offset < 0)):
                caught_up.add((tp.topic, tp.partition))
        return frozenset(caught_up)

    def _caught_up_everywhere(self) -> bool:
        """Every assigned partition restored, consumed to its last fetched high watermark, applied."""
        if not self._assigned or self._resume or len(self._merger):
            return False
        return len(self._caught_up()) == len(self._assigned)


    def _drain(self, waiting: frozenset[tuple[str, int]], caught_up: frozenset[tuple[str, int]] = frozenset(),
               limit: int | None = None) -> int:
        """Apply what the merge releases, up to ``limit`` records; return how many that was."""
        count = 0
        for message, record, consumed_at in self._merger.release(waiting, caught_up):
            self._process(message, record, consumed_at)
            count += 1
            if count == limit:
                break
        return count

    def _process(self, message, record, consumed_at: float) -> None:
        topic, partition, offset = message.topic(), message.partition(), message.offset()
        live = offset >= self._live_from.get((topic, partition), 0)
        try:
            if isinstance(record, Rejected):
                raise record
            outcome = self.engine.apply(record)
        except Rejected as rejected:
            if live:
                self._dead_letter(message, rejected)
                self.checkpoint.processed(topic, partition, offset)
            return
        if not live:  # restore: already committed; its offset must never move the commit back
            self.metrics.restored.labels(topic).inc()
            return
        self.metrics.events.labels(topic).inc()
        self._emit(topic, outcome, consumed_at)
        self.checkpoint.processed(topic, partition, offset)

    def _emit(self, topic: str, outcome: Outcome, consumed_at: float) -> None:
        m, topics = self.metrics, self.settings.topics
        if outcome.duplicate:
            m.duplicates.labels(topic).inc()
        for reservation in outcome.expired:
            m.reservations_expired.labels(reservation.position.symbol).inc()
            log.warning("reservation_expired", order_id=reservation.order_id,
                        account_id=reservation.position.account_id, quantity=str(reservation.quantity))
        for order in outcome.orders:
            self.checkpoint.produce(topics.adl_orders, order.symbol, self.codec.encode(order))
            m.orders.labels(order.symbol).inc()
            m.adl_quantity.labels(order.symbol).inc(float(order.quantity))
            m.adl_notional.labels(order.symbol).inc(float(order.quantity * order.price))
        decision = outcome.decision
        if decision is not None:
            self.checkpoint.produce(topics.adl_decisions, decision.symbol, self.codec.encode(decision))
            m.shortfalls.labels(decision.symbol, decision.outcome).inc()
            self._decided.append((decision.symbol, consumed_at, decision.ts))
            if decision.unfilled_quantity:
                m.unfilled_quantity.labels(decision.symbol).inc(float(decision.unfilled_quantity))
            log.info("shortfall_decided", event_id=decision.event_id, symbol=decision.symbol,
                     bankrupt_account_id=decision.bankrupt_account_id, outcome=decision.outcome,
                     fund_covered=str(decision.fund_covered), adl_quantity=str(decision.adl_quantity),
                     unfilled_quantity=str(decision.unfilled_quantity), order_ids=list(decision.order_ids),
                     fund_balance_after=str(decision.fund_balance_after))

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
