"""Snapshots in the changelog: a restore from the latest complete snapshot plus the tail after it
equals a restore from the whole history, whatever the cut and snapshot points."""

import json
from decimal import Decimal as D

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adl_stream.engine import Engine, Fill
from adl_stream.engine.state import Entities, gather, keys, restore
from adl_stream.runtime import entity_batch
from adl_stream.runtime.changelog import (
    BATCH_HEADERS,
    encode_marker,
    fold,
    marker_key,
    snapshot_start,
    write_changes,
)
from adl_stream.runtime.entity_batch import RECORD_BYTES
from adl_stream.runtime.snapshots import SnapshotWriter
from tests import scenarios as sc
from tests.engine.test_properties import markets
from tests.engine.test_state import OPTIONS, _applied, _apply
from tests.runtime.test_topology import Message

INPUT = ("in", 0)


class Log:
    """A changelog partition: messages at their offsets, written the processor's way."""

    def __init__(self):
        self.messages: list[Message] = []
        self.txn = 0

    def transaction(self, engine: Engine, writer: SnapshotWriter, seq: int, applied: int,
                    marker: bool = True) -> None:
        """One transaction of the task: its changes, a snapshot step, its marker (unless cut short)."""
        self.txn += 1
        txn = str(self.txn)

        def produce(raw_key, raw_value, on_offset=None):
            if on_offset is not None:
                on_offset(len(self.messages))
            self.messages.append(Message(raw_key, raw_value, txn, BATCH_HEADERS))

        written = write_changes(produce, seq, {"USDT": engine})
        writer.step(produce, written, [(engine, "USDT")])
        if not marker:
            return
        self.messages.append(Message(marker_key(seq), encode_marker({"USDT": {INPUT: applied}}), txn,
                                     writer.marker_headers(seq)))
        writer.marked()
        writer.committed()

    def restored(self):
        """fold() of what restore_task reads: up to the committed offset (after the last marker),
        from the start that marker names."""
        end = max((i + 1 for i, m in enumerate(self.messages) if m.key().startswith(b'["commit"')), default=0)
        start = snapshot_start(self.messages[end - 1]) if end else 0
        return fold(self.messages[start:]), start


def _state(engine: Engine) -> Entities:
    return gather(engine, keys(engine))


def _restored_engine(entities) -> Engine:
    engine = Engine(sc.SYMBOLS, **OPTIONS)
    restore(engine, entities)
    return engine


@settings(max_examples=60, deadline=None)
@given(markets(), st.data())
def test_a_restore_from_the_latest_snapshot_equals_one_from_the_whole_history(market, data):
    records = _applied(market, **OPTIONS)
    engine, log, seq = Engine(sc.SYMBOLS, **OPTIONS), Log(), 0
    writer = SnapshotWriter(min_records=data.draw(st.integers(1, 30)), chunk_entities=data.draw(st.integers(1, 12)))
    commits = data.draw(st.sets(st.integers(0, max(len(records) - 1, 0))))
    crash = data.draw(st.none() | st.integers(0, max(len(records) - 1, 0)))
    # Transactions that rewrite every entity (read amplification, so snapshots become due; a market
    # of new entities alone is its own compact history and needs none)
    rewrites = data.draw(st.sets(st.integers(0, max(len(records) - 1, 0))))
    i = 0
    while i < len(records):
        _apply(engine, records[i])
        i += 1
        if i - 1 == crash:  # a transaction cut short (maybe inside a snapshot), then a restart
            log.transaction(engine, writer, seq, i, marker=False)
            restored, _ = log.restored()
            engine = _restored_engine(restored.entities.get("USDT", {}))
            writer = SnapshotWriter.restored(restored, writer.min_records, writer.chunk_entities)
            i, seq, crash = restored.offsets.get("USDT", {}).get(INPUT, 0), restored.seq, None
        elif i - 1 in commits:
            if i - 1 in rewrites:
                engine.changed.update(dict.fromkeys(keys(engine)))
            log.transaction(engine, writer, seq, i)
            seq += 1
    log.transaction(engine, writer, seq, i)
    named = writer.complete  # what the last marker names (one completed in it too: its start is known)

    from_snapshot, start = log.restored()
    whole = fold(log.messages)
    assert from_snapshot.entities.get("USDT", {}) == whole.entities.get("USDT", {}) == _state(engine)
    assert from_snapshot.offsets == whole.offsets == {"USDT": {INPUT: len(records)}}
    assert start == (named or 0)
    # The restored engine decides the same as the one that wrote the log (same state, same queue).
    again = _restored_engine(from_snapshot.entities.get("USDT", {}))
    assert again.snapshot() == engine.snapshot()


def test_a_snapshot_cut_short_is_never_named_and_its_records_are_discarded():
    engine, log = Engine(sc.SYMBOLS, **OPTIONS), Log()
    writer = SnapshotWriter(min_records=1, chunk_entities=1)
    for i, record in enumerate(sc.STREAM[:6]):
        _apply(engine, record)
        engine.changed.update(dict.fromkeys(keys(engine)))  # every entity rewritten: snapshots become due
        log.transaction(engine, writer, i, i + 1)
    committed, named = _state(engine), snapshot_start(log.messages[-1])
    assert named > 0  # small chunks: snapshots completed along the way, the last marker names one
    _apply(engine, sc.STREAM[6])
    log.transaction(engine, writer, 6, 7, marker=False)  # a snapshot chunk written, then a crash
    assert any(m.key().startswith(b'["snapshot"') for m in log.messages[-3:])
    restored, start = log.restored()
    assert start == named and restored.discarded > 0
    assert restored.offsets == {"USDT": {INPUT: 6}} and restored.entities["USDT"] == committed


def test_the_records_a_restore_reads_stay_bounded_by_the_state_not_the_history():
    """A long history of the same few entities: the restore reads about 1.5 times the state at most
    (a snapshot, half a state of changes, and the chunks of the next snapshot in progress)."""
    engine, log = Engine(sc.SYMBOLS, **OPTIONS), Log()
    writer = SnapshotWriter(min_records=10, chunk_entities=1_000)
    for record in sc.STREAM[:3]:
        _apply(engine, record)
    for n in range(200):
        engine.changed.update(dict.fromkeys(keys(engine)))  # every entity rewritten each transaction
        log.transaction(engine, writer, n, n)
    restored, _ = log.restored()
    state = len(keys(engine))
    assert restored.records <= 3 * (state + 1) + 10
    assert len(log.messages) > 20 * restored.records  # the history is far longer
    assert restored.entities["USDT"] == _state(engine)


def test_a_restore_reads_at_most_a_snapshot_and_half_a_state_of_changes():
    """The cadence: a snapshot once half a state of entities has been written since the last one,
    so the entities a restore decodes stay within 1.5 times the state (plus one transaction's)."""
    engine, log = Engine(sc.SYMBOLS, reservation_timeout_ms=60_000, dedup_window_ms=3_600_000), Log()
    for i in range(120):
        engine.apply(Fill(f"f{i}", f"A{i:03d}", "BTCUSDT", "BUY" if i % 2 else "SELL", D("0.001"), D(100), D(0),
                          "TRADE", None, 1_000 + i))
    writer, state, changed = SnapshotWriter(min_records=1, chunk_entities=10**6), len(keys(engine)), 7
    position_keys = [key for key in keys(engine) if key[0] == "p"]
    most = 0
    for n in range(300):
        engine.changed.update(dict.fromkeys(position_keys[(n * changed) % len(position_keys):][:changed]))
        log.transaction(engine, writer, n, n)
        start = snapshot_start(log.messages[-1])
        read = 0
        for message in log.messages[start:]:
            if not message.key().startswith(b'["commit"'):
                one: dict = {}
                entity_batch.decode(message.value(), one)
                read += sum(len(entities) for entities in one.values())
        most = max(most, read)
    assert state > 200 and most <= state + state // 2 + changed
    assert most > state + state // 4  # the tail does reach close to half the state between snapshots
    restored, _ = log.restored()
    assert restored.entities["USDT"] == _state(engine)


def _read(log: Log) -> int:
    """The entities a restore at the last marker decodes (markers not counted)."""
    read = 0
    for message in log.messages[snapshot_start(log.messages[-1]):]:
        if not message.key().startswith(b'["commit"'):
            one: dict = {}
            entity_batch.decode(message.value(), one)
            read += sum(len(entities) for entities in one.values())
    return read


def _grow_and_rewrite(steps) -> tuple[Log, Engine, list[int]]:
    """Transactions that each open ``new`` positions of new accounts and rewrite ``rewritten`` of
    those already open; the entities a restore reads after each."""
    engine, log, made, reads = Engine(sc.SYMBOLS, reservation_timeout_ms=60_000, dedup_window_ms=3_600_000), Log(), 0, []
    writer = SnapshotWriter(min_records=1, chunk_entities=10**6)
    for n, (new, rewritten) in enumerate(steps):
        for _ in range(new):
            engine.apply(Fill(f"f{made}", f"A{made:05d}", "BTCUSDT", "BUY" if made % 2 else "SELL", D("0.001"),
                              D(100), D(0), "TRADE", None, 1_000 + made))
            made += 1
        engine.changed.update(dict.fromkeys([key for key in keys(engine) if key[0] == "p"][:rewritten]))
        log.transaction(engine, writer, n, n)
        reads.append((_read(log), len(keys(engine))))
    return log, engine, reads


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 12), st.integers(0, 30)), min_size=10, max_size=60))
def test_a_restore_never_reads_more_than_the_live_state_and_half_of_it(steps):
    """The cadence weighs read amplification: after every commit, a restore decodes at most 1.5
    times the entities the task holds (a state that never shrinks, any mix of new and rewritten)."""
    log, engine, reads = _grow_and_rewrite(steps)
    assert all(read <= live + live // 2 for read, live in reads), reads
    restored, _ = log.restored()
    assert restored.entities.get("USDT", Entities()) == _state(engine)


def test_a_state_that_only_grows_takes_no_snapshot_and_one_rewritten_does():
    """A book being built is its own compact history: writing it again as a snapshot would only
    cost (it did cost a third of book building's time per record). Once its entities are
    rewritten, snapshots keep what a restore reads within 1.5 times the state."""
    log, _, reads = _grow_and_rewrite([(8, 0)] * 150)
    assert not any(m.key().startswith(b'["snapshot"') for m in log.messages)
    assert reads[-1][0] == reads[-1][1] + 150 - 1  # every entity once, but the stream time once a transaction
    log, _, reads = _grow_and_rewrite([(8, 0)] * 50 + [(0, 40)] * 100)
    assert sum(m.key().startswith(b'["snapshot"') for m in log.messages) >= 4
    assert max(read / live for read, live in reads) <= 1.5 and len(log.messages) > 10 * reads[-1][0] / 40


def test_snapshot_records_stay_under_the_record_size_however_large_the_entities():
    engine = Engine(sc.SYMBOLS, reservation_timeout_ms=60_000, dedup_window_ms=3_600_000)
    for i in range(12_000):  # 12,000 fills within one second: parts of 2,000 ids each
        engine.apply(Fill(f"a-rather-long-fill-identifier-{i:08d}", f"A{i % 50}", "BTCUSDT", "BUY",
                          D("0.001"), D(100), D(0), "TRADE", None, 1_000 + i % 1_000))
    write_changes(lambda *_: None, 0, {"USDT": engine})
    records = []
    writer = SnapshotWriter(min_records=1, chunk_entities=10**9)
    writer.start([(engine, "USDT", keys(engine))])
    writer.write(lambda key, value, on_offset=None: records.append(value))
    assert len(records) > 1 and all(len(r) <= RECORD_BYTES + 200_000 for r in records)
    entities = {}
    for raw in records:
        entity_batch.decode(raw, entities)
    assert entities == {"USDT": _state(engine)}


@pytest.mark.parametrize("records, slot", [(5, 0), (8, 1)])  # the complete snapshot in either slot
def test_after_a_restore_the_next_snapshot_takes_the_other_slot_than_the_one_read_from(records, slot):
    """Compaction keeps the latest record per key: writing the next snapshot into the slot of the
    complete one a restore reads from would let compaction remove that one before the next is done."""
    engine, log = Engine(sc.SYMBOLS, **OPTIONS), Log()
    writer = SnapshotWriter(min_records=1, chunk_entities=1_000)
    for i, record in enumerate(sc.STREAM[:records]):
        _apply(engine, record)
        log.transaction(engine, writer, i, i + 1)
    restored, start = log.restored()
    read_from = json.loads(log.messages[start].key())  # ["snapshot", slot, 0]
    assert read_from == ["snapshot", slot, 0]
    again = SnapshotWriter.restored(restored, 1, 1_000)
    keys_written = []
    again.start([(engine, "USDT", keys(engine))])
    again.write(lambda key, value, on_offset=None: keys_written.append(json.loads(key)))
    assert keys_written and {k[1] for k in keys_written} == {1 - read_from[1]}
