"""The commit boundary's reading of librdkafka errors."""

import sys
import threading
import time

import pytest
from confluent_kafka import KafkaError, KafkaException

from adl_stream.runtime import checkpoint as checkpoint_module
from adl_stream.runtime.checkpoint import (
    BrokerUnavailable,
    Checkpoint,
    DeliveryFailed,
    Fenced,
    _kafka_error,
    bounded,
)


def test_a_kafka_error_is_found_also_behind_the_system_error_of_a_delivery_callback():
    fenced = KafkaException(KafkaError(KafkaError._FENCED))
    assert _kafka_error(fenced).code() == KafkaError._FENCED
    try:  # what confluent-kafka raises when flush() fails while it serves a delivery callback
        try:
            raise fenced
        except KafkaException as cause:
            raise SystemError("<function _on_delivery> returned a result with an exception set") from cause
    except SystemError as raised:
        assert _kafka_error(raised).code() == KafkaError._FENCED
    assert _kafka_error(SystemError("unrelated")) is None


class _FencedInTheBackground:
    """A transactional producer that librdkafka failed fatally while flush() served its callbacks:
    flush() then returns NULL without an exception (seen on the broker in about one run in four of
    the fencing test), and only the transactional calls still name the cause."""

    def __init__(self) -> None:
        self.aborts = 0

    def begin_transaction(self) -> None:
        pass

    def produce(self, *args, **kwargs) -> None:
        pass

    def flush(self, timeout=None):
        raise SystemError("<built-in method flush of cimpl.Producer object> returned NULL without setting an exception")

    def abort_transaction(self, timeout=None) -> None:
        self.aborts += 1
        raise KafkaException(KafkaError(KafkaError.PRODUCER_FENCED, "Failed to add partition to transaction: Broker: "
                                        "There is a newer producer with the same transactionalId which fences "
                                        "the current one", fatal=True))


def test_a_flush_that_fails_without_an_exception_is_explained_by_the_producer():
    producer = _FencedInTheBackground()
    checkpoint = Checkpoint(producer, consumer=None, transactional=True)
    checkpoint.produce("out", b"k", b"v")
    with pytest.raises(Fenced, match="newer producer"):
        checkpoint.commit()
    assert producer.aborts == 1


def test_an_unexplained_flush_failure_is_a_delivery_failure_not_an_internal_error():
    producer = _FencedInTheBackground()
    producer.abort_transaction = lambda timeout=None: None  # nothing to learn from the producer
    checkpoint = Checkpoint(producer, consumer=None, transactional=True)
    checkpoint.produce("out", b"k", b"v")
    with pytest.raises(DeliveryFailed, match="returned NULL") as raised:
        checkpoint.commit()
    assert not isinstance(raised.value, Fenced)


class _StuckOffsets(_FencedInTheBackground):
    """A producer whose send_offsets_to_transaction blocks past its timeout, as librdkafka's does
    after the group coordinator's connection broke (a broker restart)."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def flush(self, timeout=None):
        return 0

    def send_offsets_to_transaction(self, offsets, metadata, timeout=None):
        self.release.wait(60)


class _Consumer:
    def consumer_group_metadata(self):
        return object()


def test_a_call_stuck_past_its_timeout_is_given_up_as_broker_unavailable(monkeypatch):
    monkeypatch.setattr(checkpoint_module, "OVERRUN_S", 0.2)
    producer = _StuckOffsets()
    checkpoint = Checkpoint(producer, _Consumer(), transactional=True, timeout_s=0.3)
    checkpoint.produce("changelog", b"k", b"v", partition=0, mark=True)
    checkpoint._marks[("changelog", 0)] = 7  # as the marker's delivery reports it
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable, match="send_offsets_to_transaction did not return within 0.5s"):
        checkpoint.commit()
    assert time.monotonic() - started < 2
    assert isinstance(BrokerUnavailable("x"), DeliveryFailed) and not isinstance(BrokerUnavailable("x"), Fenced)
    producer.release.set()
    left_behind = checkpoint._deliveries
    checkpoint.replace_producer(_StuckOffsets())  # goes on with another: nothing of the batch is kept
    assert checkpoint.pending == 0 and checkpoint.committed_marks == {} and checkpoint._marks == {}
    left_behind.on_marked_delivery(None, _Delivered("changelog", 0, 9))  # a late report of the old producer
    assert checkpoint._marks == {}  # never taken for the new batch's marker


class _Delivered:
    def __init__(self, topic, partition, offset):
        self.topic, self.partition, self.offset = (lambda: topic), (lambda: partition), (lambda: offset)


def test_bounded_returns_the_result_or_raises_the_exception_of_the_call():
    assert bounded(lambda a, b: a + b, 2, 3, timeout_s=1) == 5
    with pytest.raises(KafkaException):
        bounded(lambda: (_ for _ in ()).throw(KafkaException(KafkaError(KafkaError._TIMED_OUT))), timeout_s=1)


class _SlowlyFenced(_FencedInTheBackground):
    def flush(self, timeout=None):
        time.sleep(0.2)  # the broker's acknowledgements, long enough for the work to see the commit run
        return super().flush(timeout)


def test_commit_while_runs_the_work_in_this_thread_beside_the_commit_and_raises_the_commits_error():
    checkpoint = Checkpoint(_SlowlyFenced(), consumer=None, transactional=True)
    checkpoint.produce("out", b"k", b"v")
    ran = []

    def work(committing):
        ran.append((threading.current_thread(), [t.name for t in threading.enumerate()], committing()))
        return 7

    with pytest.raises(Fenced):
        checkpoint.commit_while(work)
    (thread, names, committing), = ran
    assert thread is threading.current_thread() and "adl-commit" in names  # the commit in a thread of its own
    assert committing  # what the work is told while the commit runs
    assert "adl-commit" not in [t.name for t in threading.enumerate()]  # waited for


def test_commit_while_gives_what_both_returned_or_the_works_error_after_the_commit():
    checkpoint = Checkpoint(producer=None, consumer=None, transactional=True)  # nothing to commit: 0 at once
    assert checkpoint.commit_while(lambda committing: 5) == (0, 5)

    def failing(committing):
        raise ValueError("the work failed")

    with pytest.raises(ValueError, match="the work failed"):
        checkpoint.commit_while(failing)
    assert "adl-commit" not in [t.name for t in threading.enumerate()]


class _Recording:
    """A transactional producer that records its calls, in order; its flush takes ``flush_s``."""

    def __init__(self, flush_s: float = 0.0) -> None:
        self.calls: list = []
        self.flush_s = flush_s

    def begin_transaction(self) -> None:
        self.calls.append("begin")

    def produce(self, topic, value, key, **options) -> None:
        self.calls.append((topic, value, sorted(k for k, v in options.items() if v is not None)))

    def flush(self, timeout=None):
        time.sleep(self.flush_s)
        return 0

    def commit_transaction(self, timeout=None) -> None:
        self.calls.append("commit")


def test_what_the_work_produces_while_a_commit_runs_goes_into_the_next_transaction_in_order():
    producer = _Recording(flush_s=0.05)
    checkpoint = Checkpoint(producer, _Consumer(), transactional=True)
    checkpoint.produce("out", b"k", b"before")

    def work(committing):
        assert committing()
        checkpoint.produce("out", b"k", b"during-1")
        checkpoint.produce_all("lights", iter([b"a", b"b"]), [b"light-a", b"light-b"], iter([1, 2]))
        checkpoint.produce("out", b"k", b"during-2", headers=[("h", b"1")], timestamp=3)
        assert producer.calls == ["begin", ("out", b"before", [])]  # nothing of it in this transaction
        while committing():
            time.sleep(0.005)
        return "done"

    assert checkpoint.commit_while(work) == (1, "done")
    assert producer.calls == ["begin", ("out", b"before", []), "commit", "begin", ("out", b"during-1", []),
                              ("lights", b"light-a", ["timestamp"]), ("lights", b"light-b", ["timestamp"]),
                              ("out", b"during-2", ["headers", "timestamp"])]
    assert checkpoint.pending == 4  # the next transaction's, committed by the next commit
    assert sys.getswitchinterval() == pytest.approx(0.005)  # the interpreter's own again


def test_what_the_work_produced_is_dropped_when_the_commit_fails():
    producer = _SlowlyFenced()
    checkpoint = Checkpoint(producer, consumer=None, transactional=True)
    checkpoint.produce("out", b"k", b"v")
    sent = []
    producer.produce = lambda *args, **kwargs: sent.append(args)

    with pytest.raises(Fenced):
        checkpoint.commit_while(lambda committing: checkpoint.produce("out", b"k", b"during"))
    assert sent == [] and checkpoint._held is None  # the abandoned batch's: never produced
    assert sys.getswitchinterval() == pytest.approx(0.005)


@pytest.mark.parametrize("transactional", [True, False])
def test_only_the_records_whose_delivery_tells_something_have_a_delivery_report(transactional):
    # In a transaction a record that fails delivery fails the commit (see the broker test in
    # tests/integration/test_exactly_once.py): the marked records and those whose offset is asked
    # for have a report. Without one (at-least-once) every record has one: errors come only from them.
    producer = _Recording()
    checkpoint = Checkpoint(producer, _Consumer(), transactional=transactional)
    checkpoint.produce("out", b"k", b"plain")
    checkpoint.produce_all("lights", [b"a"], [b"light"], [1])
    checkpoint.produce("changelog", b"m", b"marker", partition=0, mark=True)
    checkpoint.produce("changelog", b"s", b"chunk", partition=0, on_offset=lambda offset: None)
    reported = {value: "on_delivery" in options for _, value, options in
                (call for call in producer.calls if call != "begin")}
    assert reported == {b"plain": not transactional, b"light": not transactional, b"marker": True, b"chunk": True}
