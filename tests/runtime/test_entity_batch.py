"""The changelog's record formats: format 2 (binary, columnar) round-trips every kind of entity
exactly, splits large batches, and a changelog written in format 1 (JSON, one record per entity)
by an earlier version still restores to the same state."""

from hypothesis import given, settings
from hypothesis import strategies as st

from adl_stream.engine import Engine
from adl_stream.engine.state import Entities, gather, keys, restore, take, take_changes
from adl_stream.runtime import entity_batch
from adl_stream.runtime.changelog import (
    BATCH_HEADERS,
    encode_chunk,
    encode_entity,
    encode_marker,
    fold,
    marker_key,
    snapshot_key,
    write_changes,
)
from tests import scenarios as sc
from tests.engine.test_properties import markets
from tests.engine.test_state import OPTIONS, _applied, _apply
from tests.runtime.test_topology import Message

units = st.integers(-(10**60), 10**60)
names = st.text(min_size=1, max_size=12)


@st.composite
def entities(draw) -> Entities:
    out = Entities()
    symbols = draw(st.lists(names, min_size=1, max_size=3))
    for _ in range(draw(st.integers(0, 20))):
        out.positions[(draw(st.sampled_from(symbols)), draw(names))] = (draw(units), draw(units))
    for _ in range(draw(st.integers(0, 10))):
        after = tuple(draw(st.lists(st.tuples(st.integers(0, 2**62), units), max_size=3)))
        out.wallets[(draw(names), draw(names))] = (draw(units), draw(st.integers(-1, 2**62)), after)
    decimals = st.decimals(allow_nan=False, allow_infinity=False, places=18, min_value=-(10**20), max_value=10**20)
    for _ in range(draw(st.integers(0, 2))):
        out.funds[draw(names)] = draw(decimals)
        out.histories[draw(names)] = tuple(draw(st.lists(
            st.tuples(st.integers(0, 2**62), decimals, st.none() | st.integers(0, 2**62)), max_size=3)))
        out.marks[draw(names)] = (draw(decimals), draw(st.integers(0, 2**62)))
        out.reservations[(draw(names), draw(names))] = (draw(names), draw(decimals), draw(st.integers(0, 2**62)))
    for _ in range(draw(st.integers(0, 3))):
        out.seen[(draw(st.integers(0, 2**40)), draw(st.integers(0, 100)))] = tuple(draw(st.lists(names, max_size=5)))
    for _ in range(draw(st.integers(0, 5))):
        out.lights[(draw(st.sampled_from(symbols)), draw(names))] = draw(st.integers(-5, 5))
    out.stream_time = draw(st.none() | st.integers(0, 2**62))
    out.gone = draw(st.lists(st.sampled_from([("p", "BTCUSDT", "A"), ("w", "A", "USDT"), ("s", 3, 0), ("l", "X", "B")]),
                             max_size=3, unique=True))
    return out


@settings(max_examples=200, deadline=None)
@given(entities(), st.booleans())
def test_format_2_round_trips_every_kind_exactly(batch, split):
    if split:  # every entity in a record of its own
        entity_batch.RECORD_BYTES, saved = 1, entity_batch.RECORD_BYTES
    try:
        values = entity_batch.encode({"USDT": batch})
    finally:
        if split:
            entity_batch.RECORD_BYTES = saved
    folded = {}
    for value in values:
        entity_batch.decode(value, folded)
    expected = Entities()
    expected.update(batch)
    assert folded.get("USDT", Entities()) == expected
    if split and len(batch) > 1:
        assert len(values) > 1


def test_a_large_batch_is_split_into_records_under_the_size():
    batch = Entities()
    for i in range(30_000):
        batch.positions[("BTCUSDT", f"account-with-a-long-identifier-{i:08d}")] = (i * 10**17, -i * 10**40)
    values = entity_batch.encode({"USDT": batch})
    assert len(values) > 3 and all(len(v) <= entity_batch.RECORD_BYTES * 1.2 for v in values)
    folded = {}
    for value in values:
        entity_batch.decode(value, folded)
    assert folded["USDT"].positions == batch.positions


def _format_1(engine: Engine, log: list, seq: int, applied: int) -> None:
    txn = f"t{seq}"
    for key, value in take_changes(engine):
        log.append(Message(*encode_entity("USDT", key, value), txn))
    log.append(Message(marker_key(seq), encode_marker({"USDT": {("in", 0): applied}}), txn, [("seq", str(seq).encode())]))


@settings(max_examples=40, deadline=None)
@given(markets(), st.data())
def test_a_changelog_of_format_1_restores_the_same_state_as_one_of_format_2(market, data):
    """An earlier version's changelog (format 1: one JSON record per entity) restores, and a
    version of today carries on in format 2 over it."""
    records = _applied(market, **OPTIONS)
    cut = data.draw(st.integers(0, len(records)))
    engine, old, new = Engine(sc.SYMBOLS, **OPTIONS), [], []
    for i, record in enumerate(records[:cut]):
        _apply(engine, record)
        twin = data.draw(st.booleans())
        if twin or i == cut - 1:
            _format_1(engine, old, i, i + 1)
    take(engine)
    for record in records[cut:]:
        _apply(engine, record)
    write_changes(lambda key, value: new.append(Message(key, value, "tn", BATCH_HEADERS)), 10**4 + 1, {"USDT": engine})
    new.append(Message(marker_key(10**4 + 1), encode_marker({"USDT": {("in", 0): len(records)}}), "tn"))
    restored = fold(old + new)
    assert restored.entities.get("USDT", Entities()) == gather(engine, keys(engine))
    again = Engine(sc.SYMBOLS, **OPTIONS)
    restore(again, restored.entities.get("USDT", {}))
    assert again.snapshot() == engine.snapshot()


def test_a_format_1_snapshot_chunk_folds_like_its_entities():
    engine = Engine(sc.SYMBOLS, **OPTIONS)
    for record in sc.STREAM[:8]:
        _apply(engine, record)
    chunk = encode_chunk(("USDT", key, value) for key, value in take_changes(engine) if value is not None)
    restored = fold([Message(snapshot_key(1, 0), chunk, "t"), Message(marker_key(0), encode_marker({}), "t")])
    assert restored.entities["USDT"] == gather(engine, keys(engine)) and len(restored.entities["USDT"]) > 5
