"""The state changelog: engine entities as Kafka records, and the restore that reads them back.

Topic ``<group_id>-changelog`` (compacted), one partition per task (:mod:`.topology`). A transaction
writes, to the partition of each task it advanced: the entities its engines changed (key: JSON
``[settle_asset, kind, ...]``, value: JSON, or no value for an entity that is gone), then one
*commit marker* (key ``["commit"]``) holding the input offsets every settle asset of the task has
applied. Every record carries the header ``txn``, unique per transaction. The offset after the
marker is what the transaction commits for that partition in the group (through
``send_offsets_to_transaction``), so "committed" means one exact point of the changelog.

Restore reads a partition from its start up to that committed offset and applies a transaction's
entities only when its own marker follows them. On Apache Kafka a ``read_committed`` reader never
sees aborted records, so this is the plain "read to the end"; on Tansu, which shows aborted records,
it keeps a partly written transaction (a crash mid-commit) out of the restored state.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from ..engine.state import FUND, FUND_HISTORY, LIGHT, MARK, POSITION, RESERVATION, SEEN, STREAM_TIME, WALLET, Key

COMMIT_KEY = b'["commit"]'
TXN_HEADER = "txn"

Offsets = dict[tuple[str, int], int]


def changelog_topic(group_id: str) -> str:
    return f"{group_id}-changelog"


def _str_decimals(value):
    return str(value) if isinstance(value, Decimal) else value


def encode_entity(asset: str, key: Key, value: Any) -> tuple[bytes, bytes | None]:
    """Key and value bytes of one entity of the engine of ``asset`` (value None: a tombstone)."""
    raw_key = json.dumps([asset, *key], separators=(",", ":")).encode()
    if value is None:
        return raw_key, None
    kind = key[0]
    if kind == WALLET:
        balance, as_of, after = value
        value = [str(balance), as_of, [[ts, str(amount)] for ts, amount in after]]
    elif kind == FUND_HISTORY:
        value = [[time, str(balance), until] for time, balance, until in value]
    elif isinstance(value, tuple):
        value = [_str_decimals(v) for v in value]
    else:
        value = _str_decimals(value)
    return raw_key, json.dumps(value, separators=(",", ":")).encode()


def decode_entity(raw_key: bytes, raw_value: bytes) -> tuple[str, Key, Any]:
    """(settle asset, entity key, value) of a changelog record that is not a tombstone."""
    asset, *key = json.loads(raw_key)
    key, value, kind = tuple(key), json.loads(raw_value), key[0]
    if kind == POSITION:
        value = (Decimal(value[0]), Decimal(value[1]))
    elif kind == WALLET:
        value = (Decimal(value[0]), value[1], tuple((ts, Decimal(amount)) for ts, amount in value[2]))
    elif kind == FUND:
        value = Decimal(value)
    elif kind == FUND_HISTORY:
        value = tuple((time, Decimal(balance), until) for time, balance, until in value)
    elif kind == MARK:
        value = (Decimal(value[0]), value[1])
    elif kind == RESERVATION:
        value = (value[0], Decimal(value[1]), value[2])
    elif kind not in (SEEN, LIGHT, STREAM_TIME[0]):
        raise ValueError(f"unknown changelog entity {raw_key!r}")
    return asset, key, value


def encode_marker(offsets: Mapping[str, Offsets]) -> bytes:
    """The commit marker's value: {settle asset: [[topic, partition, next offset], ...]}."""
    return json.dumps({asset: sorted([t, p, o] for (t, p), o in of_asset.items())
                       for asset, of_asset in sorted(offsets.items())}, separators=(",", ":")).encode()


def decode_marker(raw: bytes) -> dict[str, Offsets]:
    return {asset: {(t, p): o for t, p, o in items} for asset, items in json.loads(raw).items()}


@dataclass
class RestoredTask:
    entities: dict[str, dict[Key, Any]] = field(default_factory=dict)  # settle asset -> key -> value
    offsets: dict[str, Offsets] = field(default_factory=dict)  # settle asset -> input offsets
    records: int = 0
    discarded: int = 0  # records of transactions without their marker (aborted, seen on Tansu)


def fold(messages: Iterable) -> RestoredTask:
    """Apply changelog messages, in log order, a transaction at a time (at its marker)."""
    restored = RestoredTask()
    pending: dict[bytes, list] = {}  # txn -> its records so far
    for message in messages:
        restored.records += 1
        txn = dict(message.headers() or ()).get(TXN_HEADER)
        if message.key() == COMMIT_KEY:
            for record in pending.pop(txn, ()):
                _apply(restored, record)
            restored.offsets = decode_marker(message.value())
            restored.discarded += sum(len(records) for records in pending.values())
            pending.clear()
        else:
            pending.setdefault(txn, []).append(message)
    restored.discarded += sum(len(records) for records in pending.values())
    return restored


def _apply(restored: RestoredTask, message) -> None:
    value = message.value()
    if value is None:
        asset, *key = json.loads(message.key())
        restored.entities.get(asset, {}).pop(tuple(key), None)
    else:
        asset, key, value = decode_entity(message.key(), value)
        restored.entities.setdefault(asset, {})[key] = value


def read_partition(config: dict, topic: str, partition: int, end: int, timeout_s: float = 300.0) -> list:
    """The messages of ``topic[partition]`` below offset ``end`` (read_committed)."""
    if end <= 0:
        return []
    consumer = Consumer({**config, "enable.auto.commit": False, "isolation.level": "read_committed",
                         "enable.partition.eof": True})
    try:
        consumer.assign([TopicPartition(topic, partition, 0)])
        messages, deadline = [], time.monotonic() + timeout_s
        while True:
            for message in consumer.consume(10_000, 0.2):
                if message.error() is None and message.offset() < end:
                    messages.append(message)
            (position,) = consumer.position([TopicPartition(topic, partition)])
            if position.offset >= end:
                return messages
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic}[{partition}]: restore read to offset {position.offset} of {end} "
                                   f"within {timeout_s}s")
    finally:
        consumer.close()
