"""De-duplication of input ids (``fill_id``, ``event_id``, ``flow_id``) over an event-time window.

An id is remembered until stream time has moved ``window_ms`` past the event that carried it. A
record older than the window cannot be proven new, so the engine rejects it as ``late_event``
rather than risk applying it twice (see :class:`adl_stream.engine.engine.Engine`).
"""

from __future__ import annotations

from collections import deque


class SeenIds:
    __slots__ = ("window_ms", "_ids", "_order")

    def __init__(self, window_ms: int) -> None:
        self.window_ms = window_ms
        self._ids: set[str] = set()
        self._order: deque[tuple[int, str]] = deque()

    def __contains__(self, id_: str) -> bool:
        return id_ in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, id_: str, ts: int) -> None:
        self._ids.add(id_)
        self._order.append((ts, id_))

    def evict(self, now: int) -> None:
        """Forget ids of events older than ``now - window_ms``.

        Ids leave in arrival order, so an id stays at least its window (longer when an earlier
        arrival carried a later timestamp): eviction errs on the side of remembering.
        """
        horizon = now - self.window_ms
        order, ids = self._order, self._ids
        while order and order[0][0] < horizon:
            ids.discard(order.popleft()[1])
