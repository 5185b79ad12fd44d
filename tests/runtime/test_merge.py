from hypothesis import given, settings
from hypothesis import strategies as st

from adl_stream.runtime.merge import EventTimeMerger

PRIORITY = {"funds": 0, "fills": 3, "shortfalls": 4}


def test_releases_by_event_time_then_topic_priority_never_reordering_a_partition():
    m = EventTimeMerger(PRIORITY)
    m.add(("fills", 0), 0, 10, "fill@10")
    m.add(("fills", 0), 1, 5, "fill@5 (after fill@10 in its partition)")
    m.add(("shortfalls", 0), 0, 7, "shortfall@7")
    m.add(("funds", 0), 0, 7, "fund@7")
    m.add(("shortfalls", 1), 0, 7, "shortfall@7 p1")
    assert list(m.release()) == [
        "fund@7", "shortfall@7", "shortfall@7 p1", "fill@10", "fill@5 (after fill@10 in its partition)",
    ]
    assert len(m) == 0


def test_waits_for_a_waited_partition_without_a_head():
    m = EventTimeMerger(PRIORITY)
    m.add(("shortfalls", 0), 0, 50, "shortfall@50")
    m.add(("fills", 0), 0, 10, "fill@10")
    released = m.release(waiting={("fills", 0)})
    assert next(released) == "fill@10"
    assert list(released) == []  # fills[0] is empty and waited for: the shortfall must not overtake
    m.add(("fills", 0), 1, 60, "fill@60")
    assert list(m.release(waiting={("fills", 0)})) == ["shortfall@50", "fill@60"]


def test_an_undecodable_record_keeps_its_place_in_the_partition():
    m = EventTimeMerger(PRIORITY)
    m.add(("fills", 0), 0, 20, "fill@20")
    m.add(("fills", 0), 1, None, "garbage")
    m.add(("shortfalls", 0), 0, 30, "shortfall@30")
    assert list(m.release()) == ["fill@20", "garbage", "shortfall@30"]


def test_dropped_partitions_release_nothing():
    m = EventTimeMerger(PRIORITY)
    m.add(("fills", 0), 0, 1, "a")
    m.add(("fills", 1), 0, 2, "b")
    m.drop([("fills", 0)])
    assert list(m.release()) == ["b"]


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_an_empty_assigned_partition_holds_the_others_until_idle():
    clock = Clock()
    m = EventTimeMerger(PRIORITY, max_idle_ms=100, clock=clock)
    m.assign([("fills", 0), ("shortfalls", 0)])
    m.add(("shortfalls", 0), 0, 50, "shortfall@50")
    assert list(m.release()) == []  # fills[0] may still bring something older
    clock.now = 0.05
    m.add(("fills", 0), 0, 40, "fill@40")
    assert list(m.release()) == ["fill@40"]  # fills[0] drained again: it may still bring fill@45
    clock.now = 0.10
    assert list(m.release()) == []
    clock.now = 0.16
    assert list(m.release()) == ["shortfall@50"]
    m.add(("shortfalls", 0), 1, 90, "shortfall@90")
    assert list(m.release()) == ["shortfall@90"]  # fills[0] idle for 100 ms: no longer waited for


def test_holding_back_names_each_partition_the_merge_waits_for_and_why():
    now = [0.0]
    m = EventTimeMerger(PRIORITY, max_idle_ms=1000, clock=lambda: now[0])
    m.assign([("fills", 0), ("funds", 0), ("shortfalls", 0)])
    assert m.holding_back(waiting={("fills", 0)}) == []  # nothing buffered: nothing is held back
    m.add(("shortfalls", 0), 0, 50, "shortfall@50")
    assert m.holding_back(waiting={("fills", 0)}, caught_up={("funds", 0)}) == [
        (("fills", 0), "no fetch answered yet")]
    assert m.holding_back() == [(("fills", 0), "empty below its high watermark"),
                                (("funds", 0), "empty below its high watermark")]
    assert list(m.release()) == []  # as held back
    now[0] = 1.5  # idle past max_idle_ms: no longer waited for
    assert m.holding_back() == []
    assert list(m.release()) == ["shortfall@50"]


partitions_st = st.lists(st.lists(st.integers(0, 20), max_size=12), min_size=1, max_size=4)


def _reference(buffers: dict) -> list:
    """The merge order by definition: the smallest (ts, priority, partition, offset) head, one at a time."""
    heads = {key: list(records) for key, records in buffers.items() if records}
    out = []
    while heads:
        key = min(heads, key=lambda k: heads[k][0][0])
        out.append(heads[key].pop(0)[1])
        if not heads[key]:
            del heads[key]
    return out


@settings(max_examples=200, deadline=None)
@given(partitions_st, st.integers(1, 40))
def test_releasing_runs_of_a_partition_gives_the_order_of_one_heap_pop_per_record(timestamps, stop_every):
    """The release takes runs of one partition without a heap operation each; the order, the
    recorded runs and what stays buffered when the caller stops early are those of popping the
    smallest head for every record."""
    merger = EventTimeMerger({"fills": 1, "marks": 0})
    buffers = {}
    for p, times in enumerate(timestamps):
        topic, partition = ("fills", p) if p % 2 else ("marks", p)
        ts = 0
        for offset, step in enumerate(times):  # event time mostly rising within a partition, not always
            ts = max(0, ts + step - 5)
            item = f"{topic}[{partition}]@{offset}"
            merger.add((topic, partition), offset, ts, item)
            buffers.setdefault((topic, partition), []).append(((ts, 1 if topic == "fills" else 0, partition, offset), item))
    expected = _reference(buffers)
    released = []
    while True:  # the caller stops every stop_every records (a transaction's limit), then asks again
        batch = []
        for item in merger.release(frozenset(), frozenset(buffers)):
            batch.append(item)
            if len(batch) == stop_every:
                break
        released += batch
        if not batch:
            break
    assert released == expected
    assert len(merger) == 0
    replayed, start = [], {}
    for (topic, partition), end in merger.take_runs():  # each run goes on from the partition's last end
        replayed += [f"{topic}[{partition}]@{offset}" for offset in range(start.get((topic, partition), 0), end)]
        start[(topic, partition)] = end
    assert replayed == expected
