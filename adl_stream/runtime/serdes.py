"""The codec the settings call for (SPEC §2, "Wire format"), checked at start.

Without ``schema_registry_url``: single-object encoding, the writer schemas of ``writer_schemas``
known beside adl-stream's own. With it: Confluent framing through the registry client, whose
properties (``[schema_registry]``, ``ADL_SCHEMA_REGISTRY_<PROPERTY>``) the client itself checks.
A writer schema that cannot be resolved, or a client property the client refuses, is a
:class:`ConfigError` (exit code 2) naming the file and field, or the property and where it was
set; an output schema the registry does not hold (or holds incompatible) or a registry that does
not answer, a :class:`StartupError` (exit code 2).
"""

from __future__ import annotations

import structlog

from ..wire import Codec
from ..wire.codec import UnresolvableSchema
from ..wire.registry import (
    RegistryCodec,
    RegistryUnavailable,
    SchemaNotUsable,
    registry_client,
    subject,
)
from ..wire.schemas import SchemaFileError, load_writer_schemas
from .config import ConfigError, Settings, redacted_registry
from .kafka import StartupError

log = structlog.get_logger("adl_stream.serdes")

OUTPUTS, INPUTS = "outputs", "inputs"


def registry_conf(settings: Settings) -> dict:
    """The registry client's configuration: the URL and the ``[schema_registry]`` properties."""
    return {"url": settings.schema_registry_url, **settings.schema_registry}


def _writers(settings: Settings):
    source = "settings"
    try:
        return load_writer_schemas(settings.writer_schemas)
    except SchemaFileError as exc:
        raise ConfigError("writer_schemas", source, f"{exc}; fix or remove the file") from None


def _subjects(settings: Settings, writes: str) -> dict[str, str]:
    t = settings.topics
    if writes == INPUTS:
        topics = {"Fill": t.fills, "MarkPrice": t.mark_prices, "BalanceUpdate": t.balances,
                  "FundFlow": t.insurance_fund, "LiquidationShortfall": t.liquidation_shortfalls}
    else:
        topics = {"AdlOrder": t.adl_orders, "ShortfallDecision": t.adl_decisions, "AdlIndicator": t.adl_indicators}
    return {name: subject(topic) for name, topic in topics.items()}


def codec_for(settings: Settings, writes: str = OUTPUTS) -> Codec:
    """The codec of a processor (``writes`` outputs) or of a producer of inputs (the simulator)."""
    try:
        writers = _writers(settings)
        if not settings.schema_registry_url:
            return Codec(writers=writers)
        client = _client(settings)
        codec = RegistryCodec(client, _subjects(settings, writes), settings.auto_register_schemas, writers=writers)
    except UnresolvableSchema as exc:
        raise ConfigError("writer_schemas", "settings", f"{exc}. Make the change compatible (a new field "
                          "needs a default; a field adl-stream reads may not be removed or change type) or "
                          "remove the file") from None
    except SchemaNotUsable as exc:
        raise StartupError(str(exc)) from None
    except RegistryUnavailable as exc:
        raise StartupError(f"{exc} (schema_registry_url {redacted_registry(settings.schema_registry_url, {})['url']})") from None
    log.info("schema_registry", **redacted_registry(settings.schema_registry_url, settings.schema_registry),
             auto_register=settings.auto_register_schemas, subjects=_subjects(settings, writes))
    return codec


def _client(settings: Settings):
    try:
        return registry_client(registry_conf(settings))
    except (ValueError, TypeError) as exc:
        problem = str(exc)
        named = [name for name in settings.schema_registry if name in problem]
        if named:
            name = named[0]
            raise ConfigError(f"schema_registry.{name}", settings.schema_registry_sources[name],
                              f"the registry client refuses it: {problem}") from None
        raise ConfigError("schema_registry_url", "settings", f"the registry client refuses the settings: {problem}") from None
