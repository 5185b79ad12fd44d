"""De-duplication of input ids (``fill_id``, ``event_id``, ``flow_id``) over an event-time window.

An id is remembered while a record carrying it could still be accepted: until stream time has
moved ``window_ms`` past its event. A record older than the window cannot be proven new, so the
engine rejects it as ``late_event`` rather than risk applying it twice (see
:class:`adl_stream.engine.engine.Engine`).

Ids are kept in *segments* of :data:`SEGMENT_MS` of event time (as Kafka Streams' windowed stores
keep segments): a segment is forgotten whole once its last millisecond has left the window, so an
id may stay up to a segment longer than the window, never shorter. For the changelog, the ids a
segment gained since the state was last taken form one *part* (entity ``("s", segment, part)``):
one record per segment per transaction instead of one per id, and one tombstone per part when the
segment is forgotten. The parts are a function of the records and of where the changes were
taken, so a restored window holds the same ids in the same parts.

Memory (README, "Lean positions"): an id costs about 20 B here, not the 105 B of a Python string
in a set. A part is kept as one string, its ids joined by NUL (a tuple only if an id holds a NUL),
and the ids are found through a hash table of 8-byte records, ``hash(id)``, in ``bytes`` buckets
(one object each, its data inline and no spare capacity: adding a record makes the bucket anew, a
copy of a few hundred bytes). ``bytes.find`` looks a hash up in C; a hash found is only a
candidate, confirmed by finding the id itself in the parts (those of the record's own segment
first, where a repeated record is), so membership is exact whatever the hashes do. ``hash`` is
Python's, salted per process: the table is rebuilt on restore, and the answers, the parts and so
every output are the same in any process.
"""

from __future__ import annotations

import heapq
import itertools
import struct

import numpy as np

SEGMENT_MS = 1_000
PART_IDS = 2_000
"""Most ids in one part (one changelog record): a segment's ids of one take form several parts."""

_SEP = "\0"
_RECORD = 8  # bytes of a record: hash(id) as int64, little-endian
_FIRST_BUCKETS = 256
_BUCKET_MAX = 48 * _RECORD  # a bucket this full doubles the buckets (a find scans a few hundred bytes)


def _pack(ids: tuple[str, ...]) -> str | tuple[str, ...]:
    """A part as one string (``\0id\0id\0``), or the tuple itself if an id holds a NUL or it is empty."""
    if not ids or any(_SEP in id_ for id_ in ids):
        return ids
    return _SEP + _SEP.join(ids) + _SEP


def _unpack(part: str | tuple[str, ...]) -> tuple[str, ...]:
    return part if isinstance(part, tuple) else tuple(part[1:-1].split(_SEP))


def _holds(part: str | tuple[str, ...], id_: str) -> bool:
    return id_ in part if isinstance(part, tuple) else f"{_SEP}{id_}{_SEP}" in part


DUPLICATE, LATE, ADDED = 0, -1, 1
"""What :meth:`SeenIds.add_new` did."""

_KEY = struct.Struct("<q").pack


class SeenIds:
    __slots__ = ("_buckets", "_gone", "_last", "_last_new", "_mask", "_new", "_parts", "_segments", "window_ms")

    def __init__(self, window_ms: int) -> None:
        self.window_ms = window_ms
        self._buckets = [b""] * _FIRST_BUCKETS  # the hashes of the ids held, by hash & _mask
        self._mask = _FIRST_BUCKETS - 1
        self._parts: dict[int, list[str | tuple[str, ...]]] = {}  # segment -> its parts taken so far, packed
        self._new: dict[int, list[str]] = {}  # segment -> ids added since the parts were last taken
        self._segments: list[int] = []  # heap of the segments held
        self._gone: list[tuple[int, int]] = []  # (segment, part) forgotten since last taken
        self._last: int | None = None  # the segment of the last id added, while _new holds it
        self._last_new: list[str] = []

    def __contains__(self, id_: str) -> bool:
        h = hash(id_)
        bucket = self._buckets[h & self._mask]
        return bool(bucket) and self._found(bucket, _KEY(h), id_, None)

    def _found(self, bucket: bytes, key: bytes, id_: str, segment: int | None) -> bool:
        """True when ``id_`` is held, its hash ``key`` being looked for in its ``bucket``. A hash
        found is confirmed in the parts: first of ``segment`` (where a repeated record is), then of
        every segment (an id repeated at another time, or another id of the same 64-bit hash)."""
        i = bucket.find(key)
        while i >= 0 and i % _RECORD:
            i = bucket.find(key, i + 1)
        if i < 0:
            return False
        if segment is not None and self._in_segment(id_, segment):
            return True
        return any(self._in_segment(id_, held) for held in self._parts)

    def _in_segment(self, id_: str, segment: int) -> bool:
        parts = self._parts.get(segment)
        if parts is None:
            return False
        new = self._new.get(segment)
        return (new is not None and id_ in new) or any(_holds(part, id_) for part in parts)

    def __len__(self) -> int:
        return sum(map(len, self._buckets)) // _RECORD

    def _insert(self, id_: str) -> None:
        h = hash(id_)
        where = h & self._mask
        bucket = self._buckets[where] = self._buckets[where] + _KEY(h)
        if len(bucket) >= _BUCKET_MAX:
            self._grow()

    def _remove(self, ids) -> None:
        """Drop one record of each of ``ids`` (ids of one hash have equal records: which one goes
        does not matter)."""
        buckets, mask = self._buckets, self._mask
        for id_ in ids:
            h = hash(id_)
            key = _KEY(h)
            bucket = buckets[h & mask]
            i = bucket.find(key)
            while i >= 0 and i % _RECORD:
                i = bucket.find(key, i + 1)
            if i >= 0:
                buckets[h & mask] = bucket[:i] + bucket[i + _RECORD:]

    def _grow(self) -> None:
        """Twice the buckets, the records spread again by their hashes: old bucket ``b`` goes to
        new bucket ``b`` or ``b + n``, so a run of old buckets is spread in one numpy pass, with
        temporaries the size of the run, not of the table."""
        old, n = self._buckets, len(self._buckets)
        buckets = old + old  # every entry is replaced below
        mask, run = 2 * n - 1, 1024
        for first in range(0, n, run):
            width = min(run, n - first)
            records = np.frombuffer(b"".join(old[first:first + width]), dtype="<i8")
            where = records & mask
            upper = where >= n
            key = upper * width + (where - first - upper * n)  # run-local: the half, then the old bucket
            data = records[np.argsort(key, kind="stable")].tobytes()
            ends = (np.cumsum(np.bincount(key, minlength=2 * width)) * _RECORD).tolist()
            start = 0
            for i, end in enumerate(ends):
                buckets[first + i if i < width else n + first + i - width] = data[start:end]
                start = end
        self._buckets, self._mask = buckets, mask

    def add_new(self, id_: str, ts: int, horizon: int) -> int:
        """``id_ in self`` and then :meth:`add` in one look-up: :data:`DUPLICATE` (held; nothing
        added), :data:`LATE` (not held, but ``ts`` is before ``horizon``: nothing added) or
        :data:`ADDED`."""
        h = hash(id_)
        where = h & self._mask
        bucket = self._buckets[where]
        key = _KEY(h)
        segment = ts // SEGMENT_MS
        if bucket:  # _found, inline: most ids are new, their hash not in their bucket
            i = bucket.find(key)
            while i >= 0 and i % _RECORD:
                i = bucket.find(key, i + 1)
            if i >= 0 and (self._in_segment(id_, segment) or any(self._in_segment(id_, s) for s in self._parts)):
                return DUPLICATE
        if ts < horizon:
            return LATE
        if segment == self._last:
            self._last_new.append(id_)
        else:
            self._new_of(segment).append(id_)
        bucket = self._buckets[where] = bucket + key
        if len(bucket) >= _BUCKET_MAX:
            self._grow()
        return ADDED

    def _new_of(self, segment: int) -> list[str]:
        """The ids ``segment`` gained since the last take (the segment held from now on); it is
        remembered as the last one used, since the next ids are most often of the same segment."""
        new = self._new.get(segment)
        if new is None:
            if segment not in self._parts:
                self._parts[segment] = []
                heapq.heappush(self._segments, segment)
            new = self._new[segment] = []
        self._last, self._last_new = segment, new
        return new

    def add(self, id_: str, ts: int) -> None:
        segment = ts // SEGMENT_MS
        (self._last_new if segment == self._last else self._new_of(segment)).append(id_)
        self._insert(id_)

    def evict(self, now: int) -> None:
        """Forget the segments whose last millisecond is older than ``now - window_ms``."""
        horizon, segments = now - self.window_ms, self._segments
        while segments and (segments[0] + 1) * SEGMENT_MS - 1 < horizon:
            segment = heapq.heappop(segments)
            parts = self._parts.pop(segment)
            for part in parts:
                self._remove(_unpack(part))
            self._remove(self._new.pop(segment, ()))
            if segment == self._last:
                self._last = None
            self._gone += [(segment, n) for n in range(len(parts))]

    # -- as changelog entities (see :mod:`.state`) ----------------------------------------------

    def take(self) -> list[tuple[tuple[int, int], tuple[str, ...] | None]]:
        """The parts formed since the last call (the ids each segment gained) and the parts
        forgotten (None), by (segment, part)."""
        out: list = [(key, None) for key in self._gone]
        for segment, new in sorted(self._new.items()):
            parts = self._parts[segment]
            for start in range(0, len(new), PART_IDS):
                part = tuple(new[start:start + PART_IDS])
                out.append(((segment, len(parts)), part))
                parts.append(_pack(part))
        self._new.clear()
        self._last = None
        self._gone = []
        return out

    def part(self, segment: int, n: int) -> tuple[str, ...] | None:
        parts = self._parts.get(segment)
        return _unpack(parts[n]) if parts is not None and n < len(parts) else None

    def part_size(self, segment: int, n: int) -> int:
        """How many ids the part holds (0 for none)."""
        parts = self._parts.get(segment)
        if parts is None or n >= len(parts):
            return 0
        part = parts[n]
        return len(part) if isinstance(part, tuple) else part.count(_SEP) - 1

    def part_keys(self) -> list[tuple[int, int]]:
        return [(segment, n) for segment, parts in self._parts.items() for n in range(len(parts))]

    def load(self, parts) -> None:
        """:meth:`restore_part` of each of ``parts`` (``(segment, n) -> ids``) into a window that holds
        nothing yet (a restore): the hash table is built in one numpy pass (the hashes sorted by
        bucket, one ``bytes`` per bucket), with a sixteenth as many buckets as ids, then doubled
        while a bucket is as full as :meth:`_insert` lets one get."""
        if len(self) or self._parts or self._new:
            for (segment, n), ids in parts.items():
                self.restore_part(segment, n, ids)
            return
        held_parts, every = self._parts, []
        for (segment, n), ids in parts.items():
            held = held_parts.get(segment)
            if held is None:
                held = held_parts[segment] = []
                heapq.heappush(self._segments, segment)
            while len(held) <= n:
                held.append(())
            ids = tuple(ids)
            held[n] = _pack(ids)
            every.append(ids)
        hashes = np.fromiter(map(hash, itertools.chain.from_iterable(every)), np.int64)
        buckets = max(_FIRST_BUCKETS, 1 << (len(hashes) // 16).bit_length())
        where = hashes & (buckets - 1)
        data = hashes[np.argsort(where, kind="stable")].astype("<i8").tobytes()
        ends = (np.cumsum(np.bincount(where, minlength=buckets)) * _RECORD).tolist()
        self._buckets = [data[start:end] for start, end in zip([0, *ends[:-1]], ends)]
        self._mask = buckets - 1
        while max(map(len, self._buckets)) >= _BUCKET_MAX:
            self._grow()

    def restore_part(self, segment: int, n: int, ids: tuple[str, ...]) -> None:
        """Put back part ``n`` of ``segment`` (parts of a segment in any order)."""
        parts = self._parts.get(segment)
        if parts is None:
            parts = self._parts[segment] = []
            heapq.heappush(self._segments, segment)
        while len(parts) <= n:
            parts.append(())
        if parts[n]:  # the part again: its ids are not held twice
            self._remove(_unpack(parts[n]))
        ids = tuple(ids)
        parts[n] = _pack(ids)
        for id_ in ids:
            self._insert(id_)
