"""The commit boundary's reading of librdkafka errors."""

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

    def work():
        ran.append((threading.current_thread(), [t.name for t in threading.enumerate()]))
        return 7

    with pytest.raises(Fenced):
        checkpoint.commit_while(work)
    (thread, names), = ran
    assert thread is threading.current_thread() and "adl-commit" in names  # the commit in a thread of its own
    assert "adl-commit" not in [t.name for t in threading.enumerate()]  # waited for


def test_commit_while_gives_what_both_returned_or_the_works_error_after_the_commit():
    checkpoint = Checkpoint(producer=None, consumer=None, transactional=True)  # nothing to commit: 0 at once
    assert checkpoint.commit_while(lambda: 5) == (0, 5)

    def failing():
        raise ValueError("the work failed")

    with pytest.raises(ValueError, match="the work failed"):
        checkpoint.commit_while(failing)
    assert "adl-commit" not in [t.name for t in threading.enumerate()]
