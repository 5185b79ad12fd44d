"""``adl-stream replay``: rebuild state from the inputs and decide again from given offsets or a
timestamp, into a fresh consumer group and fresh output topics, or as JSON lines (dry run), so that
operators can audit past shortfalls.

Records below the start points only rebuild state (as a restore does); records from them on are
decided again. Both follow the merge order the original run recorded in its changelog
(:mod:`.merge_order`), also where records arrived late, so the decisions are the original ones
byte for byte; past the original's last commit (or without a complete record) they are merged by
event time, as live. ``--from-timestamp`` uses ``offsets_for_times``, i.e. the Kafka record
timestamps: producers should set them to the event time (the tests do).
"""

from __future__ import annotations

import json
from dataclasses import asdict, replace

import structlog
from confluent_kafka import TopicPartition

from ..engine import AdlIndicator, AdlOrder, ShortfallDecision
from ..readable import plain
from . import merge_order
from .changelog import MARKER_PREFIX, changelog_topic
from .config import Settings, Topics
from .kafka import read_to_end

log = structlog.get_logger("adl_stream.replay")


def parse_offsets(spec: str) -> dict[tuple[str, int], int]:
    """``topic:partition:offset[,...]`` -> {(topic, partition): offset}."""
    starts = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        try:
            topic, partition, offset = item.rsplit(":", 2)
            starts[(topic, int(partition))] = int(offset)
        except ValueError:
            raise ValueError(f"--from-offsets: {item!r} is not topic:partition:offset") from None
    return starts


def from_offsets(starts: dict[tuple[str, int], int]):
    """Output from the given offsets; partitions not named start at their end (state only)."""

    def start_at(consumer, partitions: list[TopicPartition]) -> dict[tuple[str, int], int]:
        resolved = {}
        for tp in partitions:
            key = (tp.topic, tp.partition)
            resolved[key] = starts[key] if key in starts else consumer.get_watermark_offsets(tp, timeout=10)[1]
        return resolved

    return start_at


def from_timestamp(ts_ms: int):
    """Output from the first record at or after ``ts_ms`` (Kafka record timestamp) of each partition."""

    def start_at(consumer, partitions: list[TopicPartition]) -> dict[tuple[str, int], int]:
        found = consumer.offsets_for_times([TopicPartition(tp.topic, tp.partition, ts_ms) for tp in partitions], timeout=10)
        resolved = {}
        for tp in found:
            # -1: no record at or after ts_ms -> the partition's end.
            resolved[(tp.topic, tp.partition)] = (
                tp.offset if tp.offset >= 0 else consumer.get_watermark_offsets(tp, timeout=10)[1])
        return resolved

    return start_at


def recorded_orders(settings: Settings, timeout_s: float = 300.0) -> dict:
    """The merge order of each settle asset recorded by the group of ``settings`` (the original
    run's), or {} with a warning when the record is missing or incomplete."""
    topic = changelog_topic(settings.group_id)
    try:
        markers = read_to_end(settings, topic, timeout_s, keep=lambda m: m.key().startswith(MARKER_PREFIX))
    except TimeoutError as exc:
        markers, orders, incomplete = [], {}, str(exc)
    else:
        orders, incomplete = merge_order.recorded_orders(markers)
    if incomplete:
        log.warning("recorded_order_incomplete", changelog=topic, reason=incomplete,
                    hint="the replay merges in event-time order: where records arrived late, its decisions "
                    "may differ from the original run's")
    else:
        log.info("recorded_order", changelog=topic, markers=len(markers),
                 runs={asset or "(unrouted)": len(order) for asset, order in orders.items()})
    return orders


def replay_settings(settings: Settings, suffix: str | None, group_id: str | None = None) -> Settings:
    """The settings of a replay: a fresh group, outputs to ``<topic>.<suffix>`` (a dry run, with no
    suffix, keeps the names: it produces nothing)."""
    topics = settings.topics if suffix is None else replace(
        settings.topics, **{name: f"{getattr(settings.topics, name)}.{suffix}" for name in ("adl_orders", "adl_decisions", "adl_dlq", "adl_indicators")})
    return replace(settings, group_id=group_id or f"{settings.group_id}.replay.{suffix or 'dry-run'}",
                   instance_id="replay", topics=topics)


class PrintingCheckpoint:
    """The commit boundary of a dry run: outputs become JSON lines on a stream; nothing commits."""

    def __init__(self, stream, codec, topics: Topics) -> None:
        self._stream = stream
        self._codec = codec
        self._types = {topics.adl_orders: AdlOrder, topics.adl_decisions: ShortfallDecision,
                       topics.adl_indicators: AdlIndicator}
        self._topics = topics
        self.pending = 0
        self.committed_marks: dict = {}

    def produce(self, topic: str, key, value: bytes | None, headers=None, timestamp: int | None = None) -> None:
        if value is None:  # a tombstone (adl-indicators: the position closed)
            line = {"topic": topic, "key": key, "record": None, "ts": timestamp}
        elif topic in self._types:
            record = self._codec.decode(value, self._types[topic])
            line = {"topic": topic, "record": type(record).__name__, **asdict(record)}
        else:
            line = {"topic": topic, "dead_letter": dict((k, v.decode()) for k, v in headers or [])}
        self._stream.write(json.dumps(plain(line)) + "\n")  # decimals as exact strings, without trailing zeros
        self.pending += 1

    def produce_all(self, topic: str, keys, values, timestamps) -> None:
        for key, value, timestamp in zip(keys, values, timestamps):
            self.produce(topic, key, value, timestamp=timestamp)

    def commit(self) -> int:
        self._stream.flush()
        written, self.pending = self.pending, 0
        return written

    def abort(self) -> None:
        self.pending = 0
