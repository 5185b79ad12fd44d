"""``python -m bench`` (``make bench``): every benchmark, its figures as tables and as JSON.

Sizes are flags, so a quick look (``--positions 10000 --book 100000``) and the full run (the
defaults, about ten minutes on two cores) are the same code. The targets of the figures are in the
README ("Performance"); this prints each figure next to its target and says whether it is met.
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
import uuid
from pathlib import Path

from rich.console import Console

from adl_stream.embedded import EmbeddedBroker
from adl_stream.runtime.logs import configure_logging
from adl_stream.runtime.memory import keep_freed_memory

from . import compare, decision, latency, pipeline, wire
from .report import dump, table

TARGETS = {  # figure -> (target, higher is better)
    "e2e_ratio": (0.50, True),
    "p99_ms@100000": (1.0, False),
    "p99_ms@1000000": (10.0, False),
    "updates_per_s_min": (100_000, True),
    "marginal_bytes_per_position_max": (500, False),
    "restore_s@1000000": (5.0, False),
    "peer_ratio": (2.0, True),
    "shortfall_p99_ms_paced": (latency.TARGET_P99_MS, False),
}
HISTORY_ROUNDS = 10


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--positions", type=int, nargs="+", default=[10_000, 100_000, 1_000_000],
                        help="open positions in the symbol for the decision latency (default 10k 100k 1M)")
    parser.add_argument("--accounts", type=int, default=100_000,
                        help="traders (one position each) of the end-to-end crash, mostly at 2x-5x (default 100,000)")
    parser.add_argument("--severe-accounts", type=int, default=5_000,
                        help="traders of the severe crash (the simulator's leverages, up to 50x), end to end; 0: not run")
    parser.add_argument("--book", type=int, default=1_000_000, help="positions of the restore and peer runs")
    parser.add_argument("--history", type=int, default=100_000,
                        help=f"positions of the restore after a history {HISTORY_ROUNDS}x longer than the state")
    parser.add_argument("--only", choices=["decision", "pipeline", "wire", "compare", "latency"],
                        help="run one part only")
    parser.add_argument("--compare-accounts", type=int, default=20_000,
                        help="traders of the crash that compare decides under every policy (default 20k)")
    parser.add_argument("--compare-policies", default=",".join(compare.ALLOCATIONS),
                        help="allocation policies of the compare timing (default: all)")
    parser.add_argument("--compare-triggers", default=",".join(compare.TRIGGERS),
                        help="trigger policies of the compare timing (default: all)")
    parser.add_argument("--latency-accounts", type=int, default=5_000,
                        help="traders of the market of the shortfall latency runs (default 5000)")
    parser.add_argument("--latency-backlog", type=int, default=250_000,
                        help="records waiting before the processor starts, for the latency under a backlog")
    parser.add_argument("--latency-seconds", type=float, default=60,
                        help="how long the paced latency run feeds (at half the backlog's records/s; default 60)")
    parser.add_argument("--json", default="bench-results.json", help="where the JSON goes (also printed)")
    args = parser.parse_args(argv)
    keep_freed_memory()  # as `adl-stream run` does (adl_stream/runtime/memory.py)
    console = Console(stderr=True)
    configure_logging("json", "error", sys.stderr)  # expiring reservations warn by the thousand
    results: dict = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}

    if args.only in (None, "decision"):
        samples = {n: 500 if n <= 100_000 else 200 for n in args.positions}
        with console.status("decision latency ..."):
            results["decision"] = decision.run(args.positions, samples)
        table(console, "ADL decision latency (pure engine)", results["decision"])
        with console.status("decision latency per allocation policy ..."):
            results["policies"] = decision.policies([n for n in args.positions if n <= 100_000], 100)
        table(console, "ADL decision latency per allocation policy", results["policies"])
        with console.status("ADL indicator passes ..."):
            results["indicators"] = decision.indicator_passes([n for n in args.positions if n >= 100_000])
        table(console, "ADL indicator pass over the whole book", results["indicators"])

    if args.only in (None, "wire"):
        with console.status("decode throughput per framing ..."):
            results["wire"] = wire.run()
        table(console, "Decoding per framing (in memory; x_raw: against fastavro into a dict)", results["wire"])

    if args.only in (None, "pipeline"):
        with EmbeddedBroker(Path(tempfile.gettempdir()) / "adl-bench-broker.log") as broker:
            results["pipeline"] = _pipeline(broker, args, console)

    if args.only in (None, "latency"):
        with EmbeddedBroker(Path(tempfile.gettempdir()) / "adl-bench-latency.log") as broker, console.status(
                f"shortfall latency: a backlog of {args.latency_backlog:,} records, then paced for "
                f"{args.latency_seconds:g} s ..."):
            results["latency"] = latency.run(broker, args.latency_accounts, args.latency_backlog, args.latency_seconds)
        table(console, "Shortfall latency, consumed -> committed (exactly-once, commit_interval_ms = 100)",
              latency.rows(results["latency"]))

    if args.only in (None, "compare"):
        with console.status(f"compare: the crash of {args.compare_accounts:,} accounts under every policy ..."):
            results["compare"] = compare.run(args.compare_accounts, args.compare_triggers.split(","),
                                             args.compare_policies.split(","))
        table(console, "adl-stream compare (scenario mode), seconds per policy", results["compare"])

    results["targets"] = _targets(results)
    table(console, "Targets", results["targets"])
    print(dump(results, args.json))
    return 0


def _pipeline(broker: EmbeddedBroker, args, console: Console) -> dict:
    out: dict = {}
    crashes = [("crash", args.accounts, pipeline.CRASH_LEVERAGES)]
    if args.severe_accounts:
        crashes.append(("severe", args.severe_accounts, pipeline.SEVERE_LEVERAGES))
    for name, accounts, leverages in crashes:
        crash = pipeline.settings_for(broker, f"{name}{uuid.uuid4().hex[:6]}.")
        with console.status(f"simulating and publishing the {name} of {accounts:,} accounts (leverages {leverages}) ..."):
            simulated = pipeline.crash_records(accounts, leverages)
            records = pipeline.prefill(crash, simulated)
        with console.status(f"raw limit, adl-stream, then the engines alone, over the {name} ..."):
            out[f"{name}_raw"] = pipeline.raw_limit(crash, records)
            out[f"{name}_adl_stream"] = {"positions": accounts, **pipeline.adl_stream(crash, records)}
            gc.collect()
            out[f"{name}_engine"] = pipeline.engine_alone(crash, simulated)
            del simulated
        out[f"{name}_ratio"] = round(out[f"{name}_adl_stream"]["events_per_s"] / out[f"{name}_raw"]["events_per_s"], 3)
        # The engines' share of the processor's time, and the ratio a processor would reach whose runtime
        # (consume, decode, merge, produce, changelog, transactions) cost no more than the raw limit:
        # raw time / (raw time + the engines' time).
        raw_s, engine_s = out[f"{name}_raw"]["seconds"], out[f"{name}_engine"]["seconds"]
        out[f"{name}_engine_share"] = round(engine_s / out[f"{name}_adl_stream"]["seconds"], 3)
        out[f"{name}_ratio_if_runtime_raw"] = round(raw_s / (raw_s + engine_s), 3)

    book = pipeline.settings_for(broker, f"book{uuid.uuid4().hex[:6]}.")
    with console.status(f"publishing a book of {args.book:,} positions ..."):
        records = pipeline.prefill(book, pipeline.book_records(args.book))
    with console.status("raw limit, adl-stream, then restore, over the book ..."):
        out["book_raw"] = pipeline.raw_limit(book, records)
        out["book_adl_stream"] = pipeline.adl_stream(book, records)
        out["book_restore"] = pipeline.restore(book, records)
    out["book_ratio"] = round(out["book_adl_stream"]["events_per_s"] / out["book_raw"]["events_per_s"], 3)

    history = pipeline.settings_for(broker, f"history{uuid.uuid4().hex[:6]}.")
    with console.status(f"publishing {args.history:,} positions traded {HISTORY_ROUNDS} times ..."):
        records = pipeline.prefill(history, pipeline.history_records(args.history, HISTORY_ROUNDS))
    with console.status("adl-stream over that history, then restore ..."):
        out["history_adl_stream"] = pipeline.adl_stream(history, records)
        out["history_restore"] = pipeline.restore(history, records)

    fills = pipeline.settings_for(broker, f"fills{uuid.uuid4().hex[:6]}.")
    with console.status(f"publishing {args.book:,} fills for the peer ..."):
        count = pipeline.prefill(fills, [r for r in pipeline.book_records(args.book) if isinstance(r, pipeline.Fill)])
    with console.status("positions from fills: adl-stream, Quix Streams, then adl-stream again ..."):
        runs = pipeline.peer(fills, count)
    out.update({f"peer_{name}": figures for name, figures in runs.items()})

    table(console, "Through Kafka (embedded broker, same run; *_engine: the same records, engines alone in memory)", [
        {"run": name, "records": figures.get("records", 0), "seconds": figures.get("seconds", 0.0),
         "events_per_s": figures.get("events_per_s", 0), "ADL shortfalls": figures.get("adl_shortfalls", "-"),
         "orders": figures.get("orders", "-")} for name, figures in out.items() if isinstance(figures, dict)])
    return out


def _targets(results: dict) -> list[dict]:
    figures = {}
    for row in results.get("decision", []):
        figures[f"p99_ms@{row['positions']}"] = row["p99_ms"]
    if results.get("decision"):
        figures["updates_per_s_min"] = min(row["updates_per_s"] for row in results["decision"])
        # The cost of one more position (the growth from half the book to all of it): a small book's
        # resident-set growth per position is mostly the process's fixed costs (README "Lean positions").
        figures["marginal_bytes_per_position_max"] = max(row["marginal_bytes_per_position"]
                                                         for row in results["decision"])
    pipe = results.get("pipeline", {})
    if pipe:
        figures["e2e_ratio"] = min(pipe["crash_ratio"], pipe["book_ratio"])
        positions = pipe["book_restore"]["positions"]
        figures[f"restore_s@{positions}"] = pipe["book_restore"]["seconds"]
        if "history_restore" in pipe:
            figures["history_restore_records_per_position"] = round(
                pipe["history_restore"]["records"] / max(pipe["history_restore"]["positions"], 1), 2)
        if "peer_ratio" in pipe:
            figures["peer_ratio"] = pipe["peer_ratio"]
    paced = results.get("latency", {}).get("paced", {})
    if "p99_ms" in paced:
        figures["shortfall_p99_ms_paced"] = paced["p99_ms"]
    rows = []
    for name, (target, higher) in TARGETS.items():
        if name in figures:
            value = figures[name]
            met = value >= target if higher else value <= target
            rows.append({"figure": name, "value": float(value), "target": float(target), "met": "yes" if met else "NO"})
    return rows


if __name__ == "__main__":
    sys.exit(main())
