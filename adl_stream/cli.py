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


def _run(args: argparse.Namespace) -> int:
    from .runtime.processor import Processor

    flags = {k: getattr(args, k) for k in ("bootstrap_servers", "group_id", "metrics_port", "log_format", "log_level")}
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
        return Processor(settings).run(stop)
    except StartupError as exc:
        structlog.get_logger("adl_stream").error("startup_failed", error=str(exc))
        return EXIT_USAGE


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="adl-stream", description="Auto-deleveraging engine for perpetual futures, as a Kafka stream processor.")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the processor", description="Consume the input topics, decide shortfalls, produce ADL orders and decisions.")
    run.add_argument("--config", help="TOML settings file (default: $ADL_CONFIG)")
    run.add_argument("--bootstrap-servers", help="Kafka bootstrap servers (ADL_BOOTSTRAP_SERVERS)")
    run.add_argument("--group-id", help="consumer group (ADL_GROUP_ID)")
    run.add_argument("--metrics-port", type=int, help="port of /metrics, /healthz, /readyz; 0 = any free port (ADL_METRICS_PORT)")
    run.add_argument("--log-format", choices=LOG_FORMATS, help="json, console, or auto: console on a terminal (ADL_LOG_FORMAT)")
    run.add_argument("--log-level", choices=LOG_LEVELS, help="ADL_LOG_LEVEL")
    run.set_defaults(handler=_run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
