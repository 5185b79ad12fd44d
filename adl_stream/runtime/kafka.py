"""Kafka clients of the processor and the start-up checks (retried with tenacity)."""

from __future__ import annotations

import time

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_exponential

from .config import Settings


class StartupError(RuntimeError):
    """The broker or its topics are not as the settings say; the message says what to fix."""


def _with_passthrough(settings: Settings, defaults: dict) -> dict:
    """``defaults`` with the bootstrap servers, overridden by the user's [kafka] properties."""
    return {"bootstrap.servers": settings.bootstrap_servers, **defaults, **settings.kafka}


def consumer_config(settings: Settings) -> dict:
    """The group member: subscribed to the changelog topic, whose partitions are the tasks."""
    return _with_passthrough(settings, {
        "group.id": settings.group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        "partition.assignment.strategy": "range",
    })


def input_consumer_config(settings: Settings) -> dict:
    """The reader of the inputs (and of the changelog, to restore): assigned partitions, no group
    membership, no commits (the offsets live in the changelog's commit markers)."""
    return _with_passthrough(settings, {
        "group.id": f"{settings.group_id}.inputs",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
    })


def producer_config(settings: Settings) -> dict:
    defaults = {"enable.idempotence": True, "acks": "all", "linger.ms": 5}
    if settings.exactly_once:
        defaults["transactional.id"] = settings.transactional_id
    return _with_passthrough(settings, defaults)


class _TopicsNotReady(Exception):
    pass


def check_topics(settings: Settings) -> dict[str, int]:
    """Wait (up to ``startup_timeout_s``) for the broker and every topic; return partition counts.

    Fails with :class:`StartupError` naming the missing topic and its setting, or the input topics
    whose partition counts differ (SPEC §2: inputs are co-partitioned).
    """
    admin = AdminClient(_with_passthrough(settings, {}))
    wanted = {getattr(settings.topics, name): name for name in settings.topics.__dataclass_fields__}
    missing: list[str] = []

    def attempt() -> dict[str, int]:
        metadata = admin.list_topics(timeout=5)
        counts = {t: len(m.partitions) for t, m in metadata.topics.items() if m.error is None}
        missing[:] = [t for t in wanted if t not in counts]
        if missing:
            raise _TopicsNotReady()
        return {t: counts[t] for t in wanted}

    try:
        for try_ in Retrying(
            stop=stop_after_delay(settings.startup_timeout_s),
            wait=wait_exponential(multiplier=0.2, max=5),
            retry=retry_if_exception_type((KafkaException, _TopicsNotReady)),
            reraise=True,
        ):
            with try_:
                counts = attempt()
    except KafkaException as exc:
        raise StartupError(
            f"cannot reach the Kafka cluster at {settings.bootstrap_servers!r} within "
            f"{settings.startup_timeout_s}s ({exc}); check bootstrap_servers / ADL_BOOTSTRAP_SERVERS "
            "and the [kafka] security settings"
        ) from None
    except _TopicsNotReady:
        names = ", ".join(f"{t!r} (setting topics.{wanted[t]} / ADL_TOPIC_{wanted[t].upper()})" for t in missing)
        raise StartupError(f"topics missing on {settings.bootstrap_servers}: {names}; create them or fix the setting") from None
    inputs = {t: counts[t] for t in settings.topics.inputs()}
    if len(set(inputs.values())) != 1:
        raise StartupError(f"input topics must have the same partition count (co-partitioned), got {inputs}")
    return counts


def ensure_changelog(settings: Settings, topic: str, create: bool = True) -> int:
    """The partition count (= task count) of the changelog topic, creating it (compacted) when
    missing and ``create``. Kafka Streams creates its internal topics the same way; where the
    processor may not create topics, create it beforehand (``deploy/kafka/create-topics.sh``)."""
    admin = AdminClient(_with_passthrough(settings, {}))
    metadata = admin.list_topics(timeout=10)
    if topic in metadata.topics and metadata.topics[topic].error is None:
        return len(metadata.topics[topic].partitions)
    partitions = settings.state_partitions or len(metadata.topics[settings.topics.fills].partitions)
    if not create:
        return partitions
    new = NewTopic(topic, partitions, settings.state_replication_factor, config={"cleanup.policy": "compact"})
    try:
        admin.create_topics([new])[topic].result(timeout=30)
    except KafkaException as exc:
        if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:  # another instance created it first
            raise StartupError(f"cannot create the changelog topic {topic!r} ({exc.args[0]}); create it "
                               f"(compacted, {partitions} partitions) or grant the processor CreateTopics") from None
    return len(admin.list_topics(topic, timeout=10).topics[topic].partitions)


def create_missing_topics(settings: Settings, names, partitions: int | None = None) -> None:
    """Create the topics ``names`` that do not exist, with ``partitions`` partitions (default: as
    many as the inputs have)."""
    admin = AdminClient(_with_passthrough(settings, {}))
    metadata = admin.list_topics(timeout=10)
    if partitions is None:
        partitions = len(metadata.topics[settings.topics.fills].partitions)
    missing = [t for t in names if t not in metadata.topics]
    for future in admin.create_topics([NewTopic(t, partitions) for t in missing]).values():
        future.result(timeout=30)


def read_to_end(settings: Settings, topic: str, timeout_s: float = 30.0) -> list:
    """Every committed message of ``topic`` (read_committed, no group), up to the end it has now.

    The end of a partition is the larger of ListOffsets' answer and the high watermark of the
    last fetch (Tansu answers ListOffsets late; see README "Tansu").
    """
    consumer = Consumer(_with_passthrough(settings, {
        "group.id": f"{settings.group_id}.reader", "enable.auto.commit": False, "isolation.level": "read_committed"}))
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.list_topics(topic, timeout=10).topics[topic].partitions]
        ends = {tp.partition: consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in partitions}
        consumer.assign([TopicPartition(topic, tp.partition, 0) for tp in partitions])
        messages, deadline = [], time.monotonic() + timeout_s
        while partitions and time.monotonic() < deadline:
            messages += [m for m in consumer.consume(10_000, 0.2) if m.error() is None]
            # Transaction markers take offsets too: a partition is read once its position passed the end.
            unread = []
            for tp in consumer.position(partitions):
                _, fetched_end = consumer.get_watermark_offsets(tp, cached=True)
                if fetched_end < 0 or max(tp.offset, 0) < max(ends[tp.partition], fetched_end):
                    unread.append(TopicPartition(topic, tp.partition))
            partitions = unread
        if partitions:
            raise TimeoutError(f"{topic}: partitions {[tp.partition for tp in partitions]} not read to the end "
                               f"within {timeout_s}s")
        return messages
    finally:
        consumer.close()
