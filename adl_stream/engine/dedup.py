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
"""

from __future__ import annotations

import heapq

SEGMENT_MS = 1_000
PART_IDS = 2_000
"""Most ids in one part (one changelog record): a segment's ids of one take form several parts."""


class SeenIds:
    __slots__ = ("_gone", "_ids", "_new", "_parts", "_segments", "window_ms")

    def __init__(self, window_ms: int) -> None:
        self.window_ms = window_ms
        self._ids: set[str] = set()  # every id held (a set: an entry costs less than in a dict)
        self._parts: dict[int, list[tuple[str, ...]]] = {}  # segment -> its parts taken so far
        self._new: dict[int, list[str]] = {}  # segment -> ids added since the parts were last taken
        self._segments: list[int] = []  # heap of the segments held
        self._gone: list[tuple[int, int]] = []  # (segment, part) forgotten since last taken

    def __contains__(self, id_: str) -> bool:
        return id_ in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, id_: str, ts: int) -> None:
        segment = ts // SEGMENT_MS
        if segment not in self._parts:
            self._parts[segment] = []
            heapq.heappush(self._segments, segment)
        self._ids.add(id_)
        new = self._new.get(segment)
        if new is None:
            self._new[segment] = [id_]
        else:
            new.append(id_)

    def evict(self, now: int) -> None:
        """Forget the segments whose last millisecond is older than ``now - window_ms``."""
        horizon, segments, ids = now - self.window_ms, self._segments, self._ids
        while segments and (segments[0] + 1) * SEGMENT_MS - 1 < horizon:
            segment = heapq.heappop(segments)
            parts = self._parts.pop(segment)
            for part in parts:
                ids.difference_update(part)
            ids.difference_update(self._new.pop(segment, ()))
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
                parts.append(part)
        self._new.clear()
        self._gone = []
        return out

    def part(self, segment: int, n: int) -> tuple[str, ...] | None:
        parts = self._parts.get(segment)
        return parts[n] if parts is not None and n < len(parts) else None

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
        parts[n] = tuple(ids)
        self._ids.update(ids)
