"""The user's [kafka] properties: each goes to the clients that know it, and one librdkafka refuses
is a settings error naming it and where it was set (librdkafka itself is asked; no broker)."""

from dataclasses import replace

import pytest

from adl_stream.runtime.config import ConfigError, Settings
from adl_stream.runtime.kafka import consumer_config, producer_config
from adl_stream.runtime.kafka_properties import CONSUMER, PRODUCER, client_properties


def settings(**kafka) -> Settings:
    return replace(Settings(), kafka=kafka, kafka_sources={k: f"environment variable ADL_KAFKA_{k.upper()}" for k in kafka})


def test_consumer_and_producer_properties_go_only_to_the_clients_that_know_them():
    s = settings(**{"session.timeout.ms": "6000", "heartbeat.interval.ms": "500", "linger.ms": "7", "acks": "1",
                    "statistics.interval.ms": "5000", "client.id": "adl-1"})
    assert client_properties(s, CONSUMER) == {"session.timeout.ms": "6000", "heartbeat.interval.ms": "500",
                                              "statistics.interval.ms": "5000", "client.id": "adl-1"}
    assert client_properties(s, PRODUCER) == {"linger.ms": "7", "acks": "1", "statistics.interval.ms": "5000",
                                              "client.id": "adl-1"}
    assert consumer_config(s)["session.timeout.ms"] == "6000" and "linger.ms" not in consumer_config(s)
    assert producer_config(s)["linger.ms"] == "7" and "session.timeout.ms" not in producer_config(s)


def test_properties_valid_only_together_are_kept():
    s = settings(**{"security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN", "sasl.username": "u",
                    "sasl.password": "p"})
    assert client_properties(s, CONSUMER) == client_properties(s, PRODUCER) == dict(s.kafka)


@pytest.mark.parametrize("kafka, named, words", [
    ({"linger.ms": "5", "sesion.timeout.ms": "6000"}, "sesion.timeout.ms", 'No such configuration property: "sesion.timeout.ms"'),
    ({"linger.ms": "soon"}, "linger.ms", 'Invalid value for configuration property "queue.buffering.max.ms"'),
    ({"security.protocol": "SASL_SSL"}, "security.protocol", "No provider for SASL mechanism GSSAPI"),
    ({"security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN"}, "security.protocol", "sasl.username and sasl.password must be set"),
])
def test_a_property_librdkafka_refuses_is_named_with_its_source(kafka, named, words):
    with pytest.raises(ConfigError) as info:
        client_properties(settings(**kafka), CONSUMER)
    assert info.value.setting == f'kafka."{named}"'
    assert f"environment variable ADL_KAFKA_{named.upper()}" in str(info.value)
    assert words in str(info.value)
