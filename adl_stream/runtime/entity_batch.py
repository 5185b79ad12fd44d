"""The changelog's binary record formats: state entities of one task, column by column, in Avro.

A record of format 3 (header ``batch`` = ``3``, what :func:`encode` writes) holds, per settle asset
of the task, an :class:`~adl_stream.engine.state.Entities`: the entities of a transaction (a *delta*
record), or a chunk of a snapshot, encoded with ``schemas/changelog/EntityBatch3.avsc`` (fastavro,
schemaless: the schema is this module's, the header names its version). Columns, not one record per
entity, and each large column one packed value that decodes without a Python object per item on
the way: the account ids of a kind as one string joined by a separator none of them holds (one
``str.split``), symbol codes and times as fixed-width little-endian integers (numpy), and the
book's scaled integers (quantity, cost, balances: 70 to 140 bits for real amounts, so no fixed
width of int64 limbs holds them without Python recombining limbs) as one list in the layout of
:mod:`marshal`'s version 2 (written and read by C loops: about 30 ns an integer either way, against
100 ns for ``int.to_bytes`` / ``int.from_bytes`` each, README "Restore in bulk"). Decoding gives
the positions and wallets as runs of columns (:class:`~adl_stream.engine.state.PositionRun`,
:class:`~adl_stream.engine.state.WalletRun`) that a restore loads as they are.

Format 2 (header ``batch`` = ``2``, ``schemas/changelog/EntityBatch.avsc``, written before
format 3): the same columns as Avro arrays, an item each, the scaled integers as big-endian two's
complement bytes. It is still read (:func:`decode` takes both), so a changelog written by the
version before restores.

A batch is split into records of at most :data:`RECORD_BYTES` (well under Kafka's 1 MB default
``message.max.bytes``) by :func:`encode`, which returns the values of the records it takes.
"""

from __future__ import annotations

import itertools
import json
import marshal
from decimal import Decimal
from io import BytesIO
from pathlib import Path

import fastavro
import numpy as np

from ..engine.state import Entities, PositionRun, WalletRun

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schemas" / "changelog" / "EntityBatch.avsc"
SCHEMA = fastavro.parse_schema(json.loads(SCHEMA_PATH.read_text()))
SCHEMA_3_PATH = SCHEMA_PATH.with_name("EntityBatch3.avsc")
SCHEMA_3 = fastavro.parse_schema(json.loads(SCHEMA_3_PATH.read_text()))
FORMAT_2 = b"2"
FORMAT = b"3"
"""The value of the ``batch`` header of a record in the format :func:`encode` writes."""
FORMATS = (FORMAT_2, FORMAT)
"""The formats :func:`decode` reads."""
_MARSHAL_VERSION = 2  # no back-references: the layout of the schema's doc, item after item
RECORD_BYTES = 256 * 1024
"""A record's entities are split once their estimated size reaches this."""
_ENTITY_BYTES = 48
"""Estimated bytes of one entity besides its strings (for splitting, see :func:`encode`)."""
_compact = json.JSONEncoder(separators=(",", ":")).encode
"""``json.dumps(value, separators=(",", ":"))`` without the encoder that call makes each time."""


def _bytes(units: int) -> bytes:
    return units.to_bytes((units.bit_length() + 8) // 8, "big", signed=True)


def _ints(column: list[bytes]) -> list[int]:
    of = int.from_bytes
    return [of(raw, "big", signed=True) for raw in column]


def _amounts(after: list[dict]) -> tuple[tuple[int, int], ...]:
    return tuple(zip([a["ts"] for a in after], _ints([a["amount"] for a in after])))


def _group(asset: str, entities: Entities) -> dict:
    names: dict[str, int] = {}
    name = names.setdefault
    positions, wallets, lights = entities.positions, entities.wallets, entities.lights
    # _bytes, inline (two to three integers per entity, in every delta and snapshot record)
    return {
        "asset": asset,
        "positions": {"symbol": [name(symbol, len(names)) for symbol, _ in positions],
                      "account": [account for _, account in positions],
                      "q": [q.to_bytes((q.bit_length() + 8) // 8, "big", signed=True) for q, _ in positions.values()],
                      "c": [c.to_bytes((c.bit_length() + 8) // 8, "big", signed=True) for _, c in positions.values()]},
        "wallets": {"account": [account for account, _ in wallets],
                    "asset": [name(of, len(names)) for _, of in wallets],
                    "balance": [units.to_bytes((units.bit_length() + 8) // 8, "big", signed=True)
                                for units, _, _ in wallets.values()],
                    "as_of": [as_of for _, as_of, _ in wallets.values()],
                    "after": [[{"ts": ts, "amount": _bytes(amount)} for ts, amount in after]
                              for _, _, after in wallets.values()]},
        **_decimal_strings(entities),
        "seen": [{"segment": segment, "part": part, "ids": list(ids)} for (segment, part), ids in entities.seen.items()],
        "lights": {"symbol": [name(symbol, len(names)) for symbol, _ in lights],
                   "account": [account for _, account in lights],
                   "light": list(lights.values())},
        "stream_time": entities.stream_time,
        "gone": list(map(_compact, entities.gone)),
        "names": list(names),
    }


def _decimal_strings(entities: Entities) -> dict:
    """Funds, fund histories, marks and reservations as a group holds them (formats 2 and 3 alike:
    a few entities each, their decimals as exact strings)."""
    return {
        "funds": [{"fund": fund, "balance": str(balance)} for fund, balance in entities.funds.items()],
        "histories": [{"fund": fund, "entries": [{"time": time, "balance": str(balance), "until": until}
                                                 for time, balance, until in history]}
                      for fund, history in entities.histories.items()],
        "marks": [{"symbol": symbol, "price": str(price), "ts": ts} for symbol, (price, ts) in entities.marks.items()],
        "reservations": [{"order_id": order_id, "account": account, "symbol": symbol, "quantity": str(quantity),
                          "expires_at": expires_at}
                         for (order_id, account), (symbol, quantity, expires_at) in entities.reservations.items()],
    }


def _exact_decimals(group: dict, into: Entities) -> None:
    """Funds, fund histories, marks and reservations of a decoded group (the same in formats 2 and
    3: a few entities each, their decimals as exact strings)."""
    for fund in group["funds"]:
        into.funds[fund["fund"]] = Decimal(fund["balance"])
    for history in group["histories"]:
        into.histories[history["fund"]] = tuple((e["time"], Decimal(e["balance"]), e["until"])
                                                for e in history["entries"])
    for mark in group["marks"]:
        into.marks[mark["symbol"]] = (Decimal(mark["price"]), mark["ts"])
    for r in group["reservations"]:
        into.reservations[(r["order_id"], r["account"])] = (r["symbol"], Decimal(r["quantity"]), r["expires_at"])


def _entities(group: dict, into: Entities) -> None:
    """Fold one decoded group into ``into`` (its tombstones first)."""
    for raw in group["gone"]:
        into.drop(tuple(json.loads(raw)))
    names = group["names"]
    p = group["positions"]
    symbols = [names[i] for i in p["symbol"]]
    into.positions.update(zip(zip(symbols, p["account"]), zip(_ints(p["q"]), _ints(p["c"]))))
    w = group["wallets"]
    into.wallets.update(zip(zip(w["account"], [names[i] for i in w["asset"]]),
                            zip(_ints(w["balance"]), w["as_of"],
                                [_amounts(after) if after else () for after in w["after"]])))
    _exact_decimals(group, into)
    for part in group["seen"]:
        into.seen[(part["segment"], part["part"])] = tuple(part["ids"])
    lights = group["lights"]
    into.lights.update(zip(zip([names[i] for i in lights["symbol"]], lights["account"]), lights["light"]))
    if group["stream_time"] is not None:
        into.stream_time = group["stream_time"]


def _pack(values: list[int]) -> bytes:
    """Ints: the integers as one marshal list (version 2, see the schema's doc)."""
    return marshal.dumps(values, _MARSHAL_VERSION)


def _unpack(raw: bytes, n: int) -> list[int]:
    values = marshal.loads(raw)
    if type(values) is not list or len(values) != n:
        raise ValueError(f"a changelog column of format 3 holds {len(values) if type(values) is list else values!r} "
                         f"integers where its record says {n}")
    return values


def _codes(values: list[int]) -> bytes:
    """Codes: int32, little-endian."""
    return np.array(values, "<i4").tobytes()


def _longs(values: list[int]) -> bytes:
    """Longs: int64, little-endian."""
    return np.array(values, "<i8").tobytes()


def _numbers(raw: bytes, dtype: str, n: int) -> np.ndarray:
    column = np.frombuffer(raw, dtype)
    if len(column) != n:
        raise ValueError(f"a changelog column of format 3 holds {len(column)} numbers where its record says {n}")
    return column


def _join(strings: list[str]) -> dict:
    """Strings: joined by NUL, or, if one of them holds a NUL, by the first character none holds."""
    n = len(strings)
    text = "\0".join(strings)
    if n and text.count("\0") != n - 1:
        held = set(text)
        sep = next(chr(c) for c in itertools.count(1) if chr(c) not in held and not 0xD800 <= c <= 0xDFFF)
        return {"n": n, "sep": sep, "text": sep.join(strings)}
    return {"n": n, "sep": "\0", "text": text}


def _split(strings: dict) -> list[str]:
    n = strings["n"]
    if not n:
        return []
    out = strings["text"].split(strings["sep"])
    if len(out) != n:
        raise ValueError(f"a changelog column of format 3 holds {len(out)} strings where its record says {n}")
    return out


def _named(names: list[str], raw: bytes, n: int) -> list[str]:
    """The names that the codes ``raw`` refer to."""
    codes = _numbers(raw, "<i4", n)
    if not n:
        return []
    first = int(codes[0])
    if (codes == first).all():
        return [names[first]] * n
    return np.array(names, dtype=object)[codes].tolist()


def _group3(asset: str, entities: Entities) -> dict:
    names: dict[str, int] = {}
    name = names.setdefault
    positions, wallets, lights = entities.positions, entities.wallets, entities.lights
    values, held = list(positions.values()), list(wallets.values())
    after_of, after_n, after_ts, after_amount = [], [], [], []
    for row, (_, _, after) in enumerate(held):
        if after:
            after_of.append(row)
            after_n.append(len(after))
            after_ts += [ts for ts, _ in after]
            after_amount += [amount for _, amount in after]
    return {
        "asset": asset,
        "positions": {"symbol": _codes([name(symbol, len(names)) for symbol, _ in positions]),
                      "account": _join([account for _, account in positions]),
                      "q": _pack([q for q, _ in values]),
                      "c": _pack([c for _, c in values])},
        "wallets": {"account": _join([account for account, _ in wallets]),
                    "asset": _codes([name(of, len(names)) for _, of in wallets]),
                    "balance": _pack([units for units, _, _ in held]),
                    "as_of": _longs([as_of for _, as_of, _ in held]),
                    "after_of": _codes(after_of), "after_n": _codes(after_n), "after_ts": _longs(after_ts),
                    "after_amount": _pack(after_amount)},
        **_decimal_strings(entities),
        "seen": [{"segment": segment, "part": part, "ids": _join(list(ids))} for (segment, part), ids in entities.seen.items()],
        "lights": {"symbol": _codes([name(symbol, len(names)) for symbol, _ in lights]),
                   "account": _join([account for _, account in lights]),
                   "light": _longs(list(lights.values()))},
        "stream_time": entities.stream_time,
        "gone": list(map(_compact, entities.gone)),
        "names": list(names),
    }


def _entities3(group: dict, into: Entities) -> None:
    """Fold one decoded group of format 3 into ``into`` (its tombstones first; positions and
    wallets as runs of columns)."""
    for raw in group["gone"]:
        into.drop(tuple(json.loads(raw)))
    names = group["names"]
    p = group["positions"]
    accounts = _split(p["account"])
    n = len(accounts)
    if n:
        into.add_positions(PositionRun(_named(names, p["symbol"], n), accounts, _unpack(p["q"], n), _unpack(p["c"], n)))
    w = group["wallets"]
    accounts = _split(w["account"])
    n = len(accounts)
    if n:
        after = {}
        rows = _numbers(w["after_of"], "<i4", len(w["after_of"]) // 4).tolist()
        if rows:
            counts = _numbers(w["after_n"], "<i4", len(rows)).tolist()
            total = sum(counts)
            ts, amounts = _numbers(w["after_ts"], "<i8", total).tolist(), _unpack(w["after_amount"], total)
            start = 0
            for row, count in zip(rows, counts):
                after[row] = tuple(zip(ts[start:start + count], amounts[start:start + count]))
                start += count
        into.add_wallets(WalletRun(accounts, _named(names, w["asset"], n), _unpack(w["balance"], n),
                                   _numbers(w["as_of"], "<i8", n).tolist(), after))
    _exact_decimals(group, into)
    for part in group["seen"]:
        into.seen[(part["segment"], part["part"])] = tuple(_split(part["ids"]))
    lights = group["lights"]
    accounts = _split(lights["account"])
    n = len(accounts)
    if n:
        into.lights.update(zip(zip(_named(names, lights["symbol"], n), accounts),
                               _numbers(lights["light"], "<i8", n).tolist()))
    if group["stream_time"] is not None:
        into.stream_time = group["stream_time"]


def _write(groups: list[dict]) -> bytes:
    out = BytesIO()
    fastavro.schemaless_writer(out, SCHEMA_3, {"groups": groups})
    return out.getvalue()


def _write_2(groups: list[dict]) -> bytes:
    """A record of format 2 (what the version before wrote: for tests that read one)."""
    out = BytesIO()
    fastavro.schemaless_writer(out, SCHEMA, {"groups": groups})
    return out.getvalue()


def _estimate(entities: Entities) -> int:
    """A generous estimate of the encoded size of ``entities`` (splitting needs no exact figure):
    the account ids of a kind are taken to be as long as the longest of its first 64."""
    size = _ENTITY_BYTES * (len(entities) + len(entities.gone))
    for keyed in (entities.positions, entities.wallets, entities.lights):
        if keyed:
            size += len(keyed) * max(len(key[1] if keyed is not entities.wallets else key[0])
                                     for key in itertools.islice(keyed, 64))
    size += sum(24 * len(after) for _, _, after in entities.wallets.values() if after)
    size += sum(sum(map(len, ids)) + 2 * len(ids) for ids in entities.seen.values())
    return size


def _split_entities(entities: Entities, parts: int) -> list[Entities]:
    """``entities`` in ``parts`` pieces, each kind sliced evenly (tombstones and stream time with
    the first piece)."""
    if parts == 1:
        return [entities]
    pieces = [Entities() for _ in range(parts)]
    for name in ("positions", "wallets", "funds", "histories", "marks", "reservations", "seen", "ids", "lights"):
        items = list(getattr(entities, name).items())
        step = -(-len(items) // parts)
        for n, piece in enumerate(pieces):
            getattr(piece, name).update(items[n * step:(n + 1) * step])
    pieces[0].gone, pieces[0].stream_time = list(entities.gone), entities.stream_time
    return pieces


def encode(by_asset: dict[str, Entities], format: bytes = FORMAT) -> list[bytes]:
    """The record values holding ``by_asset`` (settle asset -> entities), split so that each stays
    under about :data:`RECORD_BYTES`; an empty batch is one record (a snapshot of an empty state).
    ``format``: :data:`FORMAT`, or :data:`FORMAT_2` (the version before's, for tests)."""
    group, write = (_group3, _write) if format == FORMAT else (_group, _write_2)
    out = []
    for asset, entities in by_asset.items():
        if len(entities) or entities.gone:
            parts = min(-(-_estimate(entities) // RECORD_BYTES), len(entities) + len(entities.gone))
            out += [write([group(asset, piece)]) for piece in _split_entities(entities, max(parts, 1))]
    return out or [write([])]


def decode(raw: bytes, into: dict[str, Entities], format: bytes = FORMAT) -> None:
    """Fold a record of ``format`` (its ``batch`` header, one of :data:`FORMATS`) into ``into``
    (settle asset -> entities), in log order."""
    if format not in FORMATS:
        raise ValueError(f"changelog record of format {format!r}: this version reads {FORMATS}")
    schema, fold = (SCHEMA_3, _entities3) if format == FORMAT else (SCHEMA, _entities)
    for group in fastavro.schemaless_reader(BytesIO(raw), schema, None)["groups"]:
        asset = group["asset"]
        entities = into.get(asset)
        if entities is None:
            entities = into[asset] = Entities()
        fold(group, entities)
