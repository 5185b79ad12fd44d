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

    @property
    def short_name(self) -> str:
        return self.name.rsplit(".", 1)[-1]


def load_schemas(directory: Path = SCHEMA_DIR) -> dict[str, Schema]:
    """Every ``*.avsc`` of ``directory`` by short record name (``Fill``, ``AdlOrder``, ...)."""
    schemas = {}
    for path in sorted(directory.glob("*.avsc")):
        parsed = fastavro.parse_schema(json.loads(path.read_text()))
        fp = bytes.fromhex(fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO"))
        schema = Schema(parsed["name"], parsed, fp)
        schemas[schema.short_name] = schema
    if not schemas:
        raise FileNotFoundError(f"no Avro schemas (*.avsc) in {directory}")
    return schemas
