"""The merge order recorded live and followed by a replay (runtime/merge_order.py)."""

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from adl_stream.runtime.changelog import SEQ_HEADER, encode_marker, marker_key
from adl_stream.runtime.merge import EventTimeMerger
from adl_stream.runtime.merge_order import (
    MERGE_HEADER,
    RecordedOrder,
    decode_runs,
    encode_runs,
    recorded_orders,
)
from tests.runtime.test_merge import PRIORITY
from tests.runtime.test_topology import Message

PARTITIONS = [("fills", 0), ("fills", 1), ("shortfalls", 0)]


def _live(arrivals: list[list[tuple]]) -> tuple[list[str], list]:
    """Merge ``arrivals`` (per fetch, the records that came: (partition, offset, ts)) as live
    processing does, everything released at each fetch; the release order and its runs."""
    merger, released = EventTimeMerger(PRIORITY), []
    for fetched in arrivals:
        for (topic, partition), offset, ts in fetched:
            merger.add((topic, partition), offset, ts, f"{topic}[{partition}]@{offset}")
        released += merger.release()
    return released, merger.take_runs()


@st.composite
def late_arrivals(draw):
    """Records of three partitions (event times not ordered across them), arriving in random
    portions: a partition may come long after the others."""
    records = {key: draw(st.lists(st.integers(0, 50), max_size=8)) for key in PARTITIONS}
    fetched = {key: 0 for key in PARTITIONS}
    arrivals = []
    while any(fetched[key] < len(ts) for key, ts in records.items()):
        batch = []
        for key, ts in records.items():
            n = draw(st.integers(0, len(ts) - fetched[key]))
            batch += [(key, offset, ts[offset]) for offset in range(fetched[key], fetched[key] + n)]
            fetched[key] += n
        arrivals.append(batch)
    return arrivals


@settings(max_examples=200, deadline=None)
@given(late_arrivals())
def test_a_merger_that_has_everything_follows_the_recorded_live_order_exactly(arrivals):
    live, runs = _live(arrivals)
    everything = [record for fetched in arrivals for record in fetched]
    replay = EventTimeMerger(PRIORITY)
    replay.follow(RecordedOrder("USDT", runs))
    for (topic, partition), offset, ts in everything:
        replay.add((topic, partition), offset, ts, f"{topic}[{partition}]@{offset}")
    assert list(replay.release()) == live
    assert replay.take_runs() == runs  # the replay records the same order again


def test_late_records_are_released_where_live_processing_released_them_not_by_event_time():
    # fills[1] holds older records but arrives after the others were decided.
    arrivals = [[(("fills", 0), 0, 10), (("shortfalls", 0), 0, 20)], [(("fills", 1), 0, 5)]]
    live, runs = _live(arrivals)
    assert live == ["fills[0]@0", "shortfalls[0]@0", "fills[1]@0"]
    by_event_time = EventTimeMerger(PRIORITY)
    following = EventTimeMerger(PRIORITY)
    following.follow(RecordedOrder("USDT", runs))
    for merger in (by_event_time, following):
        for (topic, partition), offset, ts in [r for fetched in arrivals for r in fetched]:
            merger.add((topic, partition), offset, ts, f"{topic}[{partition}]@{offset}")
    assert list(by_event_time.release()) == ["fills[1]@0", "fills[0]@0", "shortfalls[0]@0"]
    assert list(following.release()) == live


def test_a_follower_waits_for_the_partition_the_order_names_then_goes_on_by_event_time():
    order = RecordedOrder("USDT", [[("fills", 1), 1], [("fills", 0), 1]])
    merger = EventTimeMerger(PRIORITY)
    merger.follow(order)
    merger.add(("fills", 0), 0, 1, "f0@0")
    assert list(merger.release()) == []  # fills[1] first, and it has not come yet
    merger.add(("fills", 1), 0, 9, "f1@0")
    merger.add(("fills", 0), 1, 2, "f0@1 (after the recorded order)")
    assert list(merger.release()) == ["f1@0", "f0@0", "f0@1 (after the recorded order)"]
    assert len(order) == 0


def test_a_resumed_replay_skips_the_runs_it_applied_and_finishes_a_run_it_began():
    order = RecordedOrder("USDT", [[("fills", 0), 3], [("fills", 1), 2], [("fills", 0), 5]])
    order.skip_applied({("fills", 0): 3, ("fills", 1): 1})  # committed after fills[1]@0
    merger = EventTimeMerger(PRIORITY)
    merger.follow(order)
    for offset, ts in ((3, 1), (4, 1)):
        merger.add(("fills", 0), offset, ts, f"f0@{offset}")
    merger.add(("fills", 1), 1, 99, "f1@1")
    assert list(merger.release()) == ["f1@1", "f0@3", "f0@4"]


def test_an_order_the_input_does_not_match_is_abandoned_for_event_time():
    order = RecordedOrder("USDT", [[("fills", 0), 2], [("fills", 1), 1]])
    merger = EventTimeMerger(PRIORITY)
    merger.follow(order)
    merger.add(("fills", 0), 5, 3, "f0@5")  # nothing below offset 2 of this asset: another input
    merger.add(("fills", 1), 0, 1, "f1@0")
    assert list(merger.release()) == ["f1@0", "f0@5"]
    assert len(order) == 0
    ended = RecordedOrder("USDT", [[("fills", 0), 2]])
    merger = EventTimeMerger(PRIORITY)
    merger.follow(ended)
    merger.add(("fills", 1), 0, 1, "f1@0")
    assert list(merger.release(caught_up={("fills", 0)})) == ["f1@0"]  # fills[0] ended: nothing to wait for
    assert len(ended) == 0


def _marker(partition: int, seq: int, runs: dict, offsets: dict, merge_header: bool = True) -> Message:
    headers = [(SEQ_HEADER, str(seq).encode())]
    if merge_header:
        headers.append((MERGE_HEADER, encode_runs(runs, offsets)))
    return Message(marker_key(seq), encode_marker(offsets), f"txn{seq}", headers, partition)


def test_runs_are_encoded_against_the_offsets_of_their_marker():
    offsets = {"USDT": {("fills", 0): 7, ("fills", 1): 3, ("shortfalls", 0): 1}}
    runs = {"USDT": [[("fills", 1), 3], [("fills", 0), 7], [("shortfalls", 0), 1]]}
    raw = encode_runs(runs, offsets)
    assert json.loads(raw) == {"USDT": [1, 3, 0, 7, 2, 1]}
    assert decode_runs(raw, offsets) == runs


def test_the_recorded_order_is_the_markers_in_sequence_and_only_when_complete():
    o1 = {"USDT": {("fills", 0): 2}}
    o2 = {"USDT": {("fills", 0): 4, ("fills", 1): 1}}
    aborted = {"USDT": [[("fills", 1), 1]]}  # seq 1 written, aborted (Tansu shows it), written again
    markers = [_marker(0, 0, {"USDT": [[("fills", 0), 2]]}, o1), _marker(0, 1, aborted, o2),
               _marker(0, 1, {"USDT": [[("fills", 0), 4], [("fills", 1), 1]]}, o2)]
    orders, incomplete = recorded_orders(markers)
    assert incomplete is None
    order, runs = orders["USDT"], []
    while order:
        runs.append(order.head())
        order.released(order.head()[1] - 1)
    assert runs == [(("fills", 0), 2), (("fills", 0), 4), (("fills", 1), 1)]

    assert recorded_orders(markers[2:])[1] == "changelog partition 0 lacks marker 0 (compacted, or never written)"
    older = [_marker(0, 0, {}, o1, merge_header=False)]
    assert "before merge orders were recorded" in recorded_orders(older)[1]
