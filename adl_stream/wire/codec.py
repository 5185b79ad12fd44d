"""Avro single-object encoding of the engine's records (SPEC §2, "Wire format").

A value is ``C3 01``, the 8-byte CRC-64-AVRO fingerprint of the writer schema, then the Avro
binary body (fastavro). ``ts`` fields are ``timestamp-millis`` on the wire and integer epoch
milliseconds in the engine. Decimals are written at the schemas' scale (18), exactly: a value the
engine computed with more digits (a product of two wire decimals has 36) is rescaled, and one that
would round raises ``decimal.Inexact`` (roundings are the engine's, never the codec's). Decoding
refuses, as :class:`~adl_stream.engine.errors.Rejected`, anything that is not a well-formed record
of the expected schema with in-range decimals.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from decimal import Decimal
from io import BytesIO

import fastavro

from ..engine import records
from ..engine.errors import Rejected
from ..engine.indicators import AdlIndicator
from ..engine.numbers import WIRE_LIMIT, WIRE_SCALE, to_wire
from .schemas import Schema, load_schemas

MAGIC = b"\xc3\x01"
HEADER_SIZE = len(MAGIC) + 8
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_MILLISECOND = dt.timedelta(milliseconds=1)

RECORD_TYPES: dict[str, type] = {
    cls.__name__: cls
    for cls in (
        records.Fill,
        records.MarkPrice,
        records.BalanceUpdate,
        records.FundFlow,
        records.LiquidationShortfall,
        records.AdlOrder,
        records.ShortfallDecision,
        AdlIndicator,
    )
}


def _decimal_fields(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls) if f.type in ("Decimal", Decimal))


class Codec:
    """Encodes and decodes the records of ``schemas/`` (one instance per processor; thread-safe)."""

    def __init__(self, schemas: dict[str, Schema] | None = None) -> None:
        self.schemas = schemas or load_schemas()
        missing = set(RECORD_TYPES) - set(self.schemas)
        if missing:
            raise ValueError(f"schemas missing for records: {sorted(missing)}")
        self._by_fingerprint = {s.fingerprint: s for s in self.schemas.values()}
        self._fields = {name: tuple(f.name for f in dataclasses.fields(cls)) for name, cls in RECORD_TYPES.items()}
        self._decimals = {name: _decimal_fields(cls) for name, cls in RECORD_TYPES.items()}

    def encode(self, record) -> bytes:
        name = type(record).__name__
        schema = self.schemas[name]
        out = BytesIO()
        out.write(MAGIC)
        out.write(schema.fingerprint)
        fields = {f: getattr(record, f) for f in self._fields[name]}
        for field in self._decimals[name]:
            if fields[field].as_tuple().exponent < -WIRE_SCALE:  # fastavro refuses more digits than the scale
                fields[field] = to_wire(fields[field])
        fastavro.schemaless_writer(out, schema.parsed, fields)
        return out.getvalue()

    def decode(self, payload: bytes | None, expected: type):
        """Decode ``payload`` as a record of type ``expected``; :class:`Rejected` if it is not one."""
        if not payload or len(payload) < HEADER_SIZE or payload[:2] != MAGIC:
            raise Rejected("undecodable", "value is not Avro single-object encoded (no C3 01 header)")
        schema = self._by_fingerprint.get(payload[2:HEADER_SIZE])
        if schema is None:
            raise Rejected("unknown_schema", f"unknown writer schema fingerprint {payload[2:HEADER_SIZE].hex()}")
        name = expected.__name__
        if schema.short_name != name:
            raise Rejected("wrong_schema", f"expected a {name} record, got {schema.short_name}")
        body = BytesIO(payload)
        body.seek(HEADER_SIZE)
        try:
            fields = fastavro.schemaless_reader(body, schema.parsed, None)
        except Exception as exc:  # fastavro raises many types on truncated or corrupt bodies
            raise Rejected("undecodable", f"corrupt {name} body: {type(exc).__name__}: {exc}") from None
        if body.tell() != len(payload):
            raise Rejected("undecodable", f"{len(payload) - body.tell()} trailing bytes after the {name} body")
        fields["ts"] = (fields["ts"] - _EPOCH) // _MILLISECOND
        for field in self._decimals[name]:
            if fields[field].copy_abs() >= WIRE_LIMIT:  # copy_abs: abs() would round to 28 digits
                raise Rejected("decimal_out_of_range", f"{field} {fields[field]} exceeds decimal(38, 18)")
        if "order_ids" in fields:
            fields["order_ids"] = tuple(fields["order_ids"])
        return expected(**fields)
