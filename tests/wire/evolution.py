"""Evolved versions of adl-stream's schemas, as producers would write them (shared by the wire,
runtime and integration tests)."""

from __future__ import annotations

import copy
import json
from io import BytesIO

import fastavro

from adl_stream.wire import SCHEMA_DIR, Codec, load_schemas
from adl_stream.wire.registry import RegistryCodec
from adl_stream.wire.schemas import parse

VENUE = {"name": "venue", "type": ["null", "string"], "default": None, "doc": "Added in v2."}


def document(name: str) -> dict:
    return json.loads((SCHEMA_DIR / f"{name}.avsc").read_text())


def fill_v2() -> dict:
    """Fill as a producer evolved it: an optional field added (a compatible change)."""
    evolved = document("Fill")
    evolved["fields"].append(VENUE)
    return evolved


def field_of(schema: dict, name: str) -> dict:
    return next(f for f in schema["fields"] if f["name"] == name)


def incompatible_fill() -> dict:
    """Fill whose quantity became a string: not readable as decimal(38, 18)."""
    broken = document("Fill")
    field_of(broken, "quantity")["type"] = "string"
    return broken


def write_avsc(directory, name: str, schema: dict):
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(json.dumps(schema, indent=2))
    return path


class EvolvedBody:
    """Writes Fill with v2 (``venue`` set, so that a reader must skip it), the rest as adl-stream does."""

    venue = "XNAS"

    def body(self, record):
        schema, body = super().body(record)
        if schema.short_name != "Fill":
            return schema, body
        fields = fastavro.schemaless_reader(BytesIO(body), load_schemas()["Fill"].parsed, None)
        out = BytesIO()
        fastavro.schemaless_writer(out, schema.parsed, {**fields, "venue": self.venue})
        return schema, out.getvalue()


def evolved_schemas():
    return {**load_schemas(), "Fill": parse(copy.deepcopy(fill_v2()))}


class EvolvedCodec(EvolvedBody, Codec):
    """Single-object encoding, Fill written with v2."""

    def __init__(self, venue: str = "XNAS") -> None:
        super().__init__(evolved_schemas())
        self.venue = venue


class EvolvedRegistryCodec(EvolvedBody, RegistryCodec):
    """Confluent framing, Fill written with v2 (registered under the subject given)."""

    def __init__(self, client, subjects) -> None:
        super().__init__(client, subjects, auto_register=True, schemas=evolved_schemas())
