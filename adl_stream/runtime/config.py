"""Settings of ``adl-stream run``: a TOML file, overridden by ``ADL_*`` environment variables,
overridden by command-line flags (SPEC §5). Everything is validated at start; an invalid setting
raises :class:`ConfigError` naming the setting, where it came from and how to fix it.

Environment variables:
- ``ADL_CONFIG``: path of the TOML file (same as ``--config``);
- ``ADL_<SETTING>`` for a top-level setting, e.g. ``ADL_BOOTSTRAP_SERVERS``, ``ADL_METRICS_PORT``;
- ``ADL_TOPIC_<NAME>`` for a topic name, e.g. ``ADL_TOPIC_MARK_PRICES=prod.mark-prices``;
- ``ADL_KAFKA_<PROPERTY>`` for a librdkafka property, ``_`` standing for ``.``, e.g.
  ``ADL_KAFKA_SASL_PASSWORD`` -> ``sasl.password`` (SASL/TLS settings pass through this way or
  in the file's ``[kafka]`` table).
Symbols are declared in the file only (``[symbols.<NAME>]``).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from ..engine import ALLOCATION_POLICIES, SymbolSpec, TriggerPolicy
from ..engine.allocation import allocation_policy
from ..engine.funds import TRIGGER_POLICIES, trigger_policy

LOG_FORMATS = ("auto", "json", "console")
LOG_LEVELS = ("debug", "info", "warning", "error")


class ConfigError(ValueError):
    def __init__(self, setting: str, source: str, problem: str) -> None:
        super().__init__(f"invalid setting {setting!r} (from {source}): {problem}")
        self.setting = setting


@dataclass(frozen=True)
class Topics:
    fills: str = "fills"
    mark_prices: str = "mark-prices"
    balances: str = "balances"
    insurance_fund: str = "insurance-fund"
    liquidation_shortfalls: str = "liquidation-shortfalls"
    adl_orders: str = "adl-orders"
    adl_decisions: str = "adl-decisions"
    adl_dlq: str = "adl-dlq"
    adl_indicators: str = "adl-indicators"
    """Compacted, keyed ``<symbol>:<account_id>`` (SPEC §2): the ADL indicator lights, a tombstone
    for a closed position."""

    def inputs(self) -> tuple[str, ...]:
        return (self.fills, self.mark_prices, self.balances, self.insurance_fund, self.liquidation_shortfalls)

    def outputs(self) -> tuple[str, ...]:
        return (self.adl_orders, self.adl_decisions, self.adl_dlq, self.adl_indicators)

    def compacted(self) -> tuple[str, ...]:
        """The outputs that keep one record per key (``cleanup.policy=compact``)."""
        return (self.adl_indicators,)


@dataclass(frozen=True)
class Settings:
    bootstrap_servers: str = "localhost:9092"
    group_id: str = "adl-stream"
    processing_guarantee: str = "exactly-once"
    """exactly-once (Kafka transactions) or at-least-once."""
    instance_id: str = "0"
    """Stable and unique per instance (e.g. a StatefulSet ordinal): the transactional id is
    ``<group_id>-<instance_id>``, so a restarted instance fences its zombie."""
    on_internal_error: str = "stop"
    """An unexpected exception while applying a record: ``stop`` (exit 1, logging the record's
    topic/partition/offset) or ``dead-letter`` (to adl-dlq as ``internal_error``, and go on)."""
    membership: str = "static"
    """``static``: the group member has ``group.instance.id = <group_id>-<instance_id>`` (KIP-345),
    so a restarted instance takes its tasks back at once; ``dynamic``: none (README "Static
    membership")."""
    metrics_host: str = "0.0.0.0"
    metrics_port: int = 9464
    """0 picks a free port (logged at start)."""
    trigger_policy: str = "fund-exhausted"
    fund_floor: Decimal = Decimal(0)
    drawdown_pct: Decimal = Decimal(0)
    """``drawdown``: ADL when paying would leave the fund more than this percent below its peak."""
    drawdown_window_ms: int = 28_800_000
    """``drawdown``: the stream time over which the peak balance is taken (OKX: 8 h)."""
    ranking_policy: str = "pnl-leverage"
    """The allocation policy (SPEC §3.3)."""
    haircut_cap: Decimal = Decimal(1)
    """``pnl-pro-rata``: no position's haircut above this times its uPnL."""
    indicator_interval_ms: int = 30_000
    """ADL indicator lights each time stream time crosses a multiple of this (0: off)."""
    reservation_timeout_ms: int = 60_000
    dedup_window_ms: int = 3_600_000
    """Event time an input id is remembered; at least ``max_event_lateness_ms`` (README, "Time and
    duplicates": a repeat older than that is refused as late anyway)."""
    max_event_skew_ms: int = 60_000
    """A record whose event time is further ahead of stream time (or, while stream time is unknown
    or behind it, of the Kafka record timestamp) is dead-lettered as ``future_event``."""
    max_event_lateness_ms: int = 3_600_000
    """A fill, fund flow or shortfall further behind stream time is dead-lettered as
    ``late_event``; at most ``dedup_window_ms``."""
    batch_size: int = 5_000
    """Most input records per consume call and per transaction."""
    commit_interval_ms: int = 100
    """Longest a transaction stays open while records keep coming (Kafka Streams'
    ``commit.interval.ms``): outputs become visible to read_committed readers at commit."""
    poll_timeout_ms: int = 100
    max_idle_ms: int = 2_000
    """How long an empty input partition holds back the others (deterministic order vs latency)."""
    startup_timeout_s: int = 30
    broker_outage_s: int = 60
    """Longest the broker may be unreachable (or its transactions fail) while running: a commit
    that fails for that reason is aborted and the work redone from the last commit, until the
    broker has failed for this long; then the processor exits with code 1 naming this setting."""
    state_partitions: int = 0
    """Partitions (= tasks, the most instances that share the work) of the changelog topic
    ``<group_id>-changelog`` when the processor creates it; 0: as many as the input topics have."""
    snapshot_min_records: int = 100_000
    """A task snapshots its state into the changelog once it has written at least this many
    changelog entities since its latest snapshot started and a restore would read more than 1.5
    times the entities it holds (that snapshot and what was written since); a restore reads from
    the latest complete snapshot (so about 1.5 times the state at most). A state that only grows
    takes no snapshot (:mod:`.snapshots`)."""
    snapshot_chunk_entities: int = 10_000
    """Most snapshot entities one transaction writes (a part of seen ids weighs its ids): a snapshot
    spans transactions, so none stalls; 10,000 entities are about 25 ms of work, within the
    shortfall latency's budget (50,000 were 125 ms, the p99 of the paced runs where they fell)."""
    state_replication_factor: int = -1
    """Replication factor of the changelog topic when the processor creates it; -1: the broker's
    ``default.replication.factor``."""
    log_format: str = "auto"
    log_level: str = "info"
    topics: Topics = field(default_factory=Topics)
    symbols: Mapping[str, SymbolSpec] = field(default_factory=dict)
    kafka: Mapping[str, str] = field(default_factory=dict, repr=False)  # may hold secrets
    kafka_sources: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)
    """Where each ``kafka`` property was set (for error messages), e.g. ``config file adl.toml``."""
    writer_schemas: tuple[str, ...] = ()
    """Directories of further writer schemas (``*.avsc``) of the inputs, read by Avro schema
    resolution (SPEC §2); each is checked at start."""
    schema_registry_url: str = field(default="", repr=False)  # may hold credentials
    """Confluent Schema Registry (or a compatible one); set: Confluent framing in and out."""
    auto_register_schemas: bool = False
    """Register the output schemas at start; off: they must be registered, and compatible."""
    schema_registry: Mapping[str, Any] = field(default_factory=dict, repr=False)  # may hold secrets
    """Properties of the registry client (``basic.auth.user.info``, ``ssl.ca.location``, ...)."""
    schema_registry_sources: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    @property
    def exactly_once(self) -> bool:
        return self.processing_guarantee == "exactly-once"

    @property
    def transactional_id(self) -> str:
        return f"{self.group_id}-{self.instance_id}"

    @property
    def group_instance_id(self) -> str:
        """The group member's static id (``group.instance.id``, KIP-345): ``<group_id>-<instance_id>``,
        stable across restarts as the instance id is (README "Static membership")."""
        return f"{self.group_id}-{self.instance_id}"

    def trigger(self) -> TriggerPolicy:
        return trigger_policy(self.trigger_policy, fund_floor=self.fund_floor, drawdown_pct=self.drawdown_pct,
                              drawdown_window_ms=self.drawdown_window_ms)

    def ranking(self):
        return allocation_policy(self.ranking_policy, haircut_cap=self.haircut_cap)


_TABLES = ("topics", "symbols", "kafka", "kafka_sources", "schema_registry", "schema_registry_sources")
_SCALARS = {f.name: f for f in fields(Settings) if f.name not in _TABLES}
#: Properties of the schema registry client that are numbers (an environment variable is text).
REGISTRY_NUMBERS = ("timeout", "cache.capacity", "cache.latest.ttl.sec", "max.retries", "retries.wait.ms",
                    "retries.max.wait.ms")
_TOPIC_NAMES = tuple(f.name for f in fields(Topics))
PROCESSING_GUARANTEES = ("exactly-once", "at-least-once")
MEMBERSHIPS = ("static", "dynamic")
_CHOICES = {
    "membership": MEMBERSHIPS,
    "on_internal_error": ("stop", "dead-letter"),
    "processing_guarantee": PROCESSING_GUARANTEES,
    "trigger_policy": TRIGGER_POLICIES,
    "ranking_policy": tuple(ALLOCATION_POLICIES),
    "log_format": LOG_FORMATS,
    "log_level": LOG_LEVELS,
}
_NON_NEGATIVE = ("max_idle_ms", "commit_interval_ms", "state_partitions", "indicator_interval_ms")
_POSITIVE = ("max_event_skew_ms", "max_event_lateness_ms", "reservation_timeout_ms", "dedup_window_ms", "drawdown_window_ms",
             "haircut_cap", "batch_size", "poll_timeout_ms", "startup_timeout_s", "snapshot_min_records", "broker_outage_s",
             "snapshot_chunk_entities")


def _coerce(setting: str, value: Any, kind: Any, source: str):
    if kind in (bool, "bool"):
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        if not isinstance(value, bool):
            raise ConfigError(setting, source, f"expected true or false, got {value!r}")
        return value
    if kind == "tuple[str, ...]":  # directories: a TOML array, or a string of them separated by os.pathsep
        items = value.split(os.pathsep) if isinstance(value, str) else value
        if not isinstance(items, list | tuple) or not all(isinstance(i, str) and i for i in items):
            raise ConfigError(setting, source, f"expected a list of directories, got {value!r}")
        return tuple(items)
    if kind in (int, "int"):
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ConfigError(setting, source, f"expected a whole number, got {value!r}")
        try:
            return int(value)
        except ValueError:
            raise ConfigError(setting, source, f"expected a whole number, got {value!r}") from None
    if kind in (Decimal, "Decimal"):
        if isinstance(value, float):
            raise ConfigError(setting, source, f"write {value!r} as a string (\"{value}\") to keep it exact")
        try:
            number = Decimal(str(value))
        except InvalidOperation:
            raise ConfigError(setting, source, f"expected a decimal number, got {value!r}") from None
        if not number.is_finite():
            raise ConfigError(setting, source, f"expected a finite decimal number, got {value!r}")
        return number
    if not isinstance(value, str) or not value:
        raise ConfigError(setting, source, f"expected a non-empty string, got {value!r}")
    return value


def _symbols(table: Any, source: str) -> dict[str, SymbolSpec]:
    if not isinstance(table, dict):
        raise ConfigError("symbols", source, "expected a table of [symbols.<NAME>] tables")
    symbols = {}
    for name, spec in table.items():
        where = f"symbols.{name}"
        if not isinstance(spec, dict):
            raise ConfigError(where, source, "expected a table with settle_asset = \"...\"")
        unknown = set(spec) - {"settle_asset", "fund_id", "lot_size", "tick_size"}
        if unknown:
            raise ConfigError(f"{where}.{sorted(unknown)[0]}", source, "unknown key; allowed: settle_asset, fund_id, lot_size, tick_size")
        if "settle_asset" not in spec:
            raise ConfigError(f"{where}.settle_asset", source, "missing; e.g. settle_asset = \"USDT\"")
        asset = _coerce(f"{where}.settle_asset", spec["settle_asset"], str, source)
        steps = {}
        for step in ("lot_size", "tick_size"):
            if step in spec:
                steps[step] = _coerce(f"{where}.{step}", spec[step], Decimal, source)
                if steps[step] <= 0:
                    raise ConfigError(f"{where}.{step}", source, "must be > 0")
        fund = _coerce(f"{where}.fund_id", spec.get("fund_id", asset), str, source)
        # A fund pays shortfalls in one currency, and its decisions stay with one settle asset's
        # engine (runtime/topology.py).
        other = next((s for s in symbols.values() if s.fund_id == fund and s.settle_asset != asset), None)
        if other is not None:
            raise ConfigError(f"{where}.fund_id", source, f"fund {fund!r} already backs {other.symbol}, settled in "
                              f"{other.settle_asset}; a fund serves symbols of one settle asset ({asset} here)")
        symbols[name] = SymbolSpec(name, asset, fund, **steps)
    return symbols


def load_settings(
    config_path: str | os.PathLike | None = None,
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> Settings:
    """Build and validate the settings from file < environment < flags."""
    env = os.environ if env is None else env
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    values: dict[str, tuple[Any, str]] = {}
    topics: dict[str, tuple[Any, str]] = {}
    kafka: dict[str, str] = {}
    kafka_sources: dict[str, str] = {}
    symbols: dict[str, SymbolSpec] = {}
    registry: dict[str, Any] = {}
    registry_sources: dict[str, str] = {}

    path = config_path or env.get("ADL_CONFIG")
    if path:
        source = f"config file {path}"
        try:
            document = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError("config", "--config / ADL_CONFIG", f"no such file: {path}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError("config", source, f"not valid TOML: {exc}") from None
        for key, value in document.items():
            if key == "topics":
                if not isinstance(value, dict):
                    raise ConfigError("topics", source, "expected a [topics] table")
                for name, topic in value.items():
                    topics[name] = (topic, source)
            elif key == "kafka":
                if not isinstance(value, dict):
                    raise ConfigError("kafka", source, "expected a [kafka] table of librdkafka properties")
                for name, property_ in value.items():
                    if isinstance(property_, dict):
                        raise ConfigError(f"kafka.{name}", source, "a table; write librdkafka properties "
                                          "quoted in [kafka] (e.g. \"sasl.mechanism\" = \"PLAIN\"): each "
                                          "goes to the clients (consumer, producer) that know it")
                    kafka[str(name)] = str(property_)
                    kafka_sources[str(name)] = f"{source}, [kafka]"
            elif key == "symbols":
                symbols = _symbols(value, source)
            elif key == "schema_registry":
                if not isinstance(value, dict):
                    raise ConfigError(key, source, "expected a [schema_registry] table of the registry client's "
                                      "properties, e.g. \"basic.auth.user.info\" = \"user:password\"")
                for name, property_ in value.items():
                    registry[str(name)], registry_sources[str(name)] = property_, f"{source}, [schema_registry]"
            elif key in _SCALARS:
                values[key] = (value, source)
            else:
                raise ConfigError(key, source, f"unknown setting; known: {', '.join(sorted([*_SCALARS, 'topics', 'kafka', 'symbols', 'schema_registry']))}")

    for name, value in env.items():
        if not name.startswith("ADL_") or name == "ADL_CONFIG":
            continue
        key = name[4:].lower()
        source = f"environment variable {name}"
        if key.startswith("topic_"):
            topics[key[6:]] = (value, source)
        elif key.startswith("schema_registry_") and key not in _SCALARS:
            property_ = key[16:].replace("_", ".")
            registry[property_], registry_sources[property_] = value, source
        elif key.startswith("kafka_"):
            property_ = key[6:].replace("_", ".")
            kafka[property_], kafka_sources[property_] = value, source
        elif key in _SCALARS:
            values[key] = (value, source)
        else:
            raise ConfigError(key, source, "unknown setting (ADL_TOPIC_*, ADL_KAFKA_* or a top-level setting)")

    for key, value in flags.items():
        values[key] = (value, f"flag --{key.replace('_', '-')}")

    settings: dict[str, Any] = {}
    for key, (value, source) in values.items():
        settings[key] = value = _coerce(key, value, _SCALARS[key].type, source)
        if key in _CHOICES and value not in _CHOICES[key]:
            raise ConfigError(key, source, f"{value!r} is not one of {', '.join(_CHOICES[key])}")
        if key in _POSITIVE and value <= 0:
            raise ConfigError(key, source, "must be > 0")
        if key in _NON_NEGATIVE and value < 0:
            raise ConfigError(key, source, "must be >= 0")
        if key == "metrics_port" and not 0 <= value <= 65535:
            raise ConfigError(key, source, "must be a TCP port, 0 to 65535")
        if key == "state_replication_factor" and not (value == -1 or value >= 1):
            raise ConfigError(key, source, "must be -1 (the broker's default) or >= 1")
        if key == "fund_floor" and value < 0:
            raise ConfigError(key, source, "must be >= 0 (the fund never goes negative)")
        if key == "drawdown_pct" and not 0 < value < 100:
            raise ConfigError(key, source, "must be a percentage above 0 and below 100, e.g. drawdown_pct = \"30\"")
        if key == "writer_schemas":
            _check_directories(value, source)
    topic_names = {}
    for name, (topic, source) in topics.items():
        if name not in _TOPIC_NAMES:
            raise ConfigError(f"topics.{name}", source, f"unknown topic; known: {', '.join(_TOPIC_NAMES)}")
        topic_names[name] = _coerce(f"topics.{name}", topic, str, source)
    registry = _registry_properties(registry, registry_sources, bool(settings.get("schema_registry_url")))
    resolved = replace(Settings(), **settings, topics=Topics(**topic_names), symbols=symbols, kafka=kafka,
                       kafka_sources=kafka_sources, schema_registry=registry, schema_registry_sources=registry_sources)
    if not path:
        raise ConfigError("config", "--config / ADL_CONFIG", "no settings file given: the symbols are declared "
                          "there. Give one with --config FILE or ADL_CONFIG=FILE; deploy/config/local.toml "
                          "is one for the local broker (adl-stream broker)")
    if not resolved.symbols:
        raise ConfigError("symbols", f"config file {path}", "no symbol declared; add e.g. [symbols.BTCUSDT] settle_asset = \"USDT\" to the config file")
    if resolved.trigger_policy == "fund-floor" and "fund_floor" not in values:
        raise ConfigError("fund_floor", values["trigger_policy"][1], "trigger_policy = \"fund-floor\" needs "
                          "fund_floor, the balance below which shortfalls go to ADL, e.g. fund_floor = \"250000\" "
                          "(ADL_FUND_FLOOR)")
    if resolved.trigger_policy == "drawdown" and "drawdown_pct" not in values:
        raise ConfigError("drawdown_pct", values["trigger_policy"][1], "trigger_policy = \"drawdown\" needs "
                          "drawdown_pct, the percent below the fund's peak at which ADL starts, e.g. "
                          "drawdown_pct = \"30\" (OKX), with drawdown_window_ms (default 8 h) (ADL_DRAWDOWN_PCT)")
    if resolved.max_event_lateness_ms > resolved.dedup_window_ms:
        key = "max_event_lateness_ms" if "max_event_lateness_ms" in values else "dedup_window_ms"
        raise ConfigError(key, values[key][1] if key in values else "defaults",
                          f"max_event_lateness_ms ({resolved.max_event_lateness_ms}) must be <= dedup_window_ms "
                          f"({resolved.dedup_window_ms}): an id older than the de-duplication window cannot be "
                          "told from a repeat. Lower max_event_lateness_ms or raise dedup_window_ms")
    names = [*resolved.topics.inputs(), *resolved.topics.outputs()]
    if len(set(names)) != len(names):
        raise ConfigError("topics", "settings", f"two topics share a name: {names}")
    return resolved


SECRET_MARKERS = ("password", "secret", "key", "token", "credential")


def redacted(kafka: Mapping[str, str]) -> dict[str, str]:
    """librdkafka properties with every secret value masked (for logs)."""
    return {k: ("***" if any(m in k.lower() for m in SECRET_MARKERS) else v) for k, v in kafka.items()}


def _check_directories(directories: tuple[str, ...], source: str) -> None:
    for directory in directories:
        if not Path(directory).is_dir():
            raise ConfigError("writer_schemas", source, f"{directory}: no such directory")
        if not any(Path(directory).glob("*.avsc")):
            raise ConfigError("writer_schemas", source, f"{directory}: no Avro schema (*.avsc) in it")


def _registry_properties(registry: dict[str, Any], sources: dict[str, str], with_url: bool) -> dict[str, Any]:
    """The registry client's properties, numbers made numbers; checked by the client itself at start
    (:func:`adl_stream.runtime.serdes.registry_conf`)."""
    for name, value in registry.items():
        if name == "url":
            raise ConfigError("schema_registry.url", sources[name], "give the URL as schema_registry_url "
                              "(ADL_SCHEMA_REGISTRY_URL)")
        if name in REGISTRY_NUMBERS and isinstance(value, str):
            try:
                registry[name] = float(value) if "." in value else int(value)
            except ValueError:
                raise ConfigError(f"schema_registry.{name}", sources[name], f"expected a number, got {value!r}") from None
    if registry and not with_url:
        name = next(iter(registry))
        raise ConfigError(f"schema_registry.{name}", sources[name], "a schema registry property without "
                          "schema_registry_url: set the URL (ADL_SCHEMA_REGISTRY_URL) or remove the property")
    return registry


#: Properties of the registry client that hold secrets (masked in logs).
REGISTRY_SECRETS = ("basic.auth.user.info", "ssl.key.password", "bearer.auth.token", "bearer.auth.client.secret")


def redacted_registry(url: str, registry: Mapping[str, Any]) -> dict[str, Any]:
    """The registry URL (credentials in it masked) and client properties with secrets masked (for logs)."""
    from urllib.parse import urlsplit

    masked = []
    for one in url.split(","):
        parts = urlsplit(one.strip())
        if parts.password is not None or parts.username is not None:
            one = parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[-1]).geturl()
        masked.append(one.strip())
    properties = {k: ("***" if k in REGISTRY_SECRETS or any(m in k.lower() for m in SECRET_MARKERS) else v)
                  for k, v in registry.items()}
    return {"url": ",".join(masked), **properties}
