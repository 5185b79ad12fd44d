"""The changelog's binary record format: state entities of one task, column by column, in Avro.

A record of format 2 (header ``batch`` = ``2``) holds, per settle asset of the task, an
:class:`~adl_stream.engine.state.Entities`: the entities of a transaction (a *delta* record), or a
chunk of a snapshot, encoded with ``schemas/changelog/EntityBatch.avsc`` (fastavro, schemaless: the
schema is this module's, the header names its version). Columns, not one record per entity: the
positions of a batch are four arrays (symbol index, account, quantity, cost), so a restore decodes
them in fastavro's compiled loop, and the book's scaled integers travel as big-endian two's
complement bytes (``int.to_bytes``), never through a ``Decimal`` or a string.

A batch is split into records of at most :data:`RECORD_BYTES` (well under Kafka's 1 MB default
``message.max.bytes``) by :func:`encode`, which returns the values of the records it takes.
"""

from __future__ import annotations

import itertools
import json
from decimal import Decimal
from io import BytesIO
from pathlib import Path

import fastavro

from ..engine.state import Entities

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schemas" / "changelog" / "EntityBatch.avsc"
SCHEMA = fastavro.parse_schema(json.loads(SCHEMA_PATH.read_text()))
FORMAT = b"2"
"""The value of the ``batch`` header of a record in this format."""
RECORD_BYTES = 256 * 1024
"""A record's entities are split once their estimated size reaches this."""
_ENTITY_BYTES = 48
"""Estimated bytes of one entity besides its strings (for splitting, see :func:`encode`)."""


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
        "funds": [{"fund": fund, "balance": str(balance)} for fund, balance in entities.funds.items()],
        "histories": [{"fund": fund, "entries": [{"time": time, "balance": str(balance), "until": until}
                                                 for time, balance, until in history]}
                      for fund, history in entities.histories.items()],
        "marks": [{"symbol": symbol, "price": str(price), "ts": ts} for symbol, (price, ts) in entities.marks.items()],
        "reservations": [{"order_id": order_id, "account": account, "symbol": symbol, "quantity": str(quantity),
                          "expires_at": expires_at}
                         for (order_id, account), (symbol, quantity, expires_at) in entities.reservations.items()],
        "seen": [{"segment": segment, "part": part, "ids": list(ids)} for (segment, part), ids in entities.seen.items()],
        "lights": {"symbol": [name(symbol, len(names)) for symbol, _ in lights],
                   "account": [account for _, account in lights],
                   "light": list(lights.values())},
        "stream_time": entities.stream_time,
        "gone": [json.dumps(key, separators=(",", ":")) for key in entities.gone],
        "names": list(names),
    }


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
    for fund in group["funds"]:
        into.funds[fund["fund"]] = Decimal(fund["balance"])
    for history in group["histories"]:
        into.histories[history["fund"]] = tuple((e["time"], Decimal(e["balance"]), e["until"])
                                                for e in history["entries"])
    for mark in group["marks"]:
        into.marks[mark["symbol"]] = (Decimal(mark["price"]), mark["ts"])
    for r in group["reservations"]:
        into.reservations[(r["order_id"], r["account"])] = (r["symbol"], Decimal(r["quantity"]), r["expires_at"])
    for part in group["seen"]:
        into.seen[(part["segment"], part["part"])] = tuple(part["ids"])
    lights = group["lights"]
    into.lights.update(zip(zip([names[i] for i in lights["symbol"]], lights["account"]), lights["light"]))
    if group["stream_time"] is not None:
        into.stream_time = group["stream_time"]


def _write(groups: list[dict]) -> bytes:
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


def _split(entities: Entities, parts: int) -> list[Entities]:
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


def encode(by_asset: dict[str, Entities]) -> list[bytes]:
    """The record values holding ``by_asset`` (settle asset -> entities), split so that each stays
    under about :data:`RECORD_BYTES`; an empty batch is one record (a snapshot of an empty state)."""
    out = []
    for asset, entities in by_asset.items():
        if len(entities) or entities.gone:
            parts = min(-(-_estimate(entities) // RECORD_BYTES), len(entities) + len(entities.gone))
            out += [_write([_group(asset, piece)]) for piece in _split(entities, max(parts, 1))]
    return out or [_write([])]


def decode(raw: bytes, into: dict[str, Entities]) -> None:
    """Fold a record of this format into ``into`` (settle asset -> entities), in log order."""
    for group in fastavro.schemaless_reader(BytesIO(raw), SCHEMA, None)["groups"]:
        asset = group["asset"]
        entities = into.get(asset)
        if entities is None:
            entities = into[asset] = Entities()
        _entities(group, entities)
