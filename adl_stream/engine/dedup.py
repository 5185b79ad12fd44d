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

Memory (README, "Lean positions"): an id costs about 25 B here, not the 105 B of a Python string in
a set. A part is kept as one string, its ids joined by NUL (a tuple only if an id holds a NUL), and
the ids are found through a hash table of fixed-size records in ``bytearray`` buckets: per id, 8
bytes of ``hash(id)`` and the low 32 bits of its segment (the segments held span far less than
2**32 seconds, so those bits name one segment). ``bytearray.find`` looks a record up in C; a hash
that matches is only a candidate, confirmed by finding the id itself in its segment's parts, so
membership is exact whatever the hashes do. ``hash`` is Python's (salted per process): the table is
rebuilt on restore, and the answers, the parts and so every output are the same in any process.
"""

from __future__ import annotations

import heapq
import struct

import numpy as np

SEGMENT_MS = 1_000
PART_IDS = 2_000
"""Most ids in one part (one changelog record): a segment's ids of one take form several parts."""

_SEP = "\0"
_RECORD = 12  # bytes of a record: hash (int64) and segment (its low 32 bits), little-endian
_RECORDS = np.dtype([("hash", "<i8"), ("segment", "<u4")])
_FIRST_BUCKETS = 256
_GROW_AT = 24  # records per bucket on average before the buckets double (a find scans < 300 B)


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
_PACK = struct.Struct("<qI").pack
_LOW = struct.Struct("<I").unpack_from


class SeenIds:
    __slots__ = ("_buckets", "_count", "_gone", "_limit", "_mask", "_new", "_parts", "_segments", "window_ms")

    def __init__(self, window_ms: int) -> None:
        self.window_ms = window_ms
        self._buckets = [bytearray() for _ in range(_FIRST_BUCKETS)]  # records by hash & _mask
        self._mask = _FIRST_BUCKETS - 1
        self._count = 0  # records held (one per id held)
        self._limit = _GROW_AT * _FIRST_BUCKETS  # records before the buckets grow
        self._parts: dict[int, list[str | tuple[str, ...]]] = {}  # segment -> its parts taken so far, packed
        self._new: dict[int, list[str]] = {}  # segment -> ids added since the parts were last taken
        self._segments: list[int] = []  # heap of the segments held
        self._gone: list[tuple[int, int]] = []  # (segment, part) forgotten since last taken

    def __contains__(self, id_: str) -> bool:
        h = hash(id_)
        bucket = self._buckets[h & self._mask]
        if not bucket:
            return False
        key = _KEY(h)
        i = bucket.find(key)
        while i >= 0:
            if i % _RECORD == 0 and self._in_segment(id_, _LOW(bucket, i + 8)[0]):
                return True
            i = bucket.find(key, i + 1)
        return False

    def _in_segment(self, id_: str, low: int) -> bool:
        """True when ``id_`` is held in the segment whose low 32 bits are ``low``."""
        if not self._segments:
            return False
        first = self._segments[0]  # every segment held is in [first, first + 2**32)
        segment = first + ((low - first) & 0xFFFFFFFF)
        parts = self._parts.get(segment)
        if parts is None:
            return False
        new = self._new.get(segment)
        return (new is not None and id_ in new) or any(_holds(part, id_) for part in parts)

    def __len__(self) -> int:
        return self._count

    def _insert(self, id_: str, segment: int) -> None:
        h = hash(id_)
        self._buckets[h & self._mask] += _PACK(h, segment & 0xFFFFFFFF)
        self._count += 1
        if self._count > self._limit:
            self._grow()

    def _remove(self, ids, segment: int) -> None:
        """Drop the records of ``ids`` in ``segment``."""
        buckets, mask = self._buckets, self._mask
        low = segment & 0xFFFFFFFF
        for id_ in ids:
            h = hash(id_)
            record = _PACK(h, low)
            bucket = buckets[h & mask]
            i = bucket.find(record)
            while i >= 0 and i % _RECORD:
                i = bucket.find(record, i + 1)
            if i >= 0:
                del bucket[i:i + _RECORD]
                self._count -= 1

    def _grow(self) -> None:
        """Twice the buckets, the records spread again by their hashes: old bucket ``b`` goes to
        new bucket ``b`` or ``b + n``, so a run of old buckets is spread in one numpy pass, with
        temporaries the size of the run, not of the table."""
        old, n = self._buckets, len(self._buckets)
        buckets: list[bytearray] = old + old  # every entry is replaced below
        mask, run = 2 * n - 1, 1024
        for first in range(0, n, run):
            width = min(run, n - first)
            records = np.frombuffer(b"".join(old[first:first + width]), dtype=_RECORDS)
            where = records["hash"] & mask
            upper = where >= n
            key = upper * width + (where - first - upper * n)  # run-local: the half, then the old bucket
            data = records[np.argsort(key, kind="stable")].tobytes()
            ends = (np.cumsum(np.bincount(key, minlength=2 * width)) * _RECORD).tolist()
            start = 0
            for i, end in enumerate(ends):
                buckets[first + i if i < width else n + first + i - width] = bytearray(data[start:end])
                start = end
        self._buckets, self._mask, self._limit = buckets, mask, _GROW_AT * len(buckets)

    def add_new(self, id_: str, ts: int, horizon: int) -> int:
        """``id_ in self`` and then :meth:`add` in one look-up: :data:`DUPLICATE` (held; nothing
        added), :data:`LATE` (not held, but ``ts`` is before ``horizon``: nothing added) or
        :data:`ADDED`."""
        h = hash(id_)
        bucket = self._buckets[h & self._mask]
        if bucket:
            key = _KEY(h)
            i = bucket.find(key)
            while i >= 0:
                if i % _RECORD == 0 and self._in_segment(id_, _LOW(bucket, i + 8)[0]):
                    return DUPLICATE
                i = bucket.find(key, i + 1)
        if ts < horizon:
            return LATE
        segment = ts // SEGMENT_MS
        new = self._new.get(segment)
        if new is None:
            if segment not in self._parts:
                self._parts[segment] = []
                heapq.heappush(self._segments, segment)
            self._new[segment] = [id_]
        else:
            new.append(id_)
        bucket += _PACK(h, segment & 0xFFFFFFFF)
        self._count += 1
        if self._count > self._limit:
            self._grow()
        return ADDED

    def add(self, id_: str, ts: int) -> None:
        segment = ts // SEGMENT_MS
        new = self._new.get(segment)
        if new is None:
            if segment not in self._parts:
                self._parts[segment] = []
                heapq.heappush(self._segments, segment)
            self._new[segment] = [id_]
        else:
            new.append(id_)
        h = hash(id_)
        self._buckets[h & self._mask] += _PACK(h, segment & 0xFFFFFFFF)
        self._count += 1
        if self._count > self._limit:
            self._grow()

    def evict(self, now: int) -> None:
        """Forget the segments whose last millisecond is older than ``now - window_ms``."""
        horizon, segments = now - self.window_ms, self._segments
        while segments and (segments[0] + 1) * SEGMENT_MS - 1 < horizon:
            segment = heapq.heappop(segments)
            parts = self._parts.pop(segment)
            for part in parts:
                self._remove(_unpack(part), segment)
            self._remove(self._new.pop(segment, ()), segment)
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
        self._gone = []
        return out

    def part(self, segment: int, n: int) -> tuple[str, ...] | None:
        parts = self._parts.get(segment)
        return _unpack(parts[n]) if parts is not None and n < len(parts) else None

    def part_keys(self) -> list[tuple[int, int]]:
        return [(segment, n) for segment, parts in self._parts.items() for n in range(len(parts))]

    def restore_part(self, segment: int, n: int, ids: tuple[str, ...]) -> None:
        """Put back part ``n`` of ``segment`` (parts of a segment in any order)."""
        parts = self._parts.get(segment)
        if parts is None:
            parts = self._parts[segment] = []
            heapq.heappush(self._segments, segment)
        while len(parts) <= n:
            parts.append(())
        if parts[n]:  # the part again: its ids are not held twice
            self._remove(_unpack(parts[n]), segment)
        ids = tuple(ids)
        parts[n] = _pack(ids)
        for id_ in ids:
            self._insert(id_, segment)
