"""The de-duplication window in segments: one changelog part per segment per take, whole segments
forgotten, never an id before its window has passed, and a window restored from its parts."""

from hypothesis import given
from hypothesis import strategies as st

from adl_stream.engine.dedup import PART_IDS, SEGMENT_MS, SeenIds


def test_a_take_gives_one_part_per_segment_and_eviction_gives_their_tombstones():
    seen = SeenIds(window_ms=5_000)
    for i, ts in enumerate([100, 200, 1_500, 1_600, 1_700]):
        seen.add(f"id{i}", ts)
    assert seen.take() == [((0, 0), ("id0", "id1")), ((1, 0), ("id2", "id3", "id4"))]
    seen.add("id5", 900)
    assert seen.take() == [((0, 1), ("id5",))]  # the segment's second part
    assert seen.take() == []
    seen.evict(5_999)  # segment 0 ends at 999 ms: 999 >= 5999 - 5000, kept
    assert "id0" in seen and seen.take() == []
    seen.evict(6_000)
    assert "id0" not in seen and "id5" not in seen and "id2" in seen
    assert seen.take() == [((0, 0), None), ((0, 1), None)]


@given(st.lists(st.tuples(st.integers(0, 20_000), st.booleans()), max_size=60), st.integers(1, 8_000))
def test_an_id_stays_its_window_and_a_restored_window_holds_the_same_parts(events, window):
    seen, log, now, accepted = SeenIds(window), {}, -1, {}

    def take():
        for key, ids in seen.take():
            if ids is None:
                log.pop(key, None)
            else:
                log[key] = ids

    for i, (ts, taking) in enumerate(events):
        if ts >= now - window:  # what the engine accepts; older is a late_event
            seen.add(f"id{i}", ts)
            accepted[f"id{i}"] = ts
        now = max(now, ts)
        seen.evict(now)
        if taking:
            take()
    take()
    for id_, ts in accepted.items():
        if ts >= now - window:
            assert id_ in seen, "an id was forgotten inside its window"
        if id_ in seen:
            assert (ts // SEGMENT_MS + 1) * SEGMENT_MS - 1 >= now - window, "kept beyond its segment"
    assert sorted(log) == sorted(seen.part_keys())
    restored = SeenIds(window)
    for (segment, n), ids in sorted(log.items(), reverse=True):  # in any order
        restored.restore_part(segment, n, ids)
    assert sorted(restored.part_keys()) == sorted(log)
    assert all(restored.part(*key) == seen.part(*key) for key in log)
    assert {id_ for id_ in accepted if id_ in restored} == {id_ for id_ in accepted if id_ in seen}
    loaded = SeenIds(window)  # in bulk: the same window
    loaded.load(dict(sorted(log.items(), reverse=True)))
    assert sorted(loaded.part_keys()) == sorted(log) and len(loaded) == len(restored)
    assert all(loaded.part(*key) == seen.part(*key) for key in log)
    assert {id_ for id_ in accepted if id_ in loaded} == {id_ for id_ in accepted if id_ in seen}
    loaded.evict(now + window + SEGMENT_MS)
    restored.evict(now + window + SEGMENT_MS)
    assert len(loaded) == len(restored) and loaded.take() == restored.take()


def test_a_take_splits_a_busy_segment_into_parts_of_bounded_size():
    seen = SeenIds(window_ms=60_000)
    for i in range(2 * PART_IDS + 500):
        seen.add(f"fill-{i}", 5_000 + i % SEGMENT_MS)  # all in segment 5
    parts = seen.take()
    assert [(key, len(ids)) for key, ids in parts] == [((5, 0), PART_IDS), ((5, 1), PART_IDS), ((5, 2), 500)]
    assert [id_ for _, ids in parts for id_ in ids] == [f"fill-{i}" for i in range(2 * PART_IDS + 500)]


def test_a_bulk_load_of_many_parts_holds_every_id_and_goes_on_like_one_restored_part_by_part():
    seen = SeenIds(window_ms=60_000)
    for i in range(50_000):
        seen.add(f"f-{i:07d}", 1_000 + i // 7)
    parts = dict(seen.take())
    loaded, one_by_one = SeenIds(60_000), SeenIds(60_000)
    loaded.load(parts)
    for (segment, n), ids in parts.items():
        one_by_one.restore_part(segment, n, ids)
    assert len(loaded) == len(one_by_one) == 50_000
    assert all(f"f-{i:07d}" in loaded for i in range(50_000)) and "f-0050000" not in loaded
    assert max(map(len, loaded._buckets)) < 48 * 8  # as full as an insert lets a bucket get, at most
    for i in range(50_000, 50_100):  # then the same answers as one restored part by part
        assert loaded.add_new(f"f-{i - 50:07d}", 9_000, 0) == one_by_one.add_new(f"f-{i - 50:07d}", 9_000, 0)
        assert loaded.add_new(f"f-{i:07d}", 9_000, 0) == one_by_one.add_new(f"f-{i:07d}", 9_000, 0)
    assert loaded.take() == one_by_one.take()
