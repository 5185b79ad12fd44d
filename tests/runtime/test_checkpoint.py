"""The commit boundary's reading of librdkafka errors."""

from confluent_kafka import KafkaError, KafkaException

import pytest

from adl_stream.runtime.checkpoint import Checkpoint, DeliveryFailed, Fenced, _kafka_error


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
