"""What librdkafka says about the user's ``[kafka]`` properties, asked once per set of them by
building throwaway clients with no broker:

- which client knows each one: librdkafka ignores a consumer property on a producer (and the
  reverse) with a ``CONFWARN`` log line, so :func:`client_properties` gives each kind of client
  only those it knows (an admin client is a producer to librdkafka);
- whether it takes them: one it refuses (a misspelled name, a bad value, SASL without its
  mechanism or credentials) is a :class:`ConfigError` naming the property and where it was set.
"""

from __future__ import annotations

import functools
import re

from confluent_kafka import Consumer, KafkaException, Producer

from .config import ConfigError, Settings

CONSUMER, PRODUCER = "consumer", "producer"
_FOREIGN = re.compile(r"is a (consumer|producer) property and will be ignored")
_REFUSALS = (KafkaException, TypeError, ValueError)  # librdkafka's, and confluent-kafka's own checks


class _Warnings:
    """A ``logger`` for a probe client: keeps librdkafka's lines."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def log(self, _level, _format, _facility, _client, message) -> None:
        self.lines.append(message)


def _probe(role: str, properties: dict[str, str]) -> list[str]:
    """Build a client of ``role`` with ``properties`` and no broker: librdkafka's warnings about
    them. Raises what the client constructor raises when librdkafka refuses them."""
    warnings = _Warnings()
    config = {**properties, "logger": warnings}
    config.pop("bootstrap.servers", None)  # no connection
    if role == CONSUMER:
        client = Consumer({"group.id": "adl-stream.probe", **config})
        client.poll(0)  # serves the log lines
        client.close()
    else:
        Producer(config).poll(0)
    return warnings.lines


def _accepted(role: str, properties: dict[str, str]) -> list[str] | None:
    """librdkafka's warnings about ``properties`` on a client of ``role``; None if it refuses them."""
    try:
        return _probe(role, properties)
    except _REFUSALS:
        return None


class _Refused(Exception):
    def __init__(self, names: list[str], problem: str) -> None:
        super().__init__(problem)
        self.names = names


@functools.lru_cache(maxsize=32)
def _foreign(items: tuple[tuple[str, str], ...]) -> dict[str, frozenset[str]]:
    """Per client kind, the properties among ``items`` it does not know (librdkafka says so).

    Raises :class:`_Refused` with the property at fault: the one librdkafka's message names, else
    the first it refuses alone (``linger.ms`` is named ``queue.buffering.max.ms`` in messages),
    else all of them (a combination, e.g. a SASL mechanism without its credentials)."""
    properties = dict(items)
    for role in (CONSUMER, PRODUCER):
        try:
            _probe(role, properties)
        except _REFUSALS as exc:
            problem = exc.args[0].str() if isinstance(exc, KafkaException) else str(exc)
            named = (name for name in properties if re.search(rf"(?<![\w.]){re.escape(name)}(?![\w.])", problem))
            alone = (name for name in properties if _accepted(role, {name: properties[name]}) is None)
            culprit = next(named, None) or next(alone, None)
            raise _Refused([culprit] if culprit else list(properties), problem) from None
    foreign: dict[str, set[str]] = {CONSUMER: set(), PRODUCER: set()}
    for name, value in items:
        for role in (CONSUMER, PRODUCER):
            # Refused alone but accepted with the others (SASL_SSL with its mechanism): a known one.
            warnings = _accepted(role, {name: value}) or []
            if any(_FOREIGN.search(line) for line in warnings):
                foreign[role].add(name)
    return {role: frozenset(names) for role, names in foreign.items()}


def client_properties(settings: Settings, role: str) -> dict[str, str]:
    """The user's ``[kafka]`` properties that a client of ``role`` (consumer or producer) knows.

    Raises :class:`ConfigError` naming the property (and where it was set) that librdkafka refuses."""
    try:
        foreign = _foreign(tuple(settings.kafka.items()))
    except _Refused as refused:
        sources = sorted({settings.kafka_sources.get(name, "settings") for name in refused.names})
        setting = f'kafka."{refused.names[0]}"' if len(refused.names) == 1 else "kafka"
        raise ConfigError(setting, "; ".join(sources), f"librdkafka refuses it: {refused}. Fix it, remove it "
                          "or add what librdkafka asks for (its CONFIGURATION.md lists the properties)") from None
    return {name: value for name, value in settings.kafka.items() if name not in foreign[role]}
