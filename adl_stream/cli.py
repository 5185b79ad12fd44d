"""The ``adl-stream`` console script."""

from __future__ import annotations

import argparse
import signal
import sys
import threading

import structlog

from .runtime.config import LOG_FORMATS, LOG_LEVELS, ConfigError, load_settings
from .runtime.kafka import StartupError
from .runtime.logs import configure_logging

EXIT_USAGE = 2


def _processor_command(args: argparse.Namespace, make_processor) -> int:
    """Load settings, set up logging and signals, run the processor ``make_processor(settings)``."""
    flags = {k: getattr(args, k, None) for k in ("bootstrap_servers", "group_id", "metrics_port", "log_format", "log_level")}
    try:
        settings = load_settings(args.config, flags=flags)
    except ConfigError as exc:
        print(f"adl-stream: {exc}", file=sys.stderr)
        return EXIT_USAGE
    configure_logging(settings.log_format, settings.log_level)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        return make_processor(settings).run(stop)
    except StartupError as exc:
        structlog.get_logger("adl_stream").error("startup_failed", error=str(exc))
        return EXIT_USAGE


def _run(args: argparse.Namespace) -> int:
    from .runtime.processor import Processor

    return _processor_command(args, Processor)


def _replay(args: argparse.Namespace) -> int:
    from .runtime import replay
    from .runtime.kafka import create_missing_topics
    from .runtime.processor import Processor

    if not args.dry_run and not args.output_suffix:
        print("adl-stream replay: give --output-suffix (new output topics) or --dry-run", file=sys.stderr)
        return EXIT_USAGE
    try:
        start_at = (replay.from_timestamp(args.from_timestamp) if args.from_timestamp is not None
                    else replay.from_offsets(replay.parse_offsets(args.from_offsets)))
    except ValueError as exc:
        print(f"adl-stream replay: {exc}", file=sys.stderr)
        return EXIT_USAGE

    def make(settings):
        settings = replay.replay_settings(settings, None if args.dry_run else args.output_suffix, args.replay_group_id)
        if args.dry_run:
            return Processor(settings, start_at=start_at, until_caught_up=True, dry_run=sys.stdout)
        create_missing_topics(settings, settings.topics.outputs())
        return Processor(settings, start_at=start_at, until_caught_up=True)

    return _processor_command(args, make)


def _inspect(args: argparse.Namespace) -> int:
    import json

    from rich.console import Console
    from rich.table import Table

    from .inspection import report

    try:
        settings = load_settings(args.config, flags={"bootstrap_servers": args.bootstrap_servers, "group_id": args.group_id})
        state = report(settings, args.symbol, args.top)
    except (ConfigError, StartupError, ValueError) as exc:
        print(f"adl-stream inspect: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        print(json.dumps(state, indent=2))
        return 0
    console = Console()
    assets = Table("settle asset", "stream time", "open positions", "reservations", "funds",
                   title=f"State committed by group {settings.group_id}")
    for asset, row in state["settle_assets"].items():
        funds = ", ".join(f"{fund} {balance}" for fund, balance in row["funds"].items())
        assets.add_row(asset, str(row["stream_time"]), str(row["positions"]), str(row["reservations"]), funds)
    console.print(assets)
    for title, queue in state.get("symbol", {}).get("queues", {}).items():
        table = Table("rank", "account", "quantity", "free", "score", "notional",
                      title=f"{args.symbol} ADL queue {title} (mark {state['symbol']['mark']})")
        for row in queue:
            table.add_row(str(row["rank"]), row["account_id"], row["quantity"], row["free"], f"{row['score']:.6g}", row["notional"])
        console.print(table)
    return 0


def _scenario(args: argparse.Namespace):
    from decimal import Decimal

    from .simulation.market import Scenario

    return Scenario(seed=args.seed, accounts=args.accounts, crash_depth=Decimal(args.crash_depth),
                    rebound=Decimal(args.rebound), crash_steps=args.crash_steps)


def _demo(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rich.console import Console

    from .demo import run_demo

    console = Console()
    try:
        report = run_demo(_scenario(args), Path(args.output), metrics_port=args.metrics_port,
                          partitions=args.partitions, bootstrap_servers=args.bootstrap_servers,
                          topic_prefix=args.topic_prefix, console=console)
    except (RuntimeError, TimeoutError) as exc:
        console.print(f"[red]adl-stream demo failed:[/] {exc}")
        return 1
    summary = report.summary()
    return 0 if summary["decisions_as_predicted"] == len(report.predicted) == summary["shortfalls"] else 1


def _simulate(args: argparse.Namespace) -> int:
    from rich.progress import Progress

    from .engine.records import OUTCOMES
    from .simulation.market import MarketSimulator, default_symbols
    from .simulation.publish import Publisher

    flags = {"bootstrap_servers": args.bootstrap_servers, "log_format": args.log_format, "log_level": args.log_level}
    try:
        settings = load_settings(args.config, flags=flags)
    except ConfigError as exc:
        print(f"adl-stream: {exc}", file=sys.stderr)
        return EXIT_USAGE
    simulator = MarketSimulator(_scenario(args), settings.symbols or default_symbols(),
                                trigger=settings.trigger(), ranking=settings.ranking())
    publisher = Publisher({"bootstrap.servers": settings.bootstrap_servers, **settings.kafka}, settings.topics,
                          rate=args.rate)
    with Progress(transient=False) as progress:
        task = progress.add_task(f"publishing to {settings.bootstrap_servers}", total=None)
        sent = publisher.send_all(simulator.records(), lambda n: progress.update(task, completed=n))
    tape = simulator.tape
    outcomes = {o: sum(1 for d in tape.decisions if d.outcome == o) for o in OUTCOMES}
    print(f"published {sent} records: {tape.liquidations} liquidations, {len(tape.decisions)} shortfalls {outcomes}, "
          f"{tape.orders} ADL orders echoed as fills", file=sys.stderr)
    return 0


def _scenario_flags(command: argparse.ArgumentParser, accounts: int) -> None:
    command.add_argument("--accounts", type=int, default=accounts, help=f"traders (default {accounts})")
    command.add_argument("--seed", type=int, default=1, help="random seed: the same seed gives the same records")
    command.add_argument("--crash-depth", default="0.30", help="fraction the marks fall (default 0.30 = -30%%)")
    command.add_argument("--rebound", default="0.5", help="fraction of the drop won back (default 0.5)")
    command.add_argument("--crash-steps", type=int, default=120, help="marks per symbol during the fall (one a second)")


def _common_flags(command: argparse.ArgumentParser, metrics: bool = True) -> None:
    command.add_argument("--config", help="TOML settings file (default: $ADL_CONFIG)")
    command.add_argument("--bootstrap-servers", help="Kafka bootstrap servers (ADL_BOOTSTRAP_SERVERS)")
    if metrics:
        command.add_argument("--metrics-port", type=int, help="port of /metrics, /healthz, /readyz; 0 = any free port (ADL_METRICS_PORT)")
    command.add_argument("--log-format", choices=LOG_FORMATS, help="json, console, or auto: console on a terminal (ADL_LOG_FORMAT)")
    command.add_argument("--log-level", choices=LOG_LEVELS, help="ADL_LOG_LEVEL")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="adl-stream", description="Auto-deleveraging engine for perpetual futures, as a Kafka stream processor.")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the processor", description="Consume the input topics, decide shortfalls, produce ADL orders and decisions.")
    _common_flags(run)
    run.add_argument("--group-id", help="consumer group (ADL_GROUP_ID)")
    run.set_defaults(handler=_run)

    replay = commands.add_parser(
        "replay", help="rebuild state and decide again from offsets or a timestamp",
        description="Read the inputs from the beginning into a fresh group: records before the start points "
        "rebuild state, records from them on are decided again into <output topic>.<suffix> (or printed as "
        "JSON lines with --dry-run). Stops when every input is consumed.")
    _common_flags(replay)
    start = replay.add_mutually_exclusive_group(required=True)
    start.add_argument("--from-offsets", metavar="TOPIC:PARTITION:OFFSET,...",
                       help="output from these offsets; input partitions not named contribute state only")
    start.add_argument("--from-timestamp", type=int, metavar="EPOCH_MS",
                       help="output from the first record at or after this Kafka timestamp in each partition")
    replay.add_argument("--output-suffix", help="write outputs to <adl-orders|adl-decisions|adl-dlq>.<suffix> (created if missing)")
    replay.add_argument("--dry-run", action="store_true", help="print the outputs as JSON lines on stdout; produce nothing")
    replay.add_argument("--replay-group-id", help="consumer group of the replay (default <group_id>.replay.<suffix>)")
    replay.set_defaults(handler=_replay)

    demo = commands.add_parser(
        "demo", help="a market crash through the processor on an embedded broker, then a summary",
        description="Start an embedded Kafka-protocol broker, the processor and its metrics; simulate a crash and "
        "publish it; follow the processing; print the summary and write summary.json, a PNG and an HTML page.")
    _scenario_flags(demo, 5_000)
    demo.add_argument("--output", default="demo-output", help="directory of the summary, picture and logs")
    demo.add_argument("--metrics-port", type=int, default=0, help="port of /metrics during the demo (default: any free)")
    demo.add_argument("--partitions", type=int, default=3, help="partitions of each topic (default 3)")
    demo.add_argument("--bootstrap-servers", help="use this Kafka cluster instead of the embedded broker")
    demo.add_argument("--topic-prefix", default="", help="prefix of the demo's topic and group names")
    demo.set_defaults(handler=_demo)

    simulate = commands.add_parser(
        "simulate", help="publish a seeded synthetic market with a crash to the input topics",
        description="Balances, books of long and short positions at realistic leverage, a mark-price crash and "
        "rebound, the liquidations it causes (surpluses and shortfalls), fee income, and the fills of the ADL orders "
        "the processor will emit (predicted by the same engine). Topics and symbols come from the settings.")
    _common_flags(simulate, metrics=False)
    _scenario_flags(simulate, 10_000)
    simulate.add_argument("--rate", type=float, help="records per second (default: as fast as the broker takes them)")
    simulate.set_defaults(handler=_simulate)
    inspect = commands.add_parser(
        "inspect", help="the committed state: positions, funds, the ADL queues of a symbol",
        description="Read the group's state changelog up to its committed offsets (as a restore does) and report "
        "each settle asset's positions, reservations and funds, and with --symbol its ADL queues. Read-only.")
    inspect.add_argument("--config", help="TOML settings file (default: $ADL_CONFIG)")
    inspect.add_argument("--bootstrap-servers", help="Kafka bootstrap servers (ADL_BOOTSTRAP_SERVERS)")
    inspect.add_argument("--group-id", help="the processor's consumer group (ADL_GROUP_ID)")
    inspect.add_argument("--symbol", help="also show this symbol's ADL queues")
    inspect.add_argument("--top", type=int, default=10, help="queue places shown (default 10)")
    inspect.add_argument("--json", action="store_true", help="print JSON instead of tables")
    inspect.set_defaults(handler=_inspect)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
