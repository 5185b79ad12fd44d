"""The state changelog: engine entities as Kafka records, and the restore that reads them back.

Topic ``<group_id>-changelog`` (compacted), one partition per task (:mod:`.topology`). A transaction
writes, to the partition of each task it advanced: the entities its engines changed, in *delta*
records (format 3, :mod:`.entity_batch`: all of the task's changes of the transaction in one or a
few binary, columnar records keyed ``["delta", seq % MARKER_KEYS, n]``), then one *commit marker*
(key ``["commit", seq % MARKER_KEYS]``) holding the input offsets every settle asset of the task
has applied. Every record carries the header ``txn``, unique per transaction; records of format 3
the header ``batch`` = ``3``. The offset after the marker is what the transaction commits for that
partition in the group (through ``send_offsets_to_transaction``), so "committed" means one exact
point of the changelog.

Restore reads a partition up to that committed offset and applies a transaction's records only
when its own marker follows them. On Apache Kafka a ``read_committed`` reader never sees aborted
records, so this is the plain "read to the end"; on Tansu, which shows aborted records, it keeps a
partly written transaction (a crash mid-commit) out of the restored state.

``seq`` counts the task's markers (header ``seq``); keying markers and deltas by it modulo
:data:`MARKER_KEYS` lets compaction keep what a restore needs (see :mod:`.snapshots`). Snapshot
records (key ``["snapshot", slot, n]``, format 3) hold a chunk of the whole state each; a marker's
header ``snapshot`` names the offset where the latest complete snapshot starts, and
:func:`restore_task` reads from there.

Format 1 (before 2026-12-01: one JSON record per entity keyed ``[settle_asset, kind, ...]``, JSON
snapshot chunks, no ``batch`` header) is still read, so a changelog written by an earlier version
restores; so is format 2 (header ``batch`` = ``2``, the same columns an Avro item each, before
format 3 on 2026-12-01). The writer writes format 3 only.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from ..engine.state import (
    FUND,
    FUND_HISTORY,
    LIGHT,
    MARK,
    POSITION,
    RESERVATION,
    SEEN,
    STREAM_TIME,
    WALLET,
    Entities,
    Key,
    take,
)
from . import entity_batch

COMMIT_KEY = b'["commit"]'  # the markers of earlier versions (one key for all)
MARKER_PREFIX = b'["commit"'
SNAPSHOT_PREFIX = b'["snapshot"'
MARKER_KEYS = 100_000
TXN_HEADER = "txn"
SEQ_HEADER = "seq"
SNAPSHOT_HEADER = "snapshot"
SNAPSHOT_SLOT_HEADER = "snapshot_slot"
BATCH_HEADER = "batch"
BATCH_HEADERS = [(BATCH_HEADER, entity_batch.FORMAT)]
"""The headers of a record of the format written (3; besides ``txn``)."""

Offsets = dict[tuple[str, int], int]


def changelog_topic(group_id: str) -> str:
    return f"{group_id}-changelog"


def _str_decimals(value):
    return str(value) if isinstance(value, Decimal) else value


def _plain(key: Key, value: Any):
    """An entity value as JSON-ready data (decimals as exact strings)."""
    kind = key[0]
    if kind == WALLET:
        balance, as_of, after = value
        return [str(balance), as_of, [[ts, str(amount)] for ts, amount in after]]
    if kind == FUND_HISTORY:
        return [[time, str(balance), until] for time, balance, until in value]
    if isinstance(value, tuple):
        return [_str_decimals(v) for v in value]
    return _str_decimals(value)


def _typed(key: Key, value: Any):
    """The entity value of :func:`_plain`'s data."""
    kind = key[0]
    if kind == POSITION:
        return (Decimal(value[0]), Decimal(value[1]))
    if kind == WALLET:
        return (Decimal(value[0]), value[1], tuple((ts, Decimal(amount)) for ts, amount in value[2]))
    if kind == FUND:
        return Decimal(value)
    if kind == FUND_HISTORY:
        return tuple((time, Decimal(balance), until) for time, balance, until in value)
    if kind == MARK:
        return (Decimal(value[0]), value[1])
    if kind == RESERVATION:
        return (value[0], Decimal(value[1]), value[2])
    if kind == SEEN and len(key) == 3:
        return tuple(value)
    if kind not in (SEEN, LIGHT, STREAM_TIME[0]):
        raise ValueError(f"unknown changelog entity {key!r}")
    return value


def encode_entity(asset: str, key: Key, value: Any) -> tuple[bytes, bytes | None]:
    """Key and value bytes of one entity of the engine of ``asset`` (value None: a tombstone)."""
    raw_key = json.dumps([asset, *key], separators=(",", ":")).encode()
    if value is None:
        return raw_key, None
    return raw_key, json.dumps(_plain(key, value), separators=(",", ":")).encode()


def decode_entity(raw_key: bytes, raw_value: bytes) -> tuple[str, Key, Any]:
    """(settle asset, entity key, value) of a changelog record that is not a tombstone."""
    asset, *key = json.loads(raw_key)
    key = tuple(key)
    return asset, key, _typed(key, json.loads(raw_value))


def write_changes(produce, seq: int, engines: Mapping[str, Any]) -> int:
    """Produce, as the delta records of marker ``seq``, what the engines of one task (settle asset
    -> engine) changed since their changes were last taken; returns how many entities (and
    tombstones) they hold, weighed as :meth:`Entities.weight` (a part of seen ids as its ids).
    ``produce(raw_key, raw_value)`` adds :data:`BATCH_HEADERS`."""
    changes = {asset: take(engine) for asset, engine in engines.items()}
    written = sum(c.weight() for c in changes.values())
    if written:
        for n, value in enumerate(entity_batch.encode(changes)):
            produce(delta_key(seq, n), value)
    return written


def delta_key(seq: int, n: int) -> bytes:
    return json.dumps(["delta", seq % MARKER_KEYS, n], separators=(",", ":")).encode()


def marker_key(seq: int) -> bytes:
    return json.dumps(["commit", seq % MARKER_KEYS], separators=(",", ":")).encode()


def snapshot_key(slot: int, chunk: int) -> bytes:
    return json.dumps(["snapshot", slot, chunk], separators=(",", ":")).encode()


def chunk_entry(asset: str, key: Key, value: Any) -> bytes:
    """One entity of a snapshot record (see :func:`join_chunk`)."""
    return json.dumps([[asset, *key], _plain(key, value)], separators=(",", ":")).encode()


def join_chunk(entries: Iterable[bytes]) -> bytes:
    """A snapshot record's value: ``[[[asset, *key], value], ...]`` (no tombstones)."""
    return b"[" + b",".join(entries) + b"]"


def encode_chunk(entities: Iterable[tuple[str, Key, Any]]) -> bytes:
    return join_chunk(chunk_entry(*entity) for entity in entities)


def decode_chunk(raw: bytes):
    for (asset, *key), value in json.loads(raw):
        key = tuple(key)
        yield asset, key, _typed(key, value)


def encode_marker(offsets: Mapping[str, Offsets]) -> bytes:
    """The commit marker's value: {settle asset: [[topic, partition, next offset], ...]}."""
    return json.dumps({asset: sorted([t, p, o] for (t, p), o in of_asset.items())
                       for asset, of_asset in sorted(offsets.items())}, separators=(",", ":")).encode()


def decode_marker(raw: bytes) -> dict[str, Offsets]:
    return {asset: {(t, p): o for t, p, o in items} for asset, items in json.loads(raw).items()}


@dataclass
class RestoredTask:
    entities: dict[str, Entities] = field(default_factory=dict)  # settle asset -> its entities
    offsets: dict[str, Offsets] = field(default_factory=dict)  # settle asset -> input offsets
    records: int = 0
    discarded: int = 0  # records of transactions without their marker (aborted, seen on Tansu)
    seq: int = 0  # markers the task has written (the last marker's ``seq`` + 1)
    snapshot: int | None = None  # where the latest complete snapshot starts, per the last marker
    snapshot_slot: int = 0  # the slot of its records (the next snapshot uses the other one)
    start: int = 0  # the offset the restore read from


def _headers(message) -> dict:
    return dict(message.headers() or ())


def fold(messages: Iterable, restored: RestoredTask | None = None) -> RestoredTask:
    """Apply changelog messages, in log order, a transaction at a time (at its marker)."""
    restored = restored or RestoredTask()
    pending: dict[bytes, list] = {}  # txn -> its records so far
    for message in messages:
        restored.records += 1
        headers = _headers(message)
        txn = headers.get(TXN_HEADER)
        if message.key().startswith(MARKER_PREFIX):
            for record in pending.pop(txn, ()):
                _apply(restored, *record)
            restored.offsets = decode_marker(message.value())
            restored.seq = int(headers.get(SEQ_HEADER, b"-1")) + 1
            snapshot = headers.get(SNAPSHOT_HEADER)
            restored.snapshot = None if snapshot is None else int(snapshot)
            restored.snapshot_slot = int(headers.get(SNAPSHOT_SLOT_HEADER, b"0"))
            restored.discarded += sum(len(records) for records in pending.values())
            pending.clear()
        else:
            pending.setdefault(txn, []).append((message, headers))
    restored.discarded += sum(len(records) for records in pending.values())
    return restored


def _of(entities: dict[str, Entities], asset: str) -> Entities:
    held = entities.get(asset)
    if held is None:
        held = entities[asset] = Entities()
    return held


def _apply(restored: RestoredTask, message, headers: dict) -> None:
    value, entities = message.value(), restored.entities
    if value is None:
        if not message.key().startswith(SNAPSHOT_PREFIX):  # (a snapshot's tombstone holds nothing)
            asset, *key = json.loads(message.key())  # format 1: an entity gone
            _of(entities, asset).drop(tuple(key))
    elif headers.get(BATCH_HEADER) in entity_batch.FORMATS:
        entity_batch.decode(value, entities, headers[BATCH_HEADER])
    elif message.key().startswith(SNAPSHOT_PREFIX):  # format 1
        for asset, key, typed in decode_chunk(value):
            _of(entities, asset).put(key, typed)
    else:
        asset, key, value = decode_entity(message.key(), value)
        _of(entities, asset).put(key, value)


def snapshot_start(last) -> int:
    """Where a restore reads from, given the last committed record (the last marker): the start of
    the snapshot it names, else the partition's start."""
    if last is None or not last.key().startswith(MARKER_PREFIX):
        return 0
    return int(_headers(last).get(SNAPSHOT_HEADER, b"0"))


def restore_task(config: dict, topic: str, partition: int, end: int) -> RestoredTask:
    """A task's state at the committed changelog offset ``end``: the last marker (at ``end - 1``)
    names where the latest complete snapshot starts; the partition is read from there.

    Two consumers, one for each read: one consumer assigned back from ``end`` to the snapshot's
    start first waits for its fetch at ``end`` to come back, a long poll of ``fetch.wait.max.ms``
    (500 ms) for data that is not there. That was 0.49 of a 0.51 s restore of 2,000 positions, a
    task. A shorter ``fetch.wait.max.ms`` (10 ms) was no cure: on Tansu with S3 storage the read of
    the marker then never ended (the broker-restart test hung in it, every time)."""
    if end <= 0:
        return RestoredTask()
    marker = _reader(config)
    try:
        (last,) = list(_messages(marker, topic, partition, end, end - 1)) or (None,)
    finally:
        marker.close()
    start = snapshot_start(last)
    consumer = _reader(config)
    try:
        restored = fold(_messages(consumer, topic, partition, end, start))
    finally:
        consumer.close()
    restored.start = start
    return restored


RESTORE_FETCH = {"max.partition.fetch.bytes": 32 << 20, "fetch.max.bytes": 64 << 20}
"""A restore reads one partition of large records: fetches of 32 MB, not librdkafka's 1 MB (four
snapshot records a round trip); ``[kafka]`` settings override these."""


def _reader(config: dict) -> Consumer:
    return Consumer({**RESTORE_FETCH, **config, "enable.auto.commit": False, "isolation.level": "read_committed",
                     "enable.partition.eof": True})


def _messages(consumer: Consumer, topic: str, partition: int, end: int, start: int,
              timeout_s: float = 300.0) -> Iterator:
    """The messages from ``start`` to below ``end``, as they come (a restore folds them while
    librdkafka fetches more). ``consume`` waits until it has its count or its timeout: the timeout
    is short, so a few large snapshot records are handed over as soon as they arrive."""
    if end <= start:
        return
    consumer.assign([TopicPartition(topic, partition, start)])
    deadline = time.monotonic() + timeout_s
    while True:
        for message in consumer.consume(1_000, 0.02):
            if message.error() is None and start <= message.offset() < end:
                yield message
        (position,) = consumer.position([TopicPartition(topic, partition)])
        if position.offset >= end:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{topic}[{partition}]: restore read to offset {position.offset} of {end} "
                               f"within {timeout_s}s")
