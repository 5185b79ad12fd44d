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
        replay.create_output_topics(settings)
        return Processor(settings, start_at=start_at, until_caught_up=True)

    return _processor_command(args, make)


def _common_flags(command: argparse.ArgumentParser) -> None:
    command.add_argument("--config", help="TOML settings file (default: $ADL_CONFIG)")
    command.add_argument("--bootstrap-servers", help="Kafka bootstrap servers (ADL_BOOTSTRAP_SERVERS)")
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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
