"""De-duplication of input ids (``fill_id``, ``event_id``, ``flow_id``) over an event-time window.

An id is remembered until stream time has moved ``window_ms`` past the event that carried it. A
record older than the window cannot be proven new, so the engine rejects it as ``late_event``
rather than risk applying it twice (see :class:`adl_stream.engine.engine.Engine`).
"""

from __future__ import annotations

import heapq


class SeenIds:
    __slots__ = ("window_ms", "_ids", "_expiry")

    def __init__(self, window_ms: int) -> None:
        self.window_ms = window_ms
        self._ids: dict[str, int] = {}  # id -> event time
        self._expiry: list[tuple[int, str]] = []

    def __contains__(self, id_: str) -> bool:
        return id_ in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def ts(self, id_: str) -> int | None:
        return self._ids.get(id_)

    def add(self, id_: str, ts: int) -> None:
        self._ids[id_] = ts
        heapq.heappush(self._expiry, (ts, id_))

    def evict(self, now: int) -> list[str]:
        """Forget (and return) the ids of events older than ``now - window_ms``.

        By event time, not arrival: an id stays exactly as long as a record carrying it could still
        be accepted, and the set is a function of its contents (a restored set evicts the same ids).
        """
        horizon, expiry, ids = now - self.window_ms, self._expiry, self._ids
        evicted = []
        while expiry and expiry[0][0] < horizon:
            id_ = heapq.heappop(expiry)[1]
            del ids[id_]
            evicted.append(id_)
        return evicted
