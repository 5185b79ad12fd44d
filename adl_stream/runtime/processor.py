"""``adl-stream run``: the consume -> decode -> apply -> produce -> commit loop.

The engine is the only place that computes; this module moves bytes. A batch is processed in the
order the consumer returns it, its outputs are produced, and the :class:`Checkpoint` commits the
offsets once every output is acknowledged (at-least-once).

State is rebuilt from the input topics: the first time this process is assigned a partition it
reads it from the beginning, re-applying the records below the group's committed offset to the
engine without producing anything (restore), and processing live from there. ``/readyz`` turns
ready once every assigned partition has passed its committed offset.
"""

from __future__ import annotations

import threading
import time

import structlog
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition

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
from .checkpoint import Checkpoint
from .config import Settings, redacted
from .kafka import check_topics, consumer_config, producer_config
from .metrics import HealthServer, ProcessorMetrics

log = structlog.get_logger("adl_stream.processor")

EXIT_OK, EXIT_FATAL = 0, 1


class FatalError(RuntimeError):
    pass


class Processor:
    def __init__(self, settings: Settings, metrics: ProcessorMetrics | None = None, codec: Codec | None = None) -> None:
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
        self._restored: set[tuple[str, int]] = set()  # partitions whose state this process rebuilt
        self._resume: dict[tuple[str, int], int] = {}  # committed offset: below it, restore only
        self._assigned: list[TopicPartition] = []
        self.health: HealthServer | None = None
        self.consumer: Consumer | None = None

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
        self.consumer = Consumer(consumer_config(s))
        producer = Producer(producer_config(s))
        self.checkpoint = Checkpoint(producer, self.consumer)
        self.consumer.subscribe(list(s.topics.inputs()), on_assign=self._on_assign, on_revoke=self._on_revoke)
        code = EXIT_OK
        try:
            while not stop.is_set():
                self._step()
        except FatalError as exc:
            log.error("fatal", error=str(exc), hint="offsets of the failed batch were not committed; "
                      "a restart processes it again")
            code = EXIT_FATAL
        except Exception:
            log.exception("internal_error", hint="offsets of the failed batch were not committed")
            code = EXIT_FATAL
        finally:
            if code == EXIT_OK:
                self.checkpoint.commit()
            self.consumer.close()
            producer.flush(10)
            self.health.set_ready(False)
            self.health.stop()
            log.info("stopped", exit_code=code)
        return code

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        committed = consumer.committed(partitions, timeout=30)
        for tp in committed:
            key = (tp.topic, tp.partition)
            if key in self._restored:
                continue  # state already rebuilt here: resume at the committed offset
            if tp.offset >= 0:
                low, _ = consumer.get_watermark_offsets(tp, timeout=10)
                if low > 0:
                    log.warning("restore_incomplete", topic=tp.topic, partition=tp.partition, low_watermark=low,
                                hint="retention removed the start of the topic; state before it is lost")
                if tp.offset > low:
                    self._resume[key] = tp.offset
            tp.offset = OFFSET_BEGINNING
            self._restored.add(key)
        consumer.assign(committed)
        self._assigned = committed
        log.info("partitions_assigned", partitions=[f"{tp.topic}[{tp.partition}]" for tp in committed],
                 restoring=len(self._resume))
        self._update_readiness()

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.checkpoint.commit()
        self._assigned = []
        self.health.set_ready(False)
        log.info("partitions_revoked", partitions=[f"{tp.topic}[{tp.partition}]" for tp in partitions])

    def _update_readiness(self) -> None:
        if self._resume:
            positions = self.consumer.position([TopicPartition(t, p) for t, p in self._resume])
            for tp in positions:
                if tp.offset >= self._resume[(tp.topic, tp.partition)]:
                    del self._resume[(tp.topic, tp.partition)]
                    log.info("partition_restored", topic=tp.topic, partition=tp.partition, offset=tp.offset)
        self.health.set_ready(bool(self._assigned) and not self._resume)

    # -- the loop ------------------------------------------------------------------------------

    def _step(self) -> None:
        messages = self.consumer.consume(self.settings.batch_size, self.settings.poll_timeout_ms / 1000)
        self.health.beat()
        for message in messages:
            error = message.error()
            if error is not None:
                if error.fatal():
                    raise FatalError(f"fatal Kafka error: {error}")
                log.warning("consumer_error", error=str(error))
                continue
            self._process(message)
        if messages:
            self.checkpoint.commit()
            for fund_id, balance in self.engine.funds.balances().items():
                self.metrics.fund_balance.labels(fund_id).set(float(balance))
        if self._resume or not self.health.ready:
            self._update_readiness()

    def _process(self, message) -> None:
        topic, partition, offset = message.topic(), message.partition(), message.offset()
        live = offset >= self._resume.get((topic, partition), 0)
        try:
            record = self.codec.decode(message.value(), self._record_type[topic])
            outcome = self.engine.apply(record)
        except Rejected as rejected:
            if live:
                self._dead_letter(message, rejected)
            self.checkpoint.processed(topic, partition, offset)
            return
        if live:
            self.metrics.events.labels(topic).inc()
            self._emit(topic, outcome)
        else:
            self.metrics.restored.labels(topic).inc()
        self.checkpoint.processed(topic, partition, offset)

    def _emit(self, topic: str, outcome: Outcome) -> None:
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
        decision = outcome.decision
        if decision is not None:
            self.checkpoint.produce(topics.adl_decisions, decision.symbol, self.codec.encode(decision))
            m.shortfalls.labels(decision.symbol, decision.outcome).inc()
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
