"""Avro single-object encoding of the engine's records (SPEC §2, "Wire format"); the Confluent
framing of a schema registry is :mod:`.registry`, on the same bodies.

A value is ``C3 01``, the 8-byte CRC-64-AVRO fingerprint of the writer schema, then the Avro
binary body (fastavro). A fingerprint of another version of a schema (``writer_schemas``) is read
through Avro schema resolution (:mod:`.resolution`, checked when the codec is made). ``ts``
fields are ``timestamp-millis`` on the wire and integer epoch milliseconds in the engine (read
as the plain ``long`` they are, :attr:`.schemas.Schema.decoding`: no ``datetime`` made). Decimals are written at the schemas' scale (18), exactly: a value the
engine computed with more digits (a product of two wire decimals has 36) is rescaled, and one that
would round raises ``decimal.Inexact`` (roundings are the engine's, never the codec's). Decoding
refuses, as :class:`~adl_stream.engine.errors.Rejected`, anything that is not a well-formed record
of the expected schema with in-range decimals. Records of adl-stream's own schemas are read the
direct way (:func:`_direct_reader`): their decimals come from fastavro as the plain bytes they are
and are made ``Decimal`` here, equal to what fastavro's logical type makes, at a third of its cost;
every record is written the same way round (:func:`_direct_writer`: the decimals' bytes made here,
the bytes fastavro's logical type writes), and one with no union or nested record by the codec
alone (:func:`_plain_writer`: the outputs, ADL indicators, orders and decisions).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import json
import struct
from collections.abc import Callable
from decimal import Decimal
from io import BytesIO
from operator import attrgetter, call
from types import MemberDescriptorType

import fastavro

from ..engine import records
from ..engine.errors import Rejected
from ..engine.indicators import AdlIndicator
from ..engine.numbers import WIRE_LIMIT, WIRE_PRECISION, WIRE_SCALE, to_wire
from .columns import ColumnReader
from .resolution import resolution_problems
from .schemas import Schema, load_schemas, without_timestamps

_schemaless_reader = fastavro.schemaless_reader
_schemaless_writer = fastavro.schemaless_writer
MAGIC = b"\xc3\x01"
HEADER_SIZE = len(MAGIC) + 8
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_MILLISECOND = dt.timedelta(milliseconds=1)
_LIMIT_UNITS = 10 ** WIRE_PRECISION
"""A wire decimal's unscaled integer (units of 1e-18) is in range below this magnitude (|value| < 1e20)."""
COLUMNS_FROM = 32
"""Payloads of adl-stream's own schema of a record type in one batch from which :meth:`Codec.decode_all`
reads them column by column (:mod:`.columns`); fewer are read one by one (numpy's calls cost
about as much as a few records)."""
_READING = decimal.Context(prec=WIRE_PRECISION)
"""fastavro's context for a decimal it reads: an in-range value has at most 38 digits, never rounded."""
_SHOWING = decimal.Context(prec=decimal.MAX_PREC)
"""Exact whatever the digits: an out-of-range value in a rejection's detail, a decimal scaled for the wire."""

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


class UnresolvableSchema(ValueError):
    """A writer schema whose records cannot be read as adl-stream's record of that name; the
    message names where the schema came from and each field at fault."""

    def __init__(self, origin: str, problems: list[str]) -> None:
        super().__init__(f"{origin}: cannot be read as adl-stream's schema: {'; '.join(problems)}")
        self.origin = origin
        self.problems = problems


class Codec:
    """Encodes and decodes the records of ``schemas/`` (one instance per processor; thread-safe).

    ``writers`` are further writer schemas (e.g. of ``writer_schemas``), each ``(origin, Schema)``:
    records written with one are read through Avro schema resolution into adl-stream's record of
    the same name. Each is checked at construction (:class:`UnresolvableSchema` if it cannot be read).
    """

    def __init__(self, schemas: dict[str, Schema] | None = None, writers=()) -> None:
        self.schemas = schemas or load_schemas()
        missing = set(RECORD_TYPES) - set(self.schemas)
        if missing:
            raise ValueError(f"schemas missing for records: {sorted(missing)}")
        # fingerprint -> (writer schema, reader schema to resolve it against, or None: the same)
        self._by_fingerprint: dict[bytes, tuple[Schema, dict | None]] = {
            s.fingerprint: (s, None) for s in self.schemas.values()}
        for origin, writer in writers:
            self._by_fingerprint.setdefault(writer.fingerprint, (writer, self.reader_for(writer, str(origin))))
        self._fields = {name: tuple(f.name for f in dataclasses.fields(cls)) for name, cls in RECORD_TYPES.items()}
        self._decimals = {name: _decimal_fields(cls) for name, cls in RECORD_TYPES.items()}
        # fingerprint -> (record type, schema to read with, its record builder): adl-stream's own
        # schemas of the input records, read without a look-up of anything else per record and
        # with their decimals as the plain bytes they are on the wire (:func:`_direct_reader`)
        self._direct: dict[bytes, tuple[type, dict, object]] = {}
        for name, s in self.schemas.items():
            if name in RECORD_TYPES and "order_ids" not in self._fields[name]:
                direct = _direct_reader(s, RECORD_TYPES[name], self._fields[name], self._decimals[name])
                if direct is not None:
                    self._direct[s.fingerprint] = (RECORD_TYPES[name], *direct)
        # record type -> (the fingerprint of adl-stream's own schema of it, its column reader)
        self._columns: dict[type, tuple[bytes, ColumnReader]] = {
            cls: (fingerprint, ColumnReader(parsed, self._decimals[cls.__name__],
                                                    records.by_column(cls, self._fields[cls.__name__]), decimal_of))
            for fingerprint, (cls, parsed, _) in self._direct.items() if ColumnReader.reads(parsed)}
        # record type name -> (its schema, the function that writes a record's body; its ``all``
        # writes a batch's bodies): every record type, written with its decimals as the bytes
        # the codec makes (:func:`_direct_writer`), or by the codec alone when no field is a union
        # or a nested record (:func:`_plain_writer`)
        self._writers: dict[str, tuple[Schema, Callable[[object], bytes]]] = {
            name: (self.schemas[name], _plain_writer(self.schemas[name], self._fields[name], self._decimals[name])
                   or _direct_writer(self.schemas[name], self._fields[name], self._decimals[name]))
            for name in RECORD_TYPES}

    def reader_for(self, writer: Schema, origin: str) -> dict | None:
        """The reader schema that records of ``writer`` are resolved against (None when ``writer``
        is adl-stream's own); :class:`UnresolvableSchema` when they cannot be."""
        reader = self.schemas.get(writer.short_name)
        if reader is None:
            raise UnresolvableSchema(origin, [f"{writer.name}: adl-stream reads no record of that name "
                                              f"(it reads {', '.join(sorted(self.schemas))})"])
        if reader.fingerprint == writer.fingerprint:
            return None
        problems = resolution_problems(writer.parsed, reader.parsed)
        if problems:
            raise UnresolvableSchema(origin, problems)
        return reader.decoding

    def body(self, record) -> tuple[Schema, bytes]:
        """The schema of ``record`` and its Avro binary body (decimals at the schema's scale)."""
        schema, write = self._writers[type(record).__name__]
        return schema, write(record)

    def header(self, schema: Schema) -> bytes:
        """What a value of ``schema`` starts with: ``C3 01`` and its fingerprint."""
        return MAGIC + schema.fingerprint

    def encode_all(self, records: list, kind: type) -> list[bytes | None]:
        """:meth:`encode` of each record of type ``kind`` in ``records``, None for any other (a
        pass's tombstones among its lights), the writer and header looked up once."""
        schema, write = self._writers[kind.__name__]
        header = self.header(schema)
        rows = [row for row, record in enumerate(records) if type(record) is kind]
        bodies = write.all(records if len(rows) == len(records) else [records[row] for row in rows])
        out: list[bytes | None] = [None] * len(records)
        for row, body in zip(rows, bodies):
            out[row] = header + body
        return out

    def encode(self, record) -> bytes:
        schema, body = self.body(record)
        return self.header(schema) + body

    def decode(self, payload: bytes | None, expected: type):
        """Decode ``payload`` as a record of type ``expected``; :class:`Rejected` if it is not one."""
        if not payload or len(payload) < HEADER_SIZE or payload[:2] != MAGIC:
            hint = " (it starts like Confluent framing: set schema_registry_url)" if payload and payload[:1] == b"\0" else ""
            raise Rejected("undecodable", f"value is not Avro single-object encoded (no C3 01 header){hint}")
        direct = self._direct.get(payload[2:HEADER_SIZE])
        if direct is not None and direct[0] is expected:  # read() and record() without their look-ups
            return direct[2](_body(payload, HEADER_SIZE, direct[1], None, expected.__name__))
        known = self._by_fingerprint.get(payload[2:HEADER_SIZE])
        if known is None:
            raise Rejected("unknown_schema", f"unknown writer schema fingerprint {payload[2:HEADER_SIZE].hex()} "
                           "(add its .avsc to a directory of writer_schemas)")
        return self.read(payload, HEADER_SIZE, known[0], known[1], expected)

    def decode_all(self, payloads: list, expected: type) -> list:
        """:meth:`decode` of each payload, in order, with a :class:`Rejected` in place of a record
        it refuses. When :data:`COLUMNS_FROM` or more are of adl-stream's own schema of
        ``expected``, those are read column by column (:mod:`.columns`; equal records, a third of
        the cost), and any the columns do not read the plain way are read here one by one."""
        out = [None] * len(payloads)
        for header, start, reader in self._column_readers(expected) if len(payloads) >= COLUMNS_FROM else ():
            rows = [row for row, payload in enumerate(payloads) if payload and payload.startswith(header)]
            if len(rows) >= COLUMNS_FROM:
                for row, record in zip(rows, reader.read([payloads[row] for row in rows], start)):
                    out[row] = record
        decode = self.decode
        for row, record in enumerate(out):
            if record is None:
                try:
                    out[row] = decode(payloads[row], expected)
                except Rejected as rejected:
                    out[row] = rejected
        return out

    def _column_readers(self, expected: type) -> list[tuple[bytes, int, ColumnReader]]:
        """(the header, where the body starts, the column reader) of each framing of adl-stream's own
        schema of ``expected``, for :meth:`decode_all`."""
        columns = self._columns.get(expected)
        return [] if columns is None else [(MAGIC + columns[0], HEADER_SIZE, columns[1])]

    def read(self, payload: bytes, start: int, writer: Schema, reader: dict | None, expected: type):
        """The body of ``payload`` from ``start``, written with ``writer`` and resolved against
        ``reader`` (None: ``writer`` is adl-stream's own), as a record of type ``expected``."""
        name = expected.__name__
        if writer.short_name != name:
            raise Rejected("wrong_schema", f"expected a {name} record, got {writer.short_name}")
        if reader is None:  # adl-stream's own schema (e.g. under a registry's framing): the direct way
            direct = self._direct.get(writer.fingerprint)
            if direct is not None and direct[0] is expected:
                return direct[2](_body(payload, start, direct[1], None, name))
        return self.record(_body(payload, start, writer.decoding, reader, name), expected)

    def record(self, fields: dict, expected: type):
        """The fields fastavro decoded (``ts`` in milliseconds, or a datetime where a schema's
        logical type made one, decimals) as a record of type ``expected``."""
        name = expected.__name__
        if not isinstance(fields["ts"], int):
            fields["ts"] = (fields["ts"] - _EPOCH) // _MILLISECOND
        _check_range(fields, self._decimals[name])
        if "order_ids" in fields:
            fields["order_ids"] = tuple(fields["order_ids"])
        return expected(**fields)


def _decimals_as_bytes(schema: Schema, decimals: tuple[str, ...]) -> dict | None:
    """:attr:`.schemas.Schema.decoding` of ``schema`` (``ts`` the plain ``long`` it is) with its
    ``decimals`` as the plain ``bytes`` they are on the wire, parsed; None when one of them is not
    decimal(38, 18) or another field has a logical type."""
    plain = without_timestamps(json.loads(schema.text))  # (a copy: its fields are ours to change)
    for field in plain.get("fields", []):
        if field["name"] in decimals:
            if field["type"] != {"type": "bytes", "logicalType": "decimal", "precision": WIRE_PRECISION,
                                 "scale": WIRE_SCALE}:
                return None
            field["type"] = "bytes"
        elif "logicalType" in json.dumps(field["type"]):
            return None
    return fastavro.parse_schema(plain, _force=True)


def _direct_reader(schema: Schema, cls: type, names: tuple[str, ...], decimals: tuple[str, ...]):
    """(the schema to read ``cls`` records of ``schema`` with, the function that makes the record of
    the fields it reads), or None when ``schema`` is not one this can read directly.

    The schema is :attr:`.schemas.Schema.decoding` with every decimal(38, 18) field read as the
    plain ``bytes`` it is on the wire: fastavro's decimal logical type costs about 0.7 us a value
    (its generic dispatch and context set-up), the conversion here 0.2. The value is the one
    fastavro makes (``create_decimal(unscaled).scaleb(-scale)`` at precision 38: the same digits
    and exponent), and the range check is on the unscaled integer. The record is made as its
    dataclass ``__init__`` makes it (each slot set through the object's own setter, as
    ``object.__setattr__`` does for a frozen dataclass), without the keyword arguments."""
    parsed = _decimals_as_bytes(schema, decimals)
    if (parsed is None or [f["name"] for f in parsed.get("fields", [])] != list(names)
            or hasattr(cls, "__post_init__")
            or not all(isinstance(cls.__dict__.get(name), MemberDescriptorType) for name in names)):
        return None
    new, of_bytes = object.__new__, int.from_bytes
    plan = tuple((name, cls.__dict__[name].__set__, name in decimals) for name in names)

    def record(fields: dict):
        out = new(cls)
        for name, set_field, is_decimal in plan:
            value = fields[name]
            if is_decimal:
                units = of_bytes(value, "big", signed=True)
                value = decimal_of(units)
                if value is None:
                    raise Rejected("decimal_out_of_range", f"{name} {Decimal(units).scaleb(-WIRE_SCALE, _SHOWING)} "
                                   "exceeds decimal(38, 18)")
            set_field(out, value)
        return out

    return parsed, record


def decimal_of(units: int) -> Decimal | None:
    """The decimal(38, 18) of unscaled ``units`` as fastavro's logical type makes it
    (``create_decimal(unscaled).scaleb(-scale)`` at precision 38: the same digits and exponent);
    None when out of range."""
    if -_LIMIT_UNITS < units < _LIMIT_UNITS:
        return Decimal(units).scaleb(-WIRE_SCALE, _READING)
    return None


def _direct_writer(schema: Schema, names: tuple[str, ...], decimals: tuple[str, ...]):
    """The function that writes the body of a record of ``schema``: fastavro with
    :attr:`.schemas.Schema.decoding` (``ts`` the plain ``long`` it is) and every decimal field
    written as the plain ``bytes`` of :func:`decimal_bytes`, the bytes fastavro's decimal logical
    type writes for the same value, at a fraction of its cost (its generic dispatch took about 3 us
    a value: a decision of seven decimals cost 30 us to encode)."""
    parsed = _decimals_as_bytes(schema, decimals)
    if parsed is None:
        raise ValueError(f"{schema.name}: every decimal must be decimal(38, 18) bytes, and no other logical type")
    values = attrgetter(*names)

    def write(record) -> bytes:
        fields = dict(zip(names, values(record)))
        for name in decimals:
            fields[name] = decimal_bytes(fields[name])
        out = BytesIO()
        _schemaless_writer(out, parsed, fields)
        return out.getvalue()

    write.all = lambda records: list(map(write, records))  # (as the plain writer's: a batch)
    return write


_BYTE = [bytes((i,)) for i in range(128)]
_DOUBLE = struct.Struct("<d").pack
_INT_RANGES = {"int": (-(1 << 31), 1 << 31), "long": (-(1 << 63), 1 << 63)}


def _varint(name: str, type_: str):
    low, high = _INT_RANGES[type_]

    def write(value: int) -> bytes:
        """Avro's zig-zag varint of ``value``."""
        if not low <= value < high:
            raise ValueError(f"{name}: {value} is out of range for an Avro {type_}")
        n = (value << 1) ^ (value >> 63)
        if n < 0x80:
            return _BYTE[n]
        out = bytearray()
        while n >= 0x80:
            out.append((n & 0x7F) | 0x80)
            n >>= 7
        out.append(n)
        return bytes(out)

    return write


_LENGTH = _varint("a string's length", "long")


def _string(value: str) -> bytes:
    """An Avro string: the varint length of its UTF-8 bytes, then the bytes."""
    utf8 = value.encode()
    return _LENGTH(len(utf8)) + utf8


def _repeated(write):
    """``write``, its last value's bytes given again while the value repeats (a pass's symbol,
    side and time over its indicators). Equal and of the same type: never a float (-0.0 == 0.0).
    The value and its bytes are swapped in as one pair, so a codec shared by threads stays right."""
    last: list[tuple] = [(None, b"")]

    def again(value) -> bytes:
        held, out = last[0]
        if value == held and type(value) is type(held):
            return out
        out = write(value)
        last[0] = (value, out)
        return out

    return again


KEPT_BYTES = 1 << 18
"""Distinct values of a field whose bytes :func:`_plain_writer`'s batches keep (then it starts afresh)."""


def _bytes(value: bytes) -> bytes:
    """Avro bytes: the varint length, then the bytes."""
    return _LENGTH(len(value)) + value


def _decimal(value: Decimal) -> bytes:
    """A decimal(38, 18) as the Avro bytes of :func:`decimal_bytes` (its refusals included)."""
    return _bytes(decimal_bytes(value))


def _strings(values) -> bytes:
    """An Avro array of strings: one block of them (its count, the items), then the empty block."""
    if not values:
        return b"\x00"
    return _LENGTH(len(values)) + b"".join(map(_string, values)) + b"\x00"


def _plain_writer(schema: Schema, names: tuple[str, ...], decimals: tuple[str, ...] = ()):
    """The function that writes the body of a record of ``schema`` when every field is a string,
    an enum, an int, a long (``timestamp-millis`` included), a double, a boolean, bytes, a
    decimal(38, 18) (one of ``decimals``) or an array of strings, in ``names`` order; else None
    (a union, a nested record). Avro's binary encoding is made here field by field, the bytes
    fastavro writes (a hypothesis test compares them), without its dict and stream per record: an
    ADL indicator, the most frequent output of a large book, in about 2 us instead of 6.2; a
    decision, its seven decimals and its order ids, in 14 us instead of 25."""
    parsed = _decimals_as_bytes(schema, decimals)
    fields = parsed.get("fields", []) if parsed is not None else []
    if not fields or [field["name"] for field in fields] != list(names):
        return None
    writers, kept = [], []  # a field's writer; whether its bytes may be kept by value (hashable, not a float)
    for field in fields:
        name, type_ = field["name"], field["type"]
        if type_ in ("int", "long"):
            writer, keep = _repeated(_varint(name, type_)), True
        elif type_ == "string":
            writer, keep = _repeated(_string), True
        elif type_ == "double":
            writer, keep = _DOUBLE, False
        elif type_ == "boolean":
            writer, keep = (lambda value: b"\x01" if value else b"\x00"), True
        elif type_ == "bytes":
            writer, keep = _decimal if name in decimals else _bytes, False
        elif isinstance(type_, dict) and type_.get("type") == "array" and type_.get("items") == "string":
            writer, keep = _strings, False
        elif isinstance(type_, dict) and type_.get("type") == "enum":
            index = {symbol: _varint(name, "int")(i) for i, symbol in enumerate(type_["symbols"])}

            def writer(value, index=index, name=name, symbols=type_["symbols"]) -> bytes:
                try:
                    return index[value]
                except KeyError:
                    raise ValueError(f"{name}: {value!r} is not one of {symbols}") from None

            keep = True
        else:
            return None
        writers.append(writer)
        kept.append({} if keep else None)
    writers, values = tuple(writers), attrgetter(*names)
    columns = tuple(zip(map(attrgetter, names), writers, range(len(kept))))

    def write(record) -> bytes:
        return b"".join(map(call, writers, values(record)))

    def write_all(records: list) -> list[bytes]:
        """The bodies of ``records`` column by column: a kept field's bytes made once per distinct
        value (and kept for the next batches: a pass's account ids, ranks and time recur), the
        others by C-level maps."""
        out = []
        for get, writer, n in columns:
            column = list(map(get, records))
            held = kept[n]
            if held is None:
                out.append(map(writer, column))
                continue
            distinct = set(column)
            missing = distinct.difference(held)
            if missing:
                if len(held) + len(missing) > KEPT_BYTES:
                    # A new one, of this column's values (another thread's batch still reads the one it holds).
                    held = kept[n] = {}
                    missing = distinct
                held.update(zip(missing, map(writer, missing)))
            out.append(map(held.__getitem__, column))
        return list(map(b"".join, zip(*out)))

    write.all = write_all
    return write


def decimal_bytes(value: Decimal) -> bytes:
    """``value`` as a decimal(38, 18) on the wire: the big-endian two's complement of its unscaled
    integer, in the bytes fastavro's logical type writes (``(|units|.bit_length() + 8) // 8`` of
    them). A value with more places than 18 is written if they are zeros, else raises
    ``decimal.Inexact`` (roundings are the engine's, never the codec's); one of more than 38 digits
    raises ``ValueError``, as fastavro does (a test compares both ways' bytes and refusals)."""
    scaled = value.scaleb(WIRE_SCALE, _SHOWING)  # exact: the context rounds nothing
    units = int(scaled)
    if units != scaled:  # places beyond the scale that are not zeros
        to_wire(value)  # raises decimal.Inexact
    if not -_LIMIT_UNITS < units < _LIMIT_UNITS:  # (out of range: fastavro counts the digits as written)
        written = to_wire(value) if value.as_tuple().exponent < -WIRE_SCALE else value
        if len(written.as_tuple().digits) > WIRE_PRECISION:
            raise ValueError("The decimal precision is bigger than allowed by schema")
    return units.to_bytes((abs(units).bit_length() + 8) // 8, "big", signed=True)


def _body(payload: bytes, start: int, decoding: dict, reader: dict | None, name: str) -> dict:
    """The fields of the ``name`` record body of ``payload`` from ``start`` (the whole rest)."""
    body = BytesIO(payload)
    body.seek(start)
    try:
        fields = _schemaless_reader(body, decoding, reader)
    except Exception as exc:  # fastavro raises many types on truncated or corrupt bodies
        raise Rejected("undecodable", f"corrupt {name} body: {type(exc).__name__}: {exc}") from None
    if body.tell() != len(payload):
        raise Rejected("undecodable", f"{len(payload) - body.tell()} trailing bytes after the {name} body")
    return fields


def _check_range(fields: dict, decimals) -> None:
    for field in decimals:
        if fields[field].copy_abs() >= WIRE_LIMIT:  # copy_abs: abs() would round to 28 digits
            raise Rejected("decimal_out_of_range", f"{field} {fields[field]} exceeds decimal(38, 18)")
