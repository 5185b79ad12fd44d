"""The merge order a live run took, recorded in its commit markers, so a replay takes the same one.

Live, the event-time merge (:mod:`.merge`) can only order what has arrived: a partition whose
records come late (an upstream producer behind, two feeds with overlapping event times) is merged
after records with later event times were decided. A replay reads everything at once, and its
merge would put the late records first: other decisions. So each commit marker carries, in its
header :data:`MERGE_HEADER`, the order in which the transaction released the records of each
settle asset, as *runs*: ``{settle asset: [i, end, i, end, ...]}``, where ``i`` is the index of the
partition in the marker's (sorted) offsets of that asset and ``end`` the offset after the run's
last record. Records of one partition are always released in offset order, so the runs say
everything.

A replay (``adl-stream replay``, unless ``--order event-time``) reads the markers of the original
group's changelog and makes every merge follow its asset's runs (:class:`RecordedOrder`), then go
on in event-time order past the last committed transaction. The recorded order is used only when
it is complete: every marker of the task from the first (``seq`` 0) on, each with the header.
Otherwise (markers of a version before this one, or compacted away after
:data:`~.changelog.MARKER_KEYS` commits) the replay says so and merges in event-time order; a
recorded order that does not match the input (other topics, records missing) is dropped the same
way, with a warning naming the partition.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterable, Mapping

import structlog

from .changelog import MARKER_PREFIX, SEQ_HEADER, Offsets, decode_marker

log = structlog.get_logger("adl_stream.merge_order")

MERGE_HEADER = "merge"

PartitionKey = tuple[str, int]
Run = list  # [partition key, offset after its last record]


def note(runs: list[Run], key: PartitionKey, offset: int) -> None:
    """Record that the record at ``offset`` of ``key`` was released next."""
    if runs and runs[-1][0] == key:
        runs[-1][1] = offset + 1
    else:
        runs.append([key, offset + 1])


def encode_runs(runs: Mapping[str, list[Run]], offsets: Mapping[str, Offsets]) -> bytes:
    """The :data:`MERGE_HEADER` of a marker whose offsets are ``offsets`` (settle asset -> input
    offsets, as the marker holds them)."""
    encoded = {}
    for asset, of_asset in sorted(runs.items()):
        if of_asset:
            index = {key: i for i, key in enumerate(sorted(offsets[asset]))}
            encoded[asset] = [n for key, end in of_asset for n in (index[key], end)]
    return json.dumps(encoded, separators=(",", ":")).encode()


def decode_runs(raw: bytes, offsets: Mapping[str, Offsets]) -> dict[str, list[Run]]:
    decoded = {}
    for asset, flat in json.loads(raw).items():
        keys = sorted(offsets[asset])
        decoded[asset] = [[keys[flat[n]], flat[n + 1]] for n in range(0, len(flat), 2)]
    return decoded


class RecordedOrder:
    """The runs of one settle asset still to follow, in order (see the module's docstring)."""

    __slots__ = ("asset", "_runs")

    def __init__(self, asset: str, runs: Iterable[Run]) -> None:
        self.asset = asset
        self._runs = deque(tuple(run) for run in runs)

    def __len__(self) -> int:
        return len(self._runs)

    def skip_applied(self, applied: Offsets) -> None:
        """Forget the runs whose records are all below ``applied`` (state restored past them: a
        replay that resumes). What was applied is a prefix of the order, so these are exactly the
        runs already followed, and a run partly applied goes on from its next record."""
        self._runs = deque(run for run in self._runs if run[1] > applied.get(run[0], 0))

    def head(self) -> tuple[PartitionKey, int]:
        """(partition, end) of the run to release from next."""
        return self._runs[0]

    def released(self, offset: int) -> None:
        """The head run's record at ``offset`` was released."""
        if offset + 1 >= self._runs[0][1]:
            self._runs.popleft()

    def abandon(self, key: PartitionKey, why: str) -> None:
        """The input does not hold what the order says: merge in event-time order from here on."""
        log.warning("recorded_order_abandoned", settle_asset=self.asset or "(unrouted)", topic=key[0],
                    partition=key[1], reason=why, runs_left=len(self._runs),
                    hint="the rest is merged in event-time order, so decisions may differ from the "
                    "original run's from here on")
        self._runs.clear()


def recorded_orders(markers: Iterable) -> tuple[dict[str, RecordedOrder], str | None]:
    """The recorded order of every settle asset in the markers of a changelog (messages in log
    order per partition), and None; or ({}, the reason) when it is not complete."""
    by_partition: dict[int, dict[int, dict[str, list[Run]]]] = {}
    for message in markers:
        if not message.key().startswith(MARKER_PREFIX):
            continue
        headers = dict(message.headers() or ())
        if SEQ_HEADER not in headers or MERGE_HEADER not in headers:
            return {}, (f"changelog partition {message.partition()} has markers written before merge "
                        "orders were recorded")
        offsets = decode_marker(message.value())
        # A later marker of the same seq replaces an earlier one: on a broker that shows aborted
        # transactions (Tansu), the retry after an abort writes the same seq again.
        by_partition.setdefault(message.partition(), {})[int(headers[SEQ_HEADER])] = (
            decode_runs(headers[MERGE_HEADER], offsets))
    runs: dict[str, list[Run]] = {}
    for partition, by_seq in sorted(by_partition.items()):
        if sorted(by_seq) != list(range(len(by_seq))):
            first_gap = next(seq for seq in range(len(by_seq) + 1) if seq not in by_seq)
            return {}, f"changelog partition {partition} lacks marker {first_gap} (compacted, or never written)"
        for seq in range(len(by_seq)):
            for asset, of_asset in by_seq[seq].items():
                runs.setdefault(asset, []).extend(of_asset)
    return {asset: RecordedOrder(asset, of_asset) for asset, of_asset in runs.items()}, None
