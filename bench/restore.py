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
import pstats
import time

from adl_stream.engine import Engine
from adl_stream.engine.state import keys, restore, take
from adl_stream.runtime import entity_batch
from adl_stream.runtime.memory import restoring
from adl_stream.runtime.snapshots import SnapshotWriter
from adl_stream.simulation.market import default_symbols

from .pipeline import book_records


def build(positions: int, deltas: int = 0) -> tuple[Engine, list[bytes]]:
    """An engine holding ``positions`` (with their wallets and ids) and its snapshot's record values,
    or with ``deltas``, the delta records of a take every ``deltas`` applied records."""
    engine = Engine(default_symbols())
    if deltas:
        values = []
        for n, record in enumerate(book_records(positions), 1):
            engine.apply(record)
            if n % deltas == 0:
                values += entity_batch.encode({"USDT": take(engine)})
        changes = take(engine)
        if len(changes) or changes.gone:
            values += entity_batch.encode({"USDT": changes})
        return engine, values
    for record in book_records(positions):
        engine.apply(record)
    take(engine)  # (as each transaction does: the de-duplicated ids move into their segments' parts)
    writer, values = SnapshotWriter(0, 50_000), []
    writer.start([(engine, "USDT", keys(engine))])
    while writer.in_progress:
        writer.write(lambda key, value, on_offset: values.append(value))
    return engine, values


def restore_once(values: list[bytes]) -> tuple[Engine, dict[str, float]]:
    with restoring():
        started = time.perf_counter()
        into: dict = {}
        for value in values:
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
    parser.add_argument("--check", action="store_true", help="assert the restored engine equals the original")
    args = parser.parse_args()
    started = time.perf_counter()
    original, values = build(args.positions, args.deltas)
    print(f"built {args.positions:,} positions in {time.perf_counter() - started:.1f} s: "
          f"{len(values)} records, {sum(map(len, values)) / 1e6:.1f} MB")
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


if __name__ == "__main__":
    main()
