"""The Avro schemas of ``schemas/*.avsc``, parsed once by fastavro, with their fingerprints."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form

#: ``schemas/`` of the repository; in an installed wheel, the copy packaged beside this module.
SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"


@dataclass(frozen=True)
class Schema:
    name: str
    """Full name, e.g. ``io.adlstream.Fill``."""
    parsed: dict
    fingerprint: bytes
    """CRC-64-AVRO of the parsing canonical form, in the byte order of single-object encoding."""
    text: str = ""
    """The schema as JSON (what a schema registry is given)."""
    decoding: dict | None = None
    """``parsed`` with the ``timestamp-millis`` logical type left out: what the codec reads with, so
    that ``ts`` comes out as the integer milliseconds it is on the wire, without a ``datetime``
    made and turned back (same bytes: the logical type annotates a ``long``)."""

    @property
    def short_name(self) -> str:
        return self.name.rsplit(".", 1)[-1]


class SchemaFileError(ValueError):
    """An ``.avsc`` file that is not a valid Avro record schema (the message names the file)."""


def parse(document: dict | str) -> Schema:
    """A schema from its JSON (text or already loaded), parsed by fastavro, with its fingerprint."""
    document = json.loads(document) if isinstance(document, str) else document
    parsed = fastavro.parse_schema(document)
    if not isinstance(parsed, dict) or parsed.get("type") != "record":
        raise ValueError("not an Avro record schema")
    fp = bytes.fromhex(fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO"))
    return Schema(parsed["name"], parsed, fp, json.dumps(document),
                  fastavro.parse_schema(without_timestamps(document), _force=True))


def without_timestamps(node):
    """A copy of a schema document in which every ``timestamp-millis`` long is a plain long."""
    if isinstance(node, dict):
        if node.get("logicalType") == "timestamp-millis" and node.get("type") == "long":
            return "long"
        return {key: without_timestamps(value) for key, value in node.items()}
    if isinstance(node, list):
        return [without_timestamps(item) for item in node]
    return node


def load_file(path: Path) -> Schema:
    try:
        return parse(path.read_text())
    except Exception as exc:  # json and fastavro raise many types
        raise SchemaFileError(f"{path}: not a valid Avro record schema: {type(exc).__name__}: {exc}") from None


def load_writer_schemas(directories) -> list[tuple[Path, Schema]]:
    """Every ``*.avsc`` of each directory (SPEC §2: the writer schemas known without a registry)."""
    return [(path, load_file(path)) for directory in directories for path in sorted(Path(directory).glob("*.avsc"))]


def load_schemas(directory: Path = SCHEMA_DIR) -> dict[str, Schema]:
    """Every ``*.avsc`` of ``directory`` by short record name (``Fill``, ``AdlOrder``, ...)."""
    schemas = {}
    for path in sorted(directory.glob("*.avsc")):
        schema = load_file(path)
        schemas[schema.short_name] = schema
    if not schemas:
        raise FileNotFoundError(f"no Avro schemas (*.avsc) in {directory}")
    return schemas
