"""Snapshots of a task's state in its changelog partition, so a restore reads the state, not its history.

A restore reads the changelog partition from the start of the latest *complete* snapshot to the
committed offset, instead of from offset 0. A snapshot is written *fuzzily*, a chunk per
transaction beside the ordinary entity records, so no transaction stalls on a large state:

- when it starts, the keys of every entity of the task are listed;
- each transaction then writes the values those keys have *at that moment* (a key gone by then is
  skipped), at most ``chunk_entities`` of them, in records of format 2 (:mod:`.entity_batch`) of at
  most :data:`~.entity_batch.RECORD_BYTES`;
- the offset of the first snapshot record (``start``) is known from its delivery report; the
  commit marker of the transaction that writes the last chunk (when ``start`` is known by then,
  else the next one), and every later one, carries ``start`` in its header
  :data:`~.changelog.SNAPSHOT_HEADER` (the marker commits with the chunks, or neither does).

Reading from ``start`` gives the whole state: an entity unchanged since ``start`` is in a chunk; one
changed after ``start`` has its own record after ``start``, applied in log order with the chunks
(a chunk holds the value current when it was written, so whichever comes later is right); one
created after ``start`` has its record, and one deleted is in no chunk written after its deletion.
A snapshot cut short (a crash, an abort) is never named by a marker, so the restore takes the one
before it.

When: a snapshot starts once what a restore would read, the entities of the last snapshot and those
written since it started (``min_records`` at least), exceeds the entities the task holds now by
more than ``1 / TAIL_DIVISOR`` (half), so the entities a restore reads stay within about 1.5 times
the state's size, whatever the length of the history (plus the chunks of a snapshot still being
written, at most one more state: it is written ``chunk_entities`` a transaction). What counts is the
read amplification, not the volume written: a state that only grows (a book being built, every
record a new position or wallet) is its own compact history and takes no snapshot, while a state
that no longer grows is written whole once every half state of changes, two snapshot entities per
changed entity. Entities are weighed by what they cost to write and read (:func:`~..engine.state.weight`:
a part of the de-duplication window as many as the ids it holds), and so is a chunk. The state is
weighed only when the entities written since could have reached that bound
(:meth:`SnapshotWriter.due`), a pass over the state once every half state of changes at most. A
state that shrinks (tombstones) is weighed again once half the last snapshot's weight has been
written since, so a restore then reads at most 1.5 times that snapshot.

Compaction: snapshot records are keyed ``["snapshot", slot, n]`` with the slot alternating (0, 1),
so writing one snapshot never overwrites the chunks of the complete one before it; commit markers
and delta records are keyed by their sequence modulo :data:`~.changelog.MARKER_KEYS`, and a
snapshot is started at the latest every ``MARKER_KEYS // 2`` markers, so a marker or delta a
restore needs is never compacted away by a newer one of the same key.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ..engine.state import SEEN, Entities, Key, gather, keys, weight
from . import entity_batch
from .changelog import (
    MARKER_KEYS,
    SEQ_HEADER,
    SNAPSHOT_HEADER,
    SNAPSHOT_SLOT_HEADER,
    RestoredTask,
    snapshot_key,
)

TAIL_DIVISOR = 2
"""A snapshot is due once the entities written since the last one exceed its size divided by this."""

#: produce(raw key, raw value, on_offset) to the task's changelog partition; ``on_offset``, if not
#: None, is called with the record's offset once it is delivered
Produce = Callable[[bytes, bytes | None, Callable[[int], None] | None], None]


@dataclass
class SnapshotWriter:
    """The snapshot cadence and chunks of one task (one changelog partition)."""

    min_records: int
    chunk_entities: int
    complete: int | None = None
    """Changelog offset where the latest complete snapshot starts (None: none, read from 0)."""
    since: int = 0
    """Changelog entities written since the latest snapshot started (or since the task began)."""
    markers_since: int = 0
    threshold: int = 0
    """``since`` at which :meth:`due` weighs the state again."""
    size: int = 0
    """Entities of the latest snapshot started."""
    slot: int = 1
    """The slot of the latest snapshot started (each snapshot takes the other one)."""
    complete_slot: int = 0
    _pending: deque | None = None  # [engine, asset, keys, next] still to write of the snapshot in progress
    _chunk: int = 0
    _started: list = field(default_factory=list)  # [start] once delivered (set by the callback)

    @property
    def in_progress(self) -> bool:
        return self._pending is not None

    def due(self, engines: list[tuple[Any, str]]) -> int | None:
        """The state's weight when a snapshot is due, else None. It is due when a restore would now
        read more than the live state and a ``1 / TAIL_DIVISOR`` of it: the latest snapshot and the ``since`` entities written after it, against the entities
        the ``(engine, settle asset)`` pairs hold, all weighed as :func:`~..engine.state.weight` (a
        part of seen ids as many entities as it holds ids). The state is weighed (a pass over it)
        only once ``since`` reaches :attr:`threshold`, the least it takes for that to be so had
        nothing been added since it was last weighed."""
        if self.in_progress:
            return None
        if self.markers_since < MARKER_KEYS // 2 and self.since < max(self.min_records, self.threshold):
            return None
        live = sum(weight(engine) for engine, _ in engines)
        most = live + live // TAIL_DIVISOR
        self.threshold = most - self.size + 1
        if self.markers_since >= MARKER_KEYS // 2 or self.size + self.since > most:
            return live
        return None

    def step(self, produce: Produce, written: int, engines: Iterable[tuple[Any, str]]) -> int:
        """After a transaction's ``written`` entity records of the task: start a snapshot of the
        ``(engine, settle asset)`` pairs if one is due, and write the next chunk of the one in
        progress. Returns the snapshot records produced."""
        self.since += written
        engines = list(engines)
        live = self.due(engines)
        if live is not None:
            self.start(((engine, asset, keys(engine)) for engine, asset in engines), live)
        return self.write(produce) if self.in_progress else 0

    def marked(self) -> None:
        """A commit marker of the task was produced."""
        self.since += 1
        self.markers_since += 1

    def start(self, entities: Iterable[tuple[Any, str, list[Key]]], size: int | None = None) -> None:
        """Begin a snapshot of ``(engine, settle asset, keys)`` for each engine of the task, of
        ``size`` (its :func:`~..engine.state.weight`; by default, the keys')."""
        self._pending = deque([engine, asset, keys, 0] for engine, asset, keys in entities if keys)
        if size is None:
            size = sum(len(group[2]) for group in self._pending)
        self.size, self.since, self.markers_since = size, 0, 0
        self.threshold = self.size // TAIL_DIVISOR
        self.slot, self._chunk, self._started = 1 - self.slot, 0, []

    def write(self, produce: Produce) -> int:
        """Write the next chunk (``chunk_entities`` entities, a part of seen ids weighing as many as it
        holds, and at least one); returns the records produced."""
        pending, budget, chunk = self._pending, self.chunk_entities, {}
        while pending and budget > 0:
            group = pending[0]
            engine, asset, keys, start = group
            end, n, part_size = start, len(keys), engine.seen.part_size
            while end < n and budget > 0:
                key = keys[end]
                budget -= part_size(key[1], key[2]) or 1 if key[0] == SEEN and len(key) == 3 else 1
                end += 1
            gather(engine, keys[start:end], chunk.setdefault(asset, Entities()))
            group[3] = end
            if end == len(keys):
                pending.popleft()
        for entities in chunk.values():
            entities.gone.clear()  # a key gone by now: in no chunk
        values = []
        if any(map(len, chunk.values())) or (not pending and self._chunk == 0):
            values = entity_batch.encode(chunk)  # (nothing at all to hold: an empty record, so that
        for value in values:                     # an empty state has a start too)
            produce(snapshot_key(self.slot, self._chunk), value, self._started.append if self._chunk == 0 else None)
            self._chunk += 1
        if not pending:
            self._pending = None
        return len(values)

    def committed(self) -> None:
        """The transaction that wrote the last chunk committed: the snapshot is complete."""
        if self._pending is None and self._started:
            self.complete, self.complete_slot, self._started = self._started[0], self.slot, []

    def marker_headers(self, seq: int) -> list[tuple[str, bytes]]:
        """The headers of the task's commit marker ``seq``: its sequence and, once there is one,
        the latest complete snapshot (offset and slot)."""
        headers = [(SEQ_HEADER, str(seq).encode())]
        complete, slot = self.complete, self.complete_slot
        if self._pending is None and self._started:
            # Its last chunk is in this transaction and its start is known (delivered in an earlier
            # one): this marker names it, so a restore from this commit on skips the snapshot before
            # and its tail. (A transaction that aborts drops the task's state, writer included.)
            complete, slot = self._started[0], self.slot
        if complete is not None:
            headers += [(SNAPSHOT_HEADER, str(complete).encode()), (SNAPSHOT_SLOT_HEADER, str(slot).encode())]
        return headers

    @classmethod
    def restored(cls, state: RestoredTask, min_records: int, chunk_entities: int) -> SnapshotWriter:
        """The writer of a task restored as ``state``: its next snapshot never takes the slot of
        the complete one a restore reads from (compaction would remove that one's records)."""
        return cls(min_records, chunk_entities, complete=state.snapshot, slot=state.snapshot_slot,
                   complete_slot=state.snapshot_slot)
