"""The changelog's record formats: formats 3 (packed columns, written) and 2 (Avro arrays, still
read) round-trip every kind of entity exactly and alike, split large batches, fold runs of columns
with repeated keys and tombstones like the dicts do, and a changelog written in format 1 (JSON, one
record per entity) or 2 by an earlier version still restores to the same state."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adl_stream.engine import Engine
from adl_stream.engine.state import Entities, gather, keys, restore, take, take_changes, value_of
from adl_stream.runtime import entity_batch
from adl_stream.runtime.changelog import (
    BATCH_HEADERS,
    delta_key,
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
@given(entities(), st.booleans(), st.sampled_from(entity_batch.FORMATS))
def test_formats_2_and_3_round_trip_every_kind_exactly(batch, split, format):
    if split:  # every entity in a record of its own
        entity_batch.RECORD_BYTES, saved = 1, entity_batch.RECORD_BYTES
    try:
        values = entity_batch.encode({"USDT": batch}, format)
    finally:
        if split:
            entity_batch.RECORD_BYTES = saved
    folded = {}
    for value in values:
        entity_batch.decode(value, folded, format)
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


@settings(max_examples=100, deadline=None)
@given(entities())
def test_format_3_decodes_to_what_format_2_decodes_to(batch):
    """The same entities written in both formats fold to equal entities (format 3's runs of
    columns read through the dicts)."""
    folded = {}
    for format in entity_batch.FORMATS:
        into = folded[format] = {}
        for value in entity_batch.encode({"USDT": batch}, format):
            entity_batch.decode(value, into, format)
    assert folded[entity_batch.FORMAT_2].get("USDT", Entities()) == folded[entity_batch.FORMAT].get("USDT", Entities())


pool = st.sampled_from(["A", "B", "C", "D\0x", ""])


@st.composite
def batches(draw) -> list[Entities]:
    """Change sets whose keys repeat across batches, with tombstones of positions and wallets."""
    out = []
    for _ in range(draw(st.integers(1, 6))):
        batch = Entities()
        for _ in range(draw(st.integers(0, 6))):
            batch.positions[(draw(st.sampled_from(["BTCUSDT", "ETHUSDT"])), draw(pool))] = (draw(units), draw(units))
        for _ in range(draw(st.integers(0, 6))):
            after = tuple(draw(st.lists(st.tuples(st.integers(0, 2**62), units), max_size=2)))
            batch.wallets[(draw(pool), draw(st.sampled_from(["USDT", "USDC"])))] = (draw(units), draw(st.integers(-1, 99)), after)
        batch.gone = draw(st.lists(st.sampled_from([("p", "BTCUSDT", "A"), ("p", "ETHUSDT", "B"), ("w", "A", "USDT"),
                                                    ("w", "C", "USDC")]), max_size=2, unique=True))
        out.append(batch)
    return out


@settings(max_examples=200, deadline=None)
@given(batches())
def test_runs_of_format_3_fold_like_the_dicts_and_give_the_same_columns(changes):
    """Runs of columns (later rows overriding earlier ones, tombstones between them) read as the
    dicts of a fold batch by batch; and the columns a restore loads, made unique the loaders' way
    (last row of a key wins), hold the same entities."""
    folded, expected = {}, Entities()
    for batch in changes:
        expected.update(batch)
        for value in entity_batch.encode({"USDT": batch}):
            entity_batch.decode(value, folded)
    runs = folded.get("USDT", Entities())
    symbols, accounts, q, c = runs.position_columns()
    assert dict(zip(zip(symbols, accounts), zip(q, c))) == expected.positions
    wallets = runs.wallet_columns()
    assert {(a, asset): (u, t, wallets.after.get(i, ())) for i, (a, asset, u, t) in
            enumerate(zip(wallets.accounts, wallets.assets, wallets.units, wallets.as_of))} == expected.wallets
    assert runs == expected


def _equities(engine: Engine) -> dict:
    """Each account's equity units in the ranking index, by settle asset and account id."""
    engine.index.flush()
    return {(asset, account): int(accounts.equity[slot]) for asset, accounts in engine.index._accounts.items()
            for account, slot in accounts.table.slot_of.items()}


@settings(max_examples=200, deadline=None)
@given(batches())
def test_runs_with_repeated_keys_restore_the_engine_their_fold_restores(changes):
    """Loading the runs of format-3 records into an engine (a key repeated across records keeps its
    last row; the wallet slots made in one pass) gives the engine that loading their fold as dicts
    gives: the same entities, wallets' fills after their balance included, and the same equities
    in the index."""
    folded, expected = {}, Entities()
    for batch in changes:
        expected.update(batch)
        for value in entity_batch.encode({"USDT": batch}):
            entity_batch.decode(value, folded)
    from_runs, from_dicts = Engine(sc.SYMBOLS, **OPTIONS), Engine(sc.SYMBOLS, **OPTIONS)
    restore(from_runs, folded.get("USDT", Entities()))
    restore(from_dicts, expected)
    assert {key: value_of(from_runs, key) for key in keys(from_runs)} == {
        key: value_of(from_dicts, key) for key in keys(from_dicts)}
    assert len(keys(from_runs)) == len(expected)
    assert _equities(from_runs) == _equities(from_dicts)


def _marshal_layout(values: list[int]) -> bytes:
    """Ints as the schema's doc describes them, written without :mod:`marshal`."""
    out = bytearray(b"[" + len(values).to_bytes(4, "little"))
    for v in values:
        if -(2**31) <= v < 2**31:
            out += b"i" + v.to_bytes(4, "little", signed=True)
            continue
        digits, m = [], abs(v)
        while m:
            digits.append(m & 0x7FFF)
            m >>= 15
        out += b"l" + (len(digits) if v > 0 else -len(digits)).to_bytes(4, "little", signed=True)
        out += b"".join(d.to_bytes(2, "little") for d in digits)
    return bytes(out)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(-(10**80), 10**80) | st.integers(-(2**33), 2**33)))
def test_the_integers_of_format_3_have_the_documented_layout(values):
    """The bytes are exactly the layout the schema documents (a Python whose marshal changed would
    fail here, not corrupt a changelog), and they read back exactly."""
    packed = entity_batch._pack(values)
    assert packed == _marshal_layout(values)
    assert entity_batch._unpack(packed, len(values)) == values


def test_a_changelog_of_format_2_restores_and_carries_on_in_format_3():
    """What the version before wrote (format 2 records, header batch=2), then records of today."""
    engine = Engine(sc.SYMBOLS, **OPTIONS)
    log, half = [], len(sc.STREAM) // 2
    for seq, part in enumerate((sc.STREAM[:half], sc.STREAM[half:])):
        for record in part:
            _apply(engine, record)
        format = entity_batch.FORMAT_2 if seq == 0 else entity_batch.FORMAT
        for n, value in enumerate(entity_batch.encode({"USDT": take(engine)}, format)):
            log.append(Message(delta_key(seq, n), value, f"t{seq}", [("batch", format)]))
        log.append(Message(marker_key(seq), encode_marker({"USDT": {("in", 0): seq}}), f"t{seq}"))
    restored = fold(log)
    assert restored.entities["USDT"] == gather(engine, keys(engine))
    again = Engine(sc.SYMBOLS, **OPTIONS)
    restore(again, restored.entities["USDT"])
    assert again.snapshot() == engine.snapshot()


def _index_columns(engine: Engine) -> dict:
    """Every float and integer the ranking index holds, by position and by account (rows may
    differ between two engines: ranking never depends on them)."""
    index = engine.index
    index.flush()
    out = {}
    for (symbol, long), side in index._sides.items():
        for row, position in enumerate(side.positions):
            out[(symbol, long, position.account_id)] = (side.q[row].tobytes(), side.cost[row].tobytes(),
                                                      side.free[row].tobytes(), int(side.slot[row] >= 0))
    for asset, accounts in index._accounts.items():
        for account, slot in accounts.table.slot_of.items():
            out[(asset, account)] = int(accounts.wallet[slot])
    return out


@settings(max_examples=40, deadline=None)
@given(markets(), st.data())
def test_a_restore_from_format_3_deltas_holds_the_originals_index_bit_for_bit(market, data):
    """Takes at random points (an entity in several of them, some gone), each written in format 3
    and restored from its runs of columns: the same state, the same index floats as the engine
    that wrote them (flushed), and the same decisions afterwards."""
    records = _applied(market, **OPTIONS)
    cut = data.draw(st.integers(0, len(records)))
    takes = data.draw(st.sets(st.integers(0, max(0, cut - 1))))
    engine, folded = Engine(sc.SYMBOLS, **OPTIONS), {}
    for i, record in enumerate(records[:cut]):
        _apply(engine, record)
        if i in takes or i == cut - 1:
            for value in entity_batch.encode({"USDT": take(engine)}):
                entity_batch.decode(value, folded)
    again = Engine(sc.SYMBOLS, **OPTIONS)
    restore(again, folded.get("USDT", {}))
    assert again.snapshot() == engine.snapshot()
    assert _index_columns(again) == _index_columns(engine)
    for record in records[cut:]:
        assert _apply(again, record) == _apply(engine, record)


@pytest.mark.parametrize("follow", [True, False], ids=["positions-follow-wallets", "positions-in-another-order"])
def test_restored_positions_find_their_accounts_slots_with_or_without_a_look_up(follow, monkeypatch):
    """A book whose position rows follow its wallet rows (as a book's changelog writes them: each
    account's balance, then its fill) takes row i as slot i without a look-up; any other order
    looks the slots up. Either way the index equals the original's and the book, the index and
    the wallets hold one string object per account."""
    from decimal import Decimal as D

    from adl_stream.engine import BalanceUpdate, MarkPrice
    from adl_stream.engine.index import _Accounts

    accounts = [f"A{i}" for i in range(6)]
    engine = Engine(sc.SYMBOLS, **OPTIONS)
    for i, account in enumerate(accounts):
        engine.apply(BalanceUpdate(account, "USDT", D(1000 + i), i))
    for i, account in enumerate(accounts if follow else accounts[::-1]):
        engine.apply(sc.fill(f"f-{account}", account, "BUY" if i % 2 else "SELL", 1, 100 + i, 10))
    engine.apply(MarkPrice("BTCUSDT", D(101), 20))
    folded = {}
    for value in entity_batch.encode({"USDT": take(engine)}):
        entity_batch.decode(value, folded)
    looked_up, slots = [], _Accounts.slots

    def spied(self, ids):
        looked_up.append(len(ids))
        return slots(self, ids)

    monkeypatch.setattr(_Accounts, "slots", spied)
    again = Engine(sc.SYMBOLS, **OPTIONS)
    restore(again, folded["USDT"])
    assert (not any(looked_up)) == follow  # no account looked up when the rows follow the wallets
    assert again.snapshot() == engine.snapshot()
    assert _index_columns(again) == _index_columns(engine)
    assert _equities(again) == _equities(engine)
    table = again.index._accounts["USDT"].table
    for side in again.index._sides.values():
        for row, position in enumerate(side.positions):
            assert table.ids[side.slot[row]] is position.account_id
            assert again.book.get(position.account_id, position.symbol) is position
