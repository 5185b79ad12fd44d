"""The commit boundary: the one object that decides when outputs and input offsets are committed.

Exactly-once (the default): a batch's outputs are produced inside a Kafka transaction that also
carries the consumer offsets (``send_offsets_to_transaction`` with the group metadata, KIP-447), and
commit makes both visible atomically to ``read_committed`` readers. A fenced producer (another
instance took this transactional id) or any other fatal error raises :class:`Fenced` /
:class:`DeliveryFailed`; an abortable error aborts the transaction and raises too. Either way the
engine has already applied the batch, so the instance stops and a restart restores the state from
the committed offsets: nothing is produced outside a transaction.

At-least-once: outputs are produced by the idempotent producer, flushed and checked, then the
offsets are committed; a crash in between re-emits that batch (same order ids).
"""

from __future__ import annotations

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition


class DeliveryFailed(RuntimeError):
    pass


class Fenced(DeliveryFailed):
    pass


class Checkpoint:
    def __init__(self, producer: Producer, consumer: Consumer, transactional: bool = False,
                 timeout_s: float = 60.0, transactions=None) -> None:
        """``transactions``: a counter with a ``result`` label (committed, aborted), if any."""
        self._transactions = transactions
        self._producer = producer
        self._consumer = consumer
        self._transactional = transactional
        self._timeout_s = timeout_s
        self._in_transaction = False
        self._offsets: dict[tuple[str, int], int] = {}
        self._errors: list[KafkaError] = []
        self.pending = 0

    def _on_delivery(self, error: KafkaError | None, _msg) -> None:
        if error is not None:
            self._errors.append(error)

    def _begin(self) -> None:
        if self._transactional and not self._in_transaction:
            self._guard(self._producer.begin_transaction)
            self._in_transaction = True

    def produce(self, topic: str, key: bytes | str | None, value: bytes, headers=None) -> None:
        self._begin()
        while True:
            try:
                self._producer.produce(topic, value, key, headers=headers, on_delivery=self._on_delivery)
                break
            except BufferError:  # local queue full: let deliveries drain, then retry
                self._producer.poll(0.1)
        self.pending += 1

    def processed(self, topic: str, partition: int, offset: int) -> None:
        """Mark a live input record done; its partition commits at ``offset + 1``."""
        self._offsets[(topic, partition)] = offset + 1

    def commit(self) -> int:
        """Make the outputs and the input offsets durable together. Returns the outputs committed."""
        if not self._offsets and not self.pending:
            return 0
        offsets = [TopicPartition(t, p, o) for (t, p), o in self._offsets.items()]
        if self._transactional:
            self._begin()
            self._guard(self._producer.send_offsets_to_transaction, offsets,
                        self._consumer.consumer_group_metadata(), self._timeout_s)
            self._guard(self._producer.commit_transaction, self._timeout_s)
            self._in_transaction = False
            if self._transactions is not None:
                self._transactions.labels("committed").inc()
        else:
            remaining = self._producer.flush(self._timeout_s)
            if remaining:
                raise DeliveryFailed(f"{remaining} outputs not acknowledged within {self._timeout_s}s")
            if offsets:
                self._consumer.commit(offsets=offsets, asynchronous=False)
        if self._errors:
            errors, self._errors = self._errors, []
            raise DeliveryFailed(f"{len(errors)} outputs failed delivery, first: {errors[0]}")
        committed, self.pending = self.pending, 0
        self._offsets.clear()
        return committed

    def abort(self) -> None:
        """Abandon the open transaction, if any (best effort: used when stopping on an error)."""
        self._offsets.clear()
        self.pending = 0
        if self._in_transaction:
            self._in_transaction = False
            if self._transactions is not None:
                self._transactions.labels("aborted").inc()
            try:
                self._producer.abort_transaction(10)
            except KafkaException:
                pass

    def _guard(self, call, *args):
        """Run a transactional call; turn its errors into Fenced / DeliveryFailed."""
        try:
            return call(*args)
        except KafkaException as exc:
            error: KafkaError = exc.args[0]
            # Fenced during a call: _FENCED / PRODUCER_FENCED. Fenced earlier, in the background:
            # librdkafka raises _FATAL naming the fencing in its message, and confluent-kafka does
            # not expose the underlying code, so the message is the only place that says it.
            if error.code() in (KafkaError._FENCED, KafkaError.PRODUCER_FENCED) or (
                error.fatal() and "fenced" in error.str().lower()
            ):
                self._in_transaction = False
                raise Fenced(f"producer fenced: another instance uses this transactional id ({error})") from None
            if error.txn_requires_abort():
                self.abort()
            elif error.fatal():
                self._in_transaction = False
            raise DeliveryFailed(f"transaction failed: {error}") from None
