"""Kafka clients of the processor and the start-up checks (retried with tenacity).

Every client gets the user's ``[kafka]`` properties that its kind knows
(:mod:`.kafka_properties`) and logs through structlog (:data:`.logs.LIBRDKAFKA_LOG`).
"""

from __future__ import annotations

import time

import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_exponential

from .config import Settings
from .kafka_properties import CONSUMER, PRODUCER, client_properties
from .logs import LIBRDKAFKA_LOG

log = structlog.get_logger("adl_stream.kafka")

COMPACT = {"cleanup.policy": "compact"}


class StartupError(RuntimeError):
    """The broker or its topics are not as the settings say; the message says what to fix."""


def _with_passthrough(settings: Settings, defaults: dict, role: str = PRODUCER) -> dict:
    """``defaults`` with the bootstrap servers and the structlog logger, overridden by the user's
    [kafka] properties that a client of ``role`` knows."""
    return {"bootstrap.servers": settings.bootstrap_servers, "logger": LIBRDKAFKA_LOG, **defaults,
            **client_properties(settings, role)}


class _Unheard:
    """A librdkafka ``logger`` that drops the lines: the start-up checks say what failed themselves."""

    def log(self, *_args, **_kwargs) -> None:
        pass


def admin_client(settings: Settings, error_cb=None) -> AdminClient:
    """``error_cb`` receives librdkafka's errors (e.g. a TLS handshake refused), served by ``poll``;
    its raw log lines are then dropped, as they are unserved without it."""
    config = _with_passthrough(settings, {})
    if error_cb is not None:
        config.update(error_cb=error_cb, logger=_Unheard())
    return AdminClient(config)


def _untrusted(settings: Settings, errors: list) -> StartupError | None:
    """The error to stop with when the broker's TLS certificate failed verification: retrying
    cannot help, and the setting to fix is the CA (README "TLS")."""
    reason = next((str(e) for e in errors if "certificate verify failed" in str(e)), None)
    if reason is None:
        return None
    ca = settings.kafka.get("ssl.ca.location")
    where = f" = {ca!r} (from {settings.kafka_sources.get('ssl.ca.location', 'settings')})" if ca else " (not set: the system's CAs)"
    return StartupError(f"the TLS certificate of the broker at {settings.bootstrap_servers!r} is not trusted by "
                        f'kafka."ssl.ca.location"{where}: {reason}. Set ssl.ca.location to the CA that signed '
                        "the broker's certificate (ADL_KAFKA_SSL_CA_LOCATION)")


def publisher_config(settings: Settings) -> dict:
    """The producer of the simulator and the demo (:class:`~adl_stream.simulation.publish.Publisher`)."""
    return _with_passthrough(settings, {})


def consumer_config(settings: Settings) -> dict:
    """The group member: subscribed to the changelog topic, whose partitions are the tasks. A static
    member (KIP-345) unless ``membership = "dynamic"``: ``group.instance.id`` is
    :attr:`Settings.group_instance_id`, so a restarted
    instance takes its place and its tasks back without waiting for its ghost's session to end."""
    static = {"group.instance.id": settings.group_instance_id} if settings.membership == "static" else {}
    return _with_passthrough(settings, {
        "group.id": settings.group_id,
        **static,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        "partition.assignment.strategy": "range",
    }, CONSUMER)


def input_consumer_config(settings: Settings) -> dict:
    """The reader of the inputs (and of the changelog, to restore): assigned partitions, no group
    membership, no commits (the offsets live in the changelog's commit markers)."""
    return _with_passthrough(settings, {
        "group.id": f"{settings.group_id}.inputs",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
    }, CONSUMER)


def producer_config(settings: Settings) -> dict:
    defaults = {"enable.idempotence": True, "acks": "all", "linger.ms": 5}
    if settings.exactly_once:
        defaults["transactional.id"] = settings.transactional_id
    return _with_passthrough(settings, defaults)


def unreachable(settings: Settings, exc: KafkaException, within: str = "") -> StartupError:
    """The error to raise when the cluster did not answer (``exc``)."""
    return StartupError(f"cannot reach the Kafka cluster at {settings.bootstrap_servers!r}{within} "
                        f"({exc.args[0].str()}); check bootstrap_servers / ADL_BOOTSTRAP_SERVERS and the "
                        "[kafka] security settings")


class _TopicsNotReady(Exception):
    pass


def topic_settings(settings: Settings) -> dict[str, str]:
    """Every topic of the settings -> the setting that names it, e.g. ``topics.fills / ADL_TOPIC_FILLS``."""
    return {getattr(settings.topics, name): f"topics.{name} / ADL_TOPIC_{name.upper()}"
            for name in settings.topics.__dataclass_fields__}


def wait_for_cluster(settings: Settings, admin: AdminClient, topics: dict[str, str] | None = None,
                     errors: list | None = None):
    """The cluster's metadata once it answers and holds every topic of ``topics`` (topic -> its
    setting), retried for ``startup_timeout_s`` with one warning per retry saying what is awaited.

    Fails with :class:`StartupError` naming the unreachable servers, or the missing topics and their
    settings."""
    topics = topics or {}
    missing: list[str] = []

    def attempt():
        try:
            metadata = admin.list_topics(timeout=2)  # short: the first warning comes early
        except KafkaException:
            admin.poll(0)  # serves error_cb
            untrusted = _untrusted(settings, errors or [])
            if untrusted is not None:
                raise untrusted from None
            raise
        missing[:] = [t for t in topics if t not in metadata.topics or metadata.topics[t].error is not None]
        if missing:
            raise _TopicsNotReady()
        return metadata

    def before_sleep(state) -> None:
        retry_in_s = round(state.next_action.sleep, 1)
        exc = state.outcome.exception()
        if isinstance(exc, KafkaException):
            log.warning("kafka_unreachable", bootstrap_servers=settings.bootstrap_servers, error=exc.args[0].str(),
                        attempt=state.attempt_number, retry_in_s=retry_in_s, gives_up_after_s=settings.startup_timeout_s,
                        hint="check bootstrap_servers / ADL_BOOTSTRAP_SERVERS and the [kafka] security settings")
        else:
            log.warning("waiting_for_topics", bootstrap_servers=settings.bootstrap_servers, missing=list(missing),
                        settings=[topics[t] for t in missing], attempt=state.attempt_number, retry_in_s=retry_in_s,
                        gives_up_after_s=settings.startup_timeout_s, hint="adl-stream topics --config FILE creates them")

    try:
        for try_ in Retrying(
            stop=stop_after_delay(settings.startup_timeout_s),
            wait=wait_exponential(multiplier=0.2, max=5),
            retry=retry_if_exception_type((KafkaException, _TopicsNotReady)),
            before_sleep=before_sleep,
            reraise=True,
        ):
            with try_:
                metadata = attempt()
    except KafkaException as exc:
        raise unreachable(settings, exc, f" within {settings.startup_timeout_s}s") from None
    except _TopicsNotReady:
        names = ", ".join(f"{t!r} (setting {topics[t]})" for t in missing)
        raise StartupError(f"topics missing on {settings.bootstrap_servers}: {names}; create them "
                           "(adl-stream topics --config FILE) or fix the setting") from None
    return metadata


def check_topics(settings: Settings) -> dict[str, int]:
    """Wait (up to ``startup_timeout_s``) for the broker and every topic; return partition counts.

    Fails with :class:`StartupError` naming the missing topic and its setting, or the input topics
    whose partition counts differ (SPEC §2: inputs are co-partitioned).
    """
    wanted = topic_settings(settings)
    errors: list = []
    metadata = wait_for_cluster(settings, admin_client(settings, errors.append), wanted, errors)
    counts = {t: len(metadata.topics[t].partitions) for t in wanted}
    inputs = {t: counts[t] for t in settings.topics.inputs()}
    if len(set(inputs.values())) != 1:
        raise StartupError(f"input topics must have the same partition count (co-partitioned), got {inputs}")
    return counts


def ensure_changelog(settings: Settings, topic: str, create: bool = True) -> int:
    """The partition count (= task count) of the changelog topic, creating it (compacted) when
    missing and ``create``. Kafka Streams creates its internal topics the same way; where the
    processor may not create topics, create it beforehand (``deploy/kafka/create-topics.sh``)."""
    admin = admin_client(settings)
    metadata = admin.list_topics(timeout=10)
    if topic in metadata.topics and metadata.topics[topic].error is None:
        return len(metadata.topics[topic].partitions)
    partitions = settings.state_partitions or len(metadata.topics[settings.topics.fills].partitions)
    if not create:
        return partitions
    new = NewTopic(topic, partitions, settings.state_replication_factor, config=COMPACT)
    try:
        admin.create_topics([new])[topic].result(timeout=30)
    except KafkaException as exc:
        if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:  # another instance created it first
            raise StartupError(f"cannot create the changelog topic {topic!r} ({exc.args[0]}); create it "
                               f"(compacted, {partitions} partitions) or grant the processor CreateTopics") from None
    return len(admin.list_topics(topic, timeout=10).topics[topic].partitions)


def create_missing_topics(settings: Settings, names, partitions: int | None = None) -> None:
    """Create the topics ``names`` that do not exist, with ``partitions`` partitions (default: as
    many as the inputs have); those of ``Topics.compacted()`` compacted."""
    admin = admin_client(settings)
    metadata = admin.list_topics(timeout=10)
    if partitions is None:
        partitions = len(metadata.topics[settings.topics.fills].partitions)
    missing = [t for t in names if t not in metadata.topics]
    compacted = settings.topics.compacted()
    new = [NewTopic(t, partitions, config=COMPACT if t in compacted else {}) for t in missing]
    for future in admin.create_topics(new).values():
        future.result(timeout=30)


def read_to_end(settings: Settings, topic: str, timeout_s: float = 30.0, keep=None) -> list:
    """Every committed message of ``topic`` (read_committed, no group), up to the end it has now;
    with ``keep``, only the messages it returns true for.

    The end of a partition is the larger of ListOffsets' answer and the high watermark of the
    last fetch (Tansu answers ListOffsets late; see README "Tansu").
    """
    consumer = Consumer(_with_passthrough(settings, {
        "group.id": f"{settings.group_id}.reader", "enable.auto.commit": False, "isolation.level": "read_committed"},
        CONSUMER))
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.list_topics(topic, timeout=10).topics[topic].partitions]
        ends = {tp.partition: consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in partitions}
        consumer.assign([TopicPartition(topic, tp.partition, 0) for tp in partitions])
        messages, deadline = [], time.monotonic() + timeout_s
        while partitions and time.monotonic() < deadline:
            messages += [m for m in consumer.consume(10_000, 0.2) if m.error() is None and (keep is None or keep(m))]
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
