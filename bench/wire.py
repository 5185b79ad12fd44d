"""Decode throughput per wire framing, in memory (no broker), next to the raw limit.

Over the inputs of the demo's crash (fills, marks, balances, fund flows, shortfalls), each value is
decoded into the engine's record by:
- ``raw``: fastavro's ``schemaless_reader`` on the single-object body, into a dict (the raw limit
  of the end-to-end benchmark: nothing else);
- ``single-object``: ``Codec.decode``, the writer schema being adl-stream's own;
- ``single-object, evolved Fill``: the fills written with a v2 schema (an optional field added,
  ``writer_schemas``), read through Avro schema resolution;
- ``registry, fastavro by id``: ``RegistryCodec.decode``, Confluent framing, the writer schema
  fetched once per id and cached (adl-stream's hot path);
- ``registry, AvroDeserializer``: confluent-kafka's ``AvroDeserializer`` with the reader schema,
  then the same conversion into the record (the alternative measured, not used).
The registry is confluent-kafka's in-process mock, so no figure contains a network round trip.
"""

from __future__ import annotations

import json
import time
import uuid
from io import BytesIO

import fastavro
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

from adl_stream.simulation.market import MarketSimulator, Scenario
from adl_stream.wire import Codec
from adl_stream.wire.codec import HEADER_SIZE
from adl_stream.wire.registry import RegistryCodec, registry_client
from adl_stream.wire.schemas import parse

SUBJECTS = {"Fill": "fills-value", "MarkPrice": "mark-prices-value", "BalanceUpdate": "balances-value",
            "FundFlow": "insurance-fund-value", "LiquidationShortfall": "liquidation-shortfalls-value"}


def _fill_v2():
    document = json.loads(Codec().schemas["Fill"].text)
    document["fields"].append({"name": "venue", "type": ["null", "string"], "default": None})
    return parse(document)


class _EvolvedFills(Codec):
    """Writes fills with the v2 schema (``venue`` set), the rest with adl-stream's own."""

    def __init__(self, v2) -> None:
        super().__init__({**Codec().schemas, "Fill": v2})

    def body(self, record):
        schema, body = super().body(record)
        if schema.short_name == "Fill":
            fields = fastavro.schemaless_reader(BytesIO(body), Codec().schemas["Fill"].parsed, None)
            out = BytesIO()
            fastavro.schemaless_writer(out, schema.parsed, {**fields, "venue": "XNAS"})
            body = out.getvalue()
        return schema, body


def _timed(decode, values, repeat: int) -> float:
    """Best of ``repeat`` passes: seconds per pass."""
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        for value, cls in values:
            decode(value, cls)
        best = min(best, time.perf_counter() - started)
    return best


def run(accounts: int = 1_000, repeat: int = 3) -> list[dict]:
    records = list(MarketSimulator(Scenario(seed=1, accounts=accounts)).records())
    codec = Codec()
    single = [(codec.encode(r), type(r)) for r in records]
    v2 = _fill_v2()
    evolved = [(_EvolvedFills(v2).encode(r), type(r)) for r in records]
    client = registry_client({"url": f"mock://bench-{uuid.uuid4().hex}"})
    producer = RegistryCodec(client, SUBJECTS, auto_register=True)
    framed = [(producer.encode(r), type(r)) for r in records]
    registry = RegistryCodec(client, {}, auto_register=False)
    by_fingerprint = {s.fingerprint: s.parsed for s in codec.schemas.values()}

    def raw(value, _cls):
        body = BytesIO(value)
        body.seek(HEADER_SIZE)
        return fastavro.schemaless_reader(body, by_fingerprint[value[2:HEADER_SIZE]], None)

    deserializers = {cls: AvroDeserializer(client, codec.schemas[cls.__name__].text) for cls in {c for _, c in framed}}
    contexts = {cls: SerializationContext(SUBJECTS[cls.__name__].removesuffix("-value"), MessageField.VALUE)
                for cls in deserializers}

    def confluent(value, cls):
        return codec.record(deserializers[cls](value, contexts[cls]), cls)

    with_writers = Codec(writers=[("v2", v2)])
    runs = [
        ("raw (fastavro into a dict)", raw, single),
        ("single-object", codec.decode, single),
        ("single-object, evolved Fill (writer_schemas)", with_writers.decode, evolved),
        ("registry, fastavro by id (used)", registry.decode, framed),
        ("registry, AvroDeserializer (measured, not used)", confluent, framed),
    ]
    for name, decode, values in runs:  # the same records, whatever the framing
        assert decode is raw or all(decode(v, c) == r for (v, c), r in zip(values[:200], records[:200])), name
    rows, raw_rate = [], None
    for name, decode, values in runs:
        seconds = _timed(decode, values, repeat)
        rate = len(values) / seconds
        raw_rate = raw_rate or rate
        rows.append({"framing": name, "records": len(values), "us_per_record": round(seconds / len(values) * 1e6, 2),
                     "records_per_s": round(rate), "x_raw": round(rate / raw_rate, 3)})
    return rows
