"""The commit boundary's reading of librdkafka errors."""

from confluent_kafka import KafkaError, KafkaException

from adl_stream.runtime.checkpoint import _kafka_error


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
