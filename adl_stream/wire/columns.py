"""A consumed batch of one input schema decoded column by column (numpy), not record by record.

fastavro reads a record in about 3 us and the codec makes the record of its fields in about 2.5
more (the ``Decimal`` of each decimal, a setter call per field); at the ~40k fills a second a
book's processor applies, decoding was a quarter of its time. Here the Avro bodies of a batch are
laid end to end in one buffer and each field is read for every record at once: a varint is a few
numpy passes over the batch (one per byte of the longest), a string or bytes field a slice per
record. The records are made from the columns, with each distinct decimal made once per batch.

The contract (:meth:`ColumnReader.read`): a record read here is equal, field for field, to the one
:meth:`.codec.Codec.decode` reads from the same payload. Anything this does not read the plain way
(a varint of ten bytes, a negative length, a field past the record's end, bytes left after it, an
enum index or union branch out of range, a string that is not UTF-8, a decimal out of range) is
not decided here: its slot is ``None`` and the codec reads that payload alone, so a corrupt record
is refused with the same reason and detail as ever, and no record's decoding depends on the others
of its batch (hypothesis tests: ``tests/wire/test_columns.py``).
"""

from __future__ import annotations

from decimal import Decimal

import numpy as np

_MAX_VARINT = 9
"""Bytes of the longest varint read here (63 bits: no overflow); a longer one is the codec's."""
_PAD = _MAX_VARINT + 1
DECIMALS_KEPT = 1 << 16
"""Distinct decimals a reader keeps made (about 10 MB at most); past that it starts afresh."""
STRING, BYTES, LONG, ENUM, OPTIONAL_STRING = range(5)


def field_kind(avro_type) -> tuple[int, tuple[str, ...]] | None:
    """(kind, enum symbols) of a field type of a parsed plain schema, None for one not read here."""
    if avro_type == "string":
        return STRING, ()
    if avro_type == "bytes":
        return BYTES, ()
    if avro_type == "long":
        return LONG, ()
    if isinstance(avro_type, dict) and avro_type.get("type") == "enum":
        return ENUM, tuple(avro_type["symbols"])
    if avro_type == ["null", "string"]:
        return OPTIONAL_STRING, ()
    return None


class ColumnReader:
    """Reads bodies of one parsed plain schema (decimals as ``bytes``, ``ts`` a ``long``) into
    records made by ``make(columns, n)``, ``columns`` the values of each field in schema order with
    each decimal as ``decimal_of(unscaled int)`` (None: out of range, then the codec's)."""

    def __init__(self, parsed: dict, decimals: tuple[str, ...], make, decimal_of) -> None:
        plan = []
        for field in parsed["fields"]:
            kind = field_kind(field["type"])
            if kind is None:
                raise ValueError(f"{parsed['name']}.{field['name']}: type {field['type']!r} is not read by columns")
            plan.append((*kind, field["name"] in decimals))
        self._plan = tuple(plan)
        self._make = make
        self._decimal_of = decimal_of
        self._made: dict[bytes, Decimal] = {}

    @staticmethod
    def reads(parsed: dict) -> bool:
        """Whether every field of ``parsed`` is of a type read here."""
        return all(field_kind(field["type"]) is not None for field in parsed["fields"])

    def read(self, bodies: list[bytes], start: int) -> list:
        """The record of each body (its bytes from ``start``), or None where the codec must read it."""
        n = len(bodies)
        lengths = np.fromiter(map(len, bodies), np.int64, n)
        ends = np.cumsum(lengths)
        pos = ends - lengths + start
        buf = b"".join(bodies)
        data = np.frombuffer(buf + bytes(_PAD), np.uint8)
        bad = lengths < start
        columns = []
        for kind, symbols, is_decimal in self._plan:
            if kind == LONG:
                value, pos = _varints(data, pos, bad)
                columns.append(value.tolist())
            elif kind == ENUM:
                value, pos = _varints(data, pos, bad)
                bad |= (value < 0) | (value >= len(symbols))
                columns.append(np.asarray(symbols, dtype=object)[np.where(bad, 0, value)].tolist())
            elif kind == OPTIONAL_STRING:
                branch, pos = _varints(data, pos, bad)
                bad |= (branch < 0) | (branch > 1)
                present = branch == 1
                skip = ~present  # _varints marks it where a length's varint is too long
                length, after = _varints(data, pos, skip)
                bad |= skip & present
                length = np.where(present, length, 0)
                pos = np.where(present, after, pos)
                first, pos = _span(length, pos, ends, bad)
                strings = _strings(buf, first, pos, bad)
                columns.append([s if p else None for s, p in zip(strings, present.tolist())])
            else:
                length, pos = _varints(data, pos, bad)
                first, pos = _span(length, pos, ends, bad)
                if kind == STRING:
                    columns.append(_strings(buf, first, pos, bad))
                elif is_decimal:
                    columns.append(self._decimals(buf, first, pos, bad))
                else:
                    columns.append([buf[a:b] for a, b in zip(first.tolist(), pos.tolist())])
            bad |= pos > ends
            pos = np.minimum(pos, ends)  # a corrupt record reads no further than its end
        bad |= pos != ends  # bytes left after the record
        if not columns:
            return [None] * n
        records = self._make(columns, n)
        if bad.any():
            return [None if wrong else record for wrong, record in zip(bad.tolist(), records)]
        return records

    def _decimals(self, buf: bytes, first: np.ndarray, last: np.ndarray, bad: np.ndarray) -> list:
        """Each record's decimal; marks ``bad`` where it is out of range. A value is made once and
        kept (:data:`DECIMALS_KEPT` of them: a market's prices and quantities repeat), keyed by
        its bytes on the wire."""
        of_bytes, decimal_of, made = int.from_bytes, self._decimal_of, self._made
        out = []
        for a, b in zip(first.tolist(), last.tolist()):
            raw = buf[a:b]
            value = made.get(raw)
            if value is None:
                value = decimal_of(of_bytes(raw, "big", signed=True))
                if value is None:  # out of range: the codec refuses it
                    bad[len(out)] = True
                else:
                    if len(made) >= DECIMALS_KEPT:
                        made.clear()
                    made[raw] = value
            out.append(value)
        return out


def _varints(data: np.ndarray, pos: np.ndarray, bad: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The zigzag varint at each ``pos`` (int64) and the position after it; a varint longer than
    :data:`_MAX_VARINT` bytes marks ``bad`` (where ``bad`` already holds, what is read is ignored)."""
    byte = data[pos]
    raw = (byte & 0x7F).astype(np.uint64)
    going = byte >= 0x80
    size = np.ones_like(pos)
    shift = 7
    while going.any():
        if shift == 7 * _MAX_VARINT:
            bad |= going
            break
        byte = np.where(going, data[pos + size], 0)  # (0 adds nothing where the varint has ended)
        raw |= (byte & 0x7F).astype(np.uint64) << np.uint64(shift)
        size += going
        going &= byte >= 0x80
        shift += 7
    value = (raw >> np.uint64(1)).astype(np.int64) ^ -(raw & np.uint64(1)).astype(np.int64)
    return value, pos + size


def _span(length: np.ndarray, pos: np.ndarray, ends: np.ndarray, bad: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(first, end) of the ``length`` bytes at ``pos``; a negative length or one past the record's
    end marks ``bad`` (and reads nothing)."""
    bad |= (length < 0) | (length > ends - pos)
    length = np.where(bad, 0, length)
    return pos, pos + length


def _strings(buf: bytes, first: np.ndarray, last: np.ndarray, bad: np.ndarray) -> list:
    """The UTF-8 strings of ``buf[first:last]``; one that is not UTF-8 marks ``bad``."""
    spans = list(zip(first.tolist(), last.tolist()))
    try:
        return [buf[a:b].decode() for a, b in spans]
    except UnicodeDecodeError:
        out = []
        for row, (a, b) in enumerate(spans):
            try:
                out.append(buf[a:b].decode())
            except UnicodeDecodeError:
                bad[row] = True
                out.append("")
        return out
