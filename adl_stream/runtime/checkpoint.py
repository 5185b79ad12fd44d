"""The commit boundary: the one object that decides when outputs and input offsets are committed.

At-least-once: outputs of a batch are produced (idempotent producer), the producer is flushed and
every delivery checked, and only then are the input offsets committed. A failed delivery raises
:class:`DeliveryFailed` before the commit, so a restart re-processes the batch. (Exactly-once will
replace this with a Kafka transaction around the same three steps; nothing else changes.)
"""

from __future__ import annotations

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition


class DeliveryFailed(RuntimeError):
    pass


class Checkpoint:
    def __init__(self, producer: Producer, consumer: Consumer, flush_timeout_s: float = 60.0) -> None:
        self._producer = producer
        self._consumer = consumer
        self._flush_timeout_s = flush_timeout_s
        self._offsets: dict[tuple[str, int], int] = {}
        self._errors: list[KafkaError] = []
        self.pending = 0

    def _on_delivery(self, error: KafkaError | None, _msg) -> None:
        if error is not None:
            self._errors.append(error)

    def produce(self, topic: str, key: bytes | str | None, value: bytes, headers=None) -> None:
        while True:
            try:
                self._producer.produce(topic, value, key, headers=headers, on_delivery=self._on_delivery)
                break
            except BufferError:  # local queue full: let deliveries drain, then retry
                self._producer.poll(0.1)
        self.pending += 1

    def processed(self, topic: str, partition: int, offset: int) -> None:
        """Mark an input record done; its partition commits at ``offset + 1``."""
        self._offsets[(topic, partition)] = offset + 1

    def commit(self) -> int:
        """Deliver every output, then commit the input offsets. Returns the outputs delivered."""
        if not self._offsets and not self.pending:
            return 0
        remaining = self._producer.flush(self._flush_timeout_s)
        if remaining:
            raise DeliveryFailed(f"{remaining} outputs not acknowledged within {self._flush_timeout_s}s")
        if self._errors:
            errors, self._errors = self._errors, []
            raise DeliveryFailed(f"{len(errors)} outputs failed delivery, first: {errors[0]}")
        if self._offsets:
            self._consumer.commit(
                offsets=[TopicPartition(t, p, o) for (t, p), o in self._offsets.items()], asynchronous=False
            )
        delivered, self.pending = self.pending, 0
        self._offsets.clear()
        return delivered

    def forget(self, partitions) -> None:
        """Drop uncommitted offsets of revoked partitions."""
        for tp in partitions:
            self._offsets.pop((tp.topic, tp.partition), None)
