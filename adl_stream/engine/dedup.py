"""De-duplication of input ids (``fill_id``, ``event_id``, ``flow_id``) over an event-time window.

An id is remembered until stream time has moved ``window_ms`` past the event that carried it. A
record older than the window cannot be proven new, so the engine rejects it as ``late_event``
rather than risk applying it twice (see :class:`adl_stream.engine.engine.Engine`).

Ids are kept by the millisecond of their event: one list per millisecond (a crash brings hundreds
of fills a millisecond), under a heap of the milliseconds, so an id costs its dict entry and one
list slot, and the event time is one shared int per millisecond.
"""

from __future__ import annotations

import heapq


class SeenIds:
    __slots__ = ("window_ms", "_ids", "_by_ts", "_times")

    def __init__(self, window_ms: int) -> None:
        self.window_ms = window_ms
        self._ids: dict[str, int] = {}  # id -> event time
        self._by_ts: dict[int, list] = {}  # event time -> [event time, its ids in arrival order]
        self._times: list[int] = []  # heap of the keys of _by_ts

    def __contains__(self, id_: str) -> bool:
        return id_ in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def __iter__(self):
        return iter(self._ids)

    def ts(self, id_: str) -> int | None:
        return self._ids.get(id_)

    def add(self, id_: str, ts: int) -> None:
        ids = self._by_ts.get(ts)
        if ids is None:
            ids = self._by_ts[ts] = [ts]  # the millisecond's one int first, its ids after it
            heapq.heappush(self._times, ts)
        self._ids[id_] = ids[0]
        ids.append(id_)

    def evict(self, now: int) -> list[str]:
        """Forget (and return) the ids of events older than ``now - window_ms``.

        By event time, not arrival: an id stays exactly as long as a record carrying it could still
        be accepted, and the set is a function of its contents (a restored set evicts the same ids).
        """
        horizon, times, ids = now - self.window_ms, self._times, self._ids
        evicted = []
        while times and times[0] < horizon:
            gone = self._by_ts.pop(heapq.heappop(times))[1:]
            for id_ in gone:
                del ids[id_]
            evicted += gone
        return evicted
