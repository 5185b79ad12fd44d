"""Restore only, in memory: a book's changelog built once, restored several times, phase by phase.

``python -m bench.restore --positions 300000`` applies :func:`bench.pipeline.book_records` to an
engine, writes its whole state as snapshot records (as :class:`~adl_stream.runtime.
snapshots.SnapshotWriter` chunks it), then restores them ``--runs`` times, timing the phases a
processor's restore goes through besides the broker's fetches: decoding the records into
:class:`~adl_stream.engine.state.Entities` (``decode``) and loading those into a fresh engine
(``load``). ``--profile`` prints cProfile's top functions of the last run. The broker's part is
measured by ``python -m bench --only pipeline`` (its ``book_restore`` row).

``--deltas N`` writes the *delta* form instead, what that row restores since a book that only
grows takes no snapshot (:mod:`adl_stream.runtime.snapshots`): the changes taken every ``N``
applied records (as a transaction of the processor takes them, :func:`~adl_stream.runtime.
changelog.write_changes`), each take encoded into one or a few records.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import itertools
import pstats
import tempfile
import time
import uuid
from pathlib import Path

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from adl_stream.embedded import EmbeddedBroker
from adl_stream.engine import Engine
from adl_stream.engine.state import keys, restore, take
from adl_stream.runtime import entity_batch
from adl_stream.runtime.changelog import (
    BATCH_HEADERS,
    SEQ_HEADER,
    TXN_HEADER,
    delta_key,
    encode_marker,
    marker_key,
    restore_task,
)
from adl_stream.runtime.memory import restoring
from adl_stream.runtime.snapshots import SnapshotWriter
from adl_stream.simulation.market import default_symbols

from .pipeline import book_records


def build(positions: int, deltas: int = 0) -> tuple[Engine, list[list[bytes]]]:
    """An engine holding ``positions`` (with their wallets and ids) and its snapshot's record values,
    or with ``deltas``, the delta records of a take every ``deltas`` applied records; by
    transaction (a take's records, or a snapshot chunk's)."""
    engine = Engine(default_symbols())
    if deltas:
        transactions = []
        for n, record in enumerate(book_records(positions), 1):
            engine.apply(record)
            if n % deltas == 0:
                transactions.append(entity_batch.encode({"USDT": take(engine)}))
        changes = take(engine)
        if len(changes) or changes.gone:
            transactions.append(entity_batch.encode({"USDT": changes}))
        return engine, transactions
    for record in book_records(positions):
        engine.apply(record)
    take(engine)  # (as each transaction does: the de-duplicated ids move into their segments' parts)
    writer, transactions = SnapshotWriter(0, 50_000), []
    writer.start([(engine, "USDT", keys(engine))])
    while writer.in_progress:
        chunk: list[bytes] = []
        writer.write(lambda key, value, on_offset: chunk.append(value))
        transactions.append(chunk)
    return engine, transactions


def through_broker(transactions: list[list[bytes]], runs: int) -> None:
    """Write the records to a changelog partition of an embedded Tansu, a commit marker after each
    transaction (as the processor does), then restore from it ``runs`` times: the broker's fetches,
    the fold of :func:`~adl_stream.runtime.changelog.restore_task` and the load."""
    with tempfile.TemporaryDirectory() as logs, EmbeddedBroker(Path(logs) / "tansu.log") as broker:
        config = {"bootstrap.servers": broker.bootstrap}
        topic = f"restore-bench-{uuid.uuid4().hex[:6]}-changelog"
        admin = AdminClient(config)
        admin.create_topics([NewTopic(topic, 1, 1)])[topic].result()
        producer = Producer({**config, "linger.ms": 50, "message.max.bytes": 8 << 20})
        for seq, values in enumerate(transactions):
            txn = str(seq).encode()
            for n, value in enumerate(values):
                producer.produce(topic, value, delta_key(seq, n), partition=0,
                                 headers=[(TXN_HEADER, txn), *BATCH_HEADERS])
            producer.produce(topic, encode_marker({"USDT": {("in", 0): seq}}), marker_key(seq), partition=0,
                             headers=[(TXN_HEADER, txn), (SEQ_HEADER, txn)])
            producer.poll(0)
        assert producer.flush(60) == 0
        end = sum(len(values) + 1 for values in transactions)
        for _ in range(runs):
            with restoring():
                started = time.perf_counter()
                state = restore_task({**config, "group.id": topic}, topic, 0, end)
                read = time.perf_counter()
                engine = Engine(default_symbols())
                restore(engine, state.entities.pop("USDT"))
                loaded = time.perf_counter()
            print(f"through the broker: {state.records} records, read and fold {read - started:.3f} s, "
                  f"load {loaded - read:.3f} s, total {loaded - started:.3f} s ({len(engine.book):,} positions)")
            del engine, state
            gc.unfreeze()
            gc.collect()


def restore_once(values: list[list[bytes]]) -> tuple[Engine, dict[str, float]]:
    with restoring():
        started = time.perf_counter()
        into: dict = {}
        for value in itertools.chain.from_iterable(values):
            entity_batch.decode(value, into)
        decoded = time.perf_counter()
        engine = Engine(default_symbols())
        restore(engine, into.pop("USDT"))
        loaded = time.perf_counter()
    return engine, {"decode": decoded - started, "load": loaded - decoded, "total": loaded - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--positions", type=int, default=300_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--deltas", type=int, default=0, metavar="N",
                        help="restore the delta records of a take every N records (a transaction's) instead of a snapshot")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--broker", action="store_true",
                        help="also restore through an embedded Tansu (the records written to a changelog partition)")
    parser.add_argument("--check", action="store_true", help="assert the restored engine equals the original")
    args = parser.parse_args()
    started = time.perf_counter()
    original, values = build(args.positions, args.deltas)
    records = list(itertools.chain.from_iterable(values))
    print(f"built {args.positions:,} positions in {time.perf_counter() - started:.1f} s: "
          f"{len(records)} records, {sum(map(len, records)) / 1e6:.1f} MB")
    for run in range(args.runs):
        if args.profile and run == args.runs - 1:
            profile = cProfile.Profile()
            profile.enable()
        engine, times = restore_once(values)
        if args.profile and run == args.runs - 1:
            profile.disable()
            pstats.Stats(profile).sort_stats("tottime").print_stats(25)
        print(" ".join(f"{name} {seconds:.3f} s" for name, seconds in times.items()))
        if args.check:
            assert engine.snapshot() == original.snapshot(), "the restored engine differs"
        del engine
        gc.unfreeze()
        gc.collect()
    if args.broker:
        through_broker(values, args.runs)


if __name__ == "__main__":
    main()
