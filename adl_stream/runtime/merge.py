"""Event-time merge of co-partitioned input partitions into one processing order.

Records of one symbol arrive on several topics; the order the consumer returns them in depends on
fetch timing. This merger buffers each partition and releases the record whose partition *head*
has the smallest ``(event time, topic priority, partition, offset)`` — never reordering records of
one partition (as Kafka Streams picks among a task's partitions). A partition listed as *waited
for* must have a buffered head before anything is released, so that a partition still being
fetched cannot be overtaken: the restore uses this to re-apply records in the same order on every
run. Live, an assigned partition with an empty buffer that is not known to be caught up (its
position below the high watermark of the last fetch, or no fetch yet) is waited for until it has
been empty for ``max_idle_ms`` (Kafka Streams' ``max.task.idle.ms``, KIP-695): data already on the
broker is fetched well within that, so the order does not depend on fetch timing, while a caught-up
partition holds nothing back.

The merger notes the order it released records in (:meth:`EventTimeMerger.take_runs`, written to
the commit markers) and can be told to *follow* an order recorded by an earlier run instead of
deciding one (:meth:`EventTimeMerger.follow`, for replays; see :mod:`.merge_order`).
"""

from __future__ import annotations

import heapq
import time
from collections import deque
from collections.abc import Iterator, Set
from typing import Any

from .merge_order import RecordedOrder, note

PartitionKey = tuple[str, int]


class EventTimeMerger:
    def __init__(self, topic_priority: dict[str, int], max_idle_ms: int = 0, clock=time.monotonic) -> None:
        self._priority = topic_priority
        self._max_idle_s = max_idle_ms / 1000
        self._clock = clock
        self._buffers: dict[PartitionKey, deque[tuple[tuple, Any]]] = {}
        self._last_ts: dict[PartitionKey, int] = {}
        self._empty_since: dict[PartitionKey, float] = {}  # assigned partitions with an empty buffer
        self._runs: list = []  # the release order since take_runs(), see merge_order.note
        self._order: RecordedOrder | None = None

    def assign(self, keys) -> None:
        """Partitions whose buffers must be waited for (until idle) before releasing others."""
        now = self._clock()
        for key in keys:
            if not self._buffers.get(key):
                self._empty_since.setdefault(key, now)

    def __len__(self) -> int:
        return sum(len(b) for b in self._buffers.values())

    def empty(self) -> list[PartitionKey]:
        """Assigned partitions with nothing buffered."""
        return list(self._empty_since)

    def buffered(self, key: PartitionKey) -> int:
        buffer = self._buffers.get(key)
        return len(buffer) if buffer else 0

    def add(self, key: PartitionKey, offset: int, ts: int | None, item: Any) -> None:
        """Buffer ``item`` of partition ``key`` (topic, partition); ``ts`` None (an undecodable
        record) sorts with its partition's last ts."""
        topic, partition = key
        last_ts = self._last_ts
        if ts is None:
            ts = last_ts.get(key, -1)
        last_ts[key] = ts
        buffer = self._buffers.get(key)
        if not buffer:
            if buffer is None:
                buffer = self._buffers[key] = deque()
            self._empty_since.pop(key, None)
        buffer.append(((ts, self._priority[topic], partition, offset), item))

    def drop(self, keys) -> None:
        """Forget the buffers of revoked partitions."""
        for key in keys:
            self._buffers.pop(key, None)
            self._empty_since.pop(key, None)

    def holding_back(self, waiting: Set[PartitionKey] = frozenset(),
                     caught_up: Set[PartitionKey] = frozenset()) -> list[tuple[PartitionKey, str]]:
        """While records are buffered, the partitions :meth:`release` waits for, with why: a
        ``waiting`` partition with no head (``no fetch answered yet``), or an empty one not known to
        be caught up (``empty below its high watermark``, for at most ``max_idle_ms``)."""
        if not len(self):
            return []
        now, buffers = self._clock(), self._buffers
        held = [(key, "no fetch answered yet") for key in sorted(waiting) if not buffers.get(key)]
        held += [(key, "empty below its high watermark") for key, since in sorted(self._empty_since.items())
                 if key not in caught_up and key not in waiting and now - since < self._max_idle_s]
        return held

    def follow(self, order: RecordedOrder) -> None:
        """Release in ``order`` (its runs are consumed) until it is exhausted, then by event time."""
        self._order = order

    def take_runs(self) -> list:
        """The runs released since the last call (see :func:`.merge_order.note`)."""
        runs, self._runs = self._runs, []
        return runs

    def _follow(self, order: RecordedOrder, caught_up: Set[PartitionKey]) -> Iterator[Any]:
        buffers = self._buffers
        while order:
            key, end = order.head()
            buffer = buffers.get(key)
            if not buffer:
                if key in caught_up:
                    order.abandon(key, f"the partition ends before offset {end}")
                return  # its next record is still to come
            (_, _, _, offset), item = buffer[0]
            if offset >= end:
                order.abandon(key, f"no record of this settle asset below offset {end}")
                return
            buffer.popleft()
            if not buffer:
                self._empty_since[key] = self._clock()
            order.released(offset)
            note(self._runs, key, offset)
            yield item

    def release(self, waiting: Set[PartitionKey] = frozenset(),
                caught_up: Set[PartitionKey] = frozenset()) -> Iterator[Any]:
        """Yield buffered items in merged order while every ``waiting`` partition has a head and
        every other assigned partition has a head, is ``caught_up``, or has been empty for
        ``max_idle_ms``."""
        if self._order is not None:
            yield from self._follow(self._order, caught_up)
            if self._order:
                return
            self._order = None
        buffers, empty_since, max_idle_s = self._buffers, self._empty_since, self._max_idle_s
        now = self._clock()
        if any(not buffers.get(key) for key in waiting):
            return
        if any(now - since < max_idle_s for key, since in empty_since.items() if key not in caught_up):
            return
        heads = [(buffer[0][0], key) for key, buffer in buffers.items() if buffer]
        heapq.heapify(heads)
        heappop, heappush = heapq.heappop, heapq.heappush
        while heads:
            _, key = heappop(heads)
            buffer = buffers[key]
            # A run of this partition: its records go out without a heap operation each while its
            # next head is earlier than every other partition's (the order is the same as popping
            # the heap for each record: the sort keys are unique).
            (_, _, _, offset), item = buffer.popleft()
            note(self._runs, key, offset)
            # [key, end]: the run's next records move its end (note, inline; a release is never resumed
            # after take_runs: the processor drains, then commits)
            run = self._runs[-1]
            while buffer:
                head = buffer[0][0]
                if heads and heads[0][0] < head:
                    heappush(heads, (head, key))
                    break
                yield item
                (_, _, _, offset), item = buffer.popleft()
                run[1] = offset + 1
            else:
                empty_since[key] = now
                yield item
                # Only the partition just drained can stop the merge: it is waited for, or it may still
                # bring an older record (not caught up) and has been empty for 0 ms < max_idle_ms.
                if key in waiting or (max_idle_s > 0 and key not in caught_up):
                    return
                continue
            yield item
