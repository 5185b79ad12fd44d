"""``adl-stream topics``: every topic the settings name, created where missing and checked where it
exists. Idempotent: a second run creates nothing and finds nothing to say.

- the inputs and outputs with one partition count (the inputs must be co-partitioned, SPEC §2):
  ``partitions``, else as many as the input topics that exist have, else :data:`DEFAULT_PARTITIONS`;
- ``adl-indicators`` compacted, like the state changelog ``<group_id>-changelog`` (with
  ``state_partitions``, else the inputs' count, and ``state_replication_factor``).

An existing topic *differs* when an input has another partition count or a compacted topic is not
compacted; the processor would refuse the first and lose state to retention with the second.
Other topics keep the broker's default replication factor.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import ConfigResource, NewTopic, ResourceType

from .changelog import changelog_topic
from .config import Settings
from .kafka import COMPACT, StartupError, admin_client, topic_settings, wait_for_cluster

DEFAULT_PARTITIONS = 3


@dataclass
class TopicState:
    name: str
    role: str  # the setting that names it, or what it is
    partitions: int
    compacted: bool
    created: bool = False
    differences: list[str] = field(default_factory=list)


def ensure_topics(settings: Settings, partitions: int | None = None) -> list[TopicState]:
    """Create the missing topics of ``settings``; report every topic, with what differs."""
    admin = admin_client(settings)
    existing = wait_for_cluster(settings, admin).topics
    inputs = settings.topics.inputs()
    counts = Counter(len(existing[t].partitions) for t in inputs if t in existing)
    reason = "--partitions" if partitions else "as the other inputs: co-partitioned"
    partitions = partitions or (counts.most_common(1)[0][0] if counts else DEFAULT_PARTITIONS)
    changelog = changelog_topic(settings.group_id)
    wanted = [TopicState(t, role, partitions, t in settings.topics.compacted())
              for t, role in topic_settings(settings).items()]
    wanted.append(TopicState(changelog, f"the state changelog of group_id {settings.group_id!r}",
                             settings.state_partitions or partitions, True))

    missing = [t for t in wanted if t.name not in existing]
    new = [NewTopic(t.name, t.partitions, settings.state_replication_factor if t.name == changelog else -1,
                    config=COMPACT if t.compacted else {}) for t in missing]
    futures = admin.create_topics(new) if new else {}
    for topic in missing:
        try:
            futures[topic.name].result(timeout=30)
            topic.created = True
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:  # created by someone else meanwhile
                raise StartupError(f"cannot create topic {topic.name!r} ({topic.role}): {exc.args[0].str()}") from None

    policies = _cleanup_policies(admin, [t.name for t in wanted if t.compacted and not t.created])
    for topic in wanted:
        if topic.created:
            continue
        actual = len(existing[topic.name].partitions) if topic.name in existing else topic.partitions
        if topic.name in inputs and actual != partitions:
            topic.differences.append(f"has {actual} partitions, not {partitions} ({reason}); the processor "
                                     "refuses inputs with different counts")
        topic.partitions = actual
        policy = policies.get(topic.name)
        if topic.compacted and policy is not None and "compact" not in policy:
            topic.differences.append(f"cleanup.policy={policy}, needs compact (alter it, or delete and create it)")
    return wanted


def _cleanup_policies(admin, names: list[str]) -> dict[str, str]:
    """``cleanup.policy`` of each topic of ``names`` (Kafka's default, delete, if the broker does
    not list it; absent if the broker does not describe the topic, e.g. for lack of rights)."""
    resources = [ConfigResource(ResourceType.TOPIC, name) for name in names]
    policies = {}
    for resource, future in (admin.describe_configs(resources).items() if resources else ()):
        try:
            entry = future.result(timeout=30).get("cleanup.policy")
        except KafkaException:
            continue
        policies[resource.name] = entry.value if entry is not None else "delete"
    return policies
