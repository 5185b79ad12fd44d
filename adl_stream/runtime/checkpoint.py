"""The commit boundary: the one object that decides when outputs and state are committed.

Exactly-once (the default): a batch's outputs and its state changelog records are produced inside a
Kafka transaction that also carries, as the group's offsets, the changelog offset after each
*marked* record (the commit markers, see :mod:`.changelog`) through ``send_offsets_to_transaction``
with the group metadata (KIP-447: a zombie of an older generation cannot commit), and commit makes
all of it visible atomically to ``read_committed`` readers. A fenced producer (another
instance took this transactional id) or any other fatal error raises :class:`Fenced` /
:class:`DeliveryFailed`; an abortable error aborts the transaction and raises too. Either way the
engine has already applied the batch, so the instance stops and a restart restores the state from
the committed offsets: nothing is produced outside a transaction.

Every call into the producer at the boundary (flush, send_offsets_to_transaction,
commit_transaction...) is bounded (:func:`bounded`): librdkafka's ``send_offsets_to_transaction``
can block past its own timeout after the group coordinator's connection broke (a broker restart;
librdkafka issues 5456 and 5511), until some broker's state changes again. A call that does not
return in time raises :class:`BrokerUnavailable`; the processor then leaves that producer behind
and goes on from the last commit with a new one (README "A broker restart").

At-least-once: outputs and changelog records are produced by the idempotent producer, flushed and
checked, then the marker offsets are committed; a crash in between re-emits that batch (same order
ids).

Delivery reports (a Python callback per record, run by flush): in a transaction, only the marked
records and those whose offset is asked for have one. A record of a transaction that fails delivery
puts the transaction in librdkafka's abortable error state, and the commit's calls (flush,
send_offsets_to_transaction, commit_transaction) then raise it, so the others need none: a report
cost about 1 µs of the loop's thread per record (half in produce, half in flush), and while a
commit runs beside work (:meth:`Checkpoint.commit_while`) each report took the GIL back from the
work. Without a transaction (at-least-once) every record has its report: errors are known only
from them.
"""

from __future__ import annotations

import sys
import threading
from functools import partial

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

#: Seconds a call may overrun its own timeout before it counts as stuck.
OVERRUN_S = 5.0
#: Python's thread switch interval while a commit runs beside work (:meth:`Checkpoint.commit_while`).
COMMIT_SWITCH_S = 0.0002


def _kafka_error(exc: BaseException) -> KafkaError | None:
    """The KafkaError of a KafkaException, also when flush() raised it while serving a delivery
    callback (confluent-kafka then raises a SystemError caused by it)."""
    if isinstance(exc, SystemError):
        exc = exc.__cause__
    return exc.args[0] if isinstance(exc, KafkaException) else None


class DeliveryFailed(RuntimeError):
    pass


class Fenced(DeliveryFailed):
    pass


class BrokerUnavailable(DeliveryFailed):
    """A call into the producer did not return within its timeout (plus :data:`OVERRUN_S`): the
    producer is left behind (the call may still be running in librdkafka)."""


def bounded(call, *args, timeout_s: float, what: str = ""):
    """``call(*args)``, in a thread of its own, waited for ``timeout_s`` + :data:`OVERRUN_S`; its
    result or exception, or :class:`BrokerUnavailable` when it has not returned by then."""
    thread, outcome = _started(call, *args, name=f"adl-{what or 'kafka-call'}")
    thread.join(timeout_s + OVERRUN_S)
    if thread.is_alive():
        raise BrokerUnavailable(f"{what or getattr(call, '__name__', 'a Kafka call')} did not return within "
                                f"{timeout_s + OVERRUN_S:g}s (the broker is unreachable or restarting)")
    return _result(outcome)


def _started(call, *args, name: str) -> tuple[threading.Thread, list]:
    """``call(*args)`` started in a daemon thread ``name``: (the thread, [its outcome once it ended])."""
    outcome: list = []

    def target() -> None:
        try:
            outcome.append((True, call(*args)))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller, raised there
            outcome.append((False, exc))

    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    return thread, outcome


def _result(outcome: list):
    ok, value = outcome[0]
    if ok:
        return value
    raise value


class _Deliveries:
    """What the delivery reports of one producer said: a producer left behind after a failed batch
    may still report later, into its own object, never into its successor's."""

    def __init__(self) -> None:
        self.marks: dict[tuple[str, int], int] = {}  # marked records delivered: (topic, partition) -> offset
        self.errors: list[KafkaError] = []

    def on_delivery(self, error: KafkaError | None, _msg) -> None:
        if error is not None:
            self.errors.append(error)

    def on_marked_delivery(self, error: KafkaError | None, msg) -> None:
        if error is not None:
            self.errors.append(error)
        else:
            self.marks[(msg.topic(), msg.partition())] = msg.offset()

    def noting(self, on_offset):
        def on_delivery(error: KafkaError | None, msg) -> None:
            if error is not None:
                self.errors.append(error)
            else:
                on_offset(msg.offset())
        return on_delivery


class Checkpoint:
    def __init__(self, producer: Producer, consumer: Consumer, transactional: bool = False,
                 timeout_s: float = 60.0, transactions=None) -> None:
        """``transactions``: a counter with a ``result`` label (committed, aborted), if any;
        ``timeout_s``: of each call into the producer (flush, the transactional calls)."""
        self._transactions = transactions
        self._producer = producer
        self._consumer = consumer
        self._transactional = transactional
        self._timeout_s = timeout_s
        self._in_transaction = False
        self._deliveries = _Deliveries()
        self.pending = 0
        self.committed_marks: dict[tuple[str, int], int] = {}
        """Of the last commit: (topic, partition) -> the offset after its marked record."""
        self._held: list | None = None  # produced while a commit runs (commit_while): for the next one

    @property
    def _marks(self) -> dict[tuple[str, int], int]:
        return self._deliveries.marks

    def _begin(self) -> None:
        if self._transactional and not self._in_transaction:
            self._guard(self._producer.begin_transaction, local=True)
            self._in_transaction = True

    def produce(self, topic: str, key: bytes | str | None, value: bytes | None, headers=None,
                partition: int | None = None, mark: bool = False, timestamp: int | None = None,
                on_offset=None) -> None:
        """Produce in the open batch; ``mark``: commit the offset after this record (its partition
        must be given) as the group's offset of that partition; ``timestamp``: the record's Kafka
        timestamp in epoch ms (default: the producer's clock); ``on_offset``: called with the
        record's offset once it is delivered (before :meth:`commit` returns)."""
        if self._held is not None:
            self._held.append(partial(self.produce, topic, key, value, headers, partition=partition, mark=mark,
                                      timestamp=timestamp, on_offset=on_offset))
            return
        self._begin()
        deliveries = self._deliveries
        extra = {} if partition is None else {"partition": partition}
        if on_offset is not None:
            extra["on_delivery"] = deliveries.noting(on_offset)
        elif mark:
            extra["on_delivery"] = deliveries.on_marked_delivery
        elif not self._transactional:  # (in a transaction, its commit fails if a record does)
            extra["on_delivery"] = deliveries.on_delivery
        if timestamp is not None:
            extra["timestamp"] = timestamp
        self._send(topic, value, key, headers=headers, **extra)

    def produce_all(self, topic: str, keys, values, timestamps) -> None:
        """:meth:`produce` of each ``(key, value, timestamp)`` in the open batch, without its
        per-record set-up (a pass's lights: hundreds of thousands in a crash)."""
        if self._held is not None:
            self._held.append(partial(self.produce_all, topic, list(keys), values, list(timestamps)))
            return
        self._begin()
        send = self._send
        report = {} if self._transactional else {"on_delivery": self._deliveries.on_delivery}  # (module doc)
        for key, value, timestamp in zip(keys, values, timestamps):
            send(topic, value, key, timestamp=timestamp, **report)

    def _send(self, topic: str, value, key, **options) -> None:
        """One record into the producer, retried while its local queue is full."""
        while True:
            try:
                self._producer.produce(topic, value, key, **options)
                break
            except BufferError:  # local queue full: let deliveries drain, then retry
                self._producer.poll(0.1)
            except KafkaException as exc:
                self._raise_for(self._cause(exc.args[0]), "produce failed: ")
        self.pending += 1

    def commit(self) -> int:
        """Make the batch durable: outputs, changelog and marker offsets together. Returns the
        records committed."""
        self.committed_marks = {}
        if not self.pending:
            return 0
        # Every record acknowledged first: the marker offsets are known only from their delivery.
        remaining = self._guard(self._producer.flush, self._timeout_s)
        if remaining:
            raise DeliveryFailed(f"{remaining} records not acknowledged within {self._timeout_s}s")
        if self._deliveries.errors:
            errors = list(self._deliveries.errors)
            self._deliveries.errors.clear()
            self._raise_for(errors[0], f"{len(errors)} records failed delivery, first: ")
        offsets = [TopicPartition(t, p, o + 1) for (t, p), o in sorted(self._marks.items())]
        if self._transactional:
            if offsets:
                self._guard(self._producer.send_offsets_to_transaction, offsets,
                            self._consumer.consumer_group_metadata(), self._timeout_s)
            self._guard(self._producer.commit_transaction, self._timeout_s)
            self._in_transaction = False
            if self._transactions is not None:
                self._transactions.labels("committed").inc()
        elif offsets:
            self._consumer.commit(offsets=offsets, asynchronous=False)
        self.committed_marks = {(tp.topic, tp.partition): tp.offset for tp in offsets}
        committed, self.pending = self.pending, 0
        self._marks.clear()
        return committed

    def commit_while(self, work):
        """:meth:`commit` in a thread of its own while ``work(committing)`` runs in this one, then
        both waited for: ``(records committed, what work returned)``; ``committing()`` says whether
        the commit still runs. The commit is mostly waiting on the broker (the flush's
        acknowledgements, the offsets, the commit call: about 7 ms a transaction on the embedded
        broker) with the GIL released, so ``work`` costs the loop nothing meanwhile. What ``work``
        produces belongs to the next transaction, which cannot begin before this one has committed:
        it is held, and produced in its order once the commit succeeded (dropped if it failed: the
        batch is abandoned). Python's thread switch interval is :data:`COMMIT_SWITCH_S` meanwhile,
        so that each step of the commit's thread takes the GIL back from ``work`` at once (at the
        default 5 ms, the three broker calls of a commit waited up to 5 ms each behind it). The
        commit is always waited for (its calls are bounded); work's exception is raised, else the
        commit's."""
        switch = sys.getswitchinterval()
        sys.setswitchinterval(COMMIT_SWITCH_S)
        self._held = held = []
        thread, outcome = _started(self.commit, name="adl-commit")
        try:
            value = work(thread.is_alive)
        finally:
            thread.join()
            self._held = None
            sys.setswitchinterval(switch)
        committed = _result(outcome)
        for produce in held:
            produce()
        return committed, value

    def abort(self) -> None:
        """Abandon the open transaction, if any (best effort: used when stopping on an error)."""
        self._marks.clear()
        self.pending = 0
        if self._in_transaction:
            self._in_transaction = False
            if self._transactions is not None:
                self._transactions.labels("aborted").inc()
            try:
                bounded(self._producer.abort_transaction, 10, timeout_s=10, what="abort_transaction")
            except (KafkaException, BrokerUnavailable):
                pass

    def replace_producer(self, producer: Producer) -> None:
        """Go on with ``producer`` (initialised) after a failed batch; the open batch is forgotten
        (a new transactional producer's init_transactions aborted it on the broker)."""
        self._producer = producer
        self._in_transaction = False
        self._deliveries = _Deliveries()  # the old producer's late reports go to the old one
        self.pending = 0
        self.committed_marks = {}

    def _guard(self, call, *args, local: bool = False):
        """Run a transactional call, bounded (:func:`bounded`) unless ``local`` (it asks no broker);
        turn its errors into Fenced / DeliveryFailed."""
        try:
            if local:
                return call(*args)
            return bounded(call, *args, timeout_s=self._timeout_s, what=getattr(call, "__name__", ""))
        except (KafkaException, SystemError) as exc:
            error = _kafka_error(exc)
            if error is None:
                if not isinstance(exc, SystemError):
                    raise
                # flush() may return NULL without an exception when the producer failed fatally
                # while it served callbacks (seen when fenced during AddPartitionsToTxn): ask the
                # producer what failed.
                error = self._cause(KafkaError(KafkaError._FATAL, f"{exc}"))
            self._raise_for(error, "transaction failed: ")

    def _cause(self, error: KafkaError) -> KafkaError:
        """The cause of a ``_FATAL`` from produce(). Once a transactional producer has failed in
        the background (e.g. AddPartitionsToTxn answered "fenced"), produce() only says "Local:
        Fatal error" (and not even ``fatal()``); flush() and the transactional calls raise the
        error that made it fatal."""
        if error.code() != KafkaError._FATAL:
            return error
        for probe in (lambda: self._producer.flush(self._timeout_s), lambda: self._producer.abort_transaction(5)):
            try:
                probe()
            except (KafkaException, SystemError) as exc:
                cause = _kafka_error(exc)
                if cause is not None and cause.code() != KafkaError._FATAL:
                    return cause
        return error

    def _raise_for(self, error: KafkaError, what: str):
        """Raise Fenced for a fencing error, else abort if the transaction needs it and raise
        DeliveryFailed."""
        # Fenced during a call: _FENCED / PRODUCER_FENCED. Fenced earlier, in the background:
        # librdkafka raises _FATAL naming the fencing in its message, and confluent-kafka does
        # not expose the underlying code, so the message is the only place that says it. A delivery
        # error (KafkaError._FENCED) is classified the same way.
        if error.code() in (KafkaError._FENCED, KafkaError.PRODUCER_FENCED) or (
            error.fatal() and "fenced" in error.str().lower()
        ):
            self._in_transaction = False
            raise Fenced(f"producer fenced: another producer initialised this transactional id after this one ({error})") from None
        if error.txn_requires_abort():
            self.abort()
        elif error.fatal():
            self._in_transaction = False
        raise DeliveryFailed(f"{what}{error}") from None
