"""Schemas the Kafka way, through the real broker: a Fill written with an evolved schema (an
optional field added) is applied exactly like v1, without a registry (``writer_schemas``) and with
confluent-kafka's in-process mock registry (``mock://``: no registry server can be installed on
the test machines); and the output topics decode with the Apache Avro reference library, in both
framings, to show the wire format is standard."""

import json
import uuid
from dataclasses import asdict, replace
from io import BytesIO

import avro.io
import avro.schema
import pytest
from confluent_kafka.schema_registry import Schema as RegistrySchema

from adl_stream.engine import AdlIndicator, AdlOrder, ShortfallDecision
from adl_stream.runtime.serdes import INPUTS, _subjects
from adl_stream.wire import SCHEMA_DIR, Codec
from adl_stream.wire.registry import RegistryCodec, registry_client
from tests import scenarios as sc
from tests.conftest import Feed, metric, read_topic
from tests.integration.test_processor import run_scenario
from tests.wire.evolution import EvolvedCodec, EvolvedRegistryCodec, fill_v2, incompatible_fill, write_avsc

pytestmark = pytest.mark.integration


def registry_settings(settings):
    return replace(settings, schema_registry_url=f"mock://{uuid.uuid4().hex}", auto_register_schemas=True)


def feed_with(settings, codec) -> Feed:
    feed = Feed(settings)
    feed.publisher.codec = codec
    return feed


def outputs(settings, codec):
    orders = [codec.decode(m.value(), AdlOrder) for m in read_topic(settings, settings.topics.adl_orders, len(sc.EXPECTED_ORDERS))]
    decisions = [codec.decode(m.value(), ShortfallDecision) for m in read_topic(settings, settings.topics.adl_decisions, 4)]
    return orders, decisions


def assert_the_hand_computed_outputs(orders, decisions):
    assert [sc.order_summary(o) for o in orders] == [e[:6] for e in sc.EXPECTED_ORDERS]
    assert [o.order_id for o in orders] == [e[0] for e in sc.EXPECTED_ORDERS]
    assert {d.event_id: sc.decision_summary(d) for d in decisions} == sc.EXPECTED_DECISIONS
    assert len(decisions) == 4


def test_an_evolved_fill_without_a_registry_is_applied_like_v1(settings, start_processor, tmp_path):
    write_avsc(tmp_path / "exchange", "Fill.avsc", fill_v2())
    settings = replace(settings, writer_schemas=(str(tmp_path / "exchange"),))
    running = start_processor(settings)
    run_scenario(feed_with(settings, EvolvedCodec()), running)
    assert_the_hand_computed_outputs(*outputs(settings, Codec()))
    assert metric(running.processor, "adl_dead_letters_total") == 0
    assert metric(running.processor, "adl_events_processed_total", topic=settings.topics.fills) == len(
        [r for r in sc.STREAM if isinstance(r, sc.Fill)])
    assert running.close() == 0


def test_an_evolved_fill_through_the_mock_registry_is_applied_like_v1(settings, start_processor):
    settings = registry_settings(settings)
    client = registry_client({"url": settings.schema_registry_url})
    running = start_processor(settings)  # registers its output schemas (auto_register_schemas)
    run_scenario(feed_with(settings, EvolvedRegistryCodec(client, _subjects(settings, INPUTS))), running)
    fills = client.get_latest_version(f"{settings.topics.fills}-value")
    assert json.loads(fills.schema.schema_str) == fill_v2()
    orders, decisions = outputs(settings, running.processor.codec)
    assert_the_hand_computed_outputs(orders, decisions)
    for message in read_topic(settings, settings.topics.adl_orders, len(sc.EXPECTED_ORDERS)):
        assert message.value()[:1] == b"\x00"  # Confluent framing out
    assert metric(running.processor, "adl_dead_letters_total") == 0
    assert running.close() == 0


# -- outside readers -------------------------------------------------------------------------------

def _simple_primitives(node):
    """The Parsing Canonical Form's [PRIMITIVES] rule: ``{"type": "bytes"}`` -> ``"bytes"``. The Python
    ``avro`` library (1.12) keeps the object form for a logical-typed primitive, so its fingerprints
    of schemas with decimals or timestamps differ from the spec's (and Java's, and fastavro's)."""
    if isinstance(node, dict):
        if set(node) == {"type"} and isinstance(node["type"], str):
            return node["type"]
        return {k: _simple_primitives(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_simple_primitives(v) for v in node]
    return node


def reference_fingerprint(schema: avro.schema.Schema) -> bytes:
    canonical = json.dumps(_simple_primitives(json.loads(schema.canonical_form)), separators=(",", ":"))
    return avro.schema.parse(canonical).fingerprint("CRC-64-AVRO")


REFERENCE_SCHEMAS = {path.stem: avro.schema.parse(path.read_text()) for path in SCHEMA_DIR.glob("*.avsc")}


def test_the_reference_fingerprints_are_those_on_the_wire():
    codec = Codec()
    for name, schema in REFERENCE_SCHEMAS.items():
        assert reference_fingerprint(schema) == codec.schemas[name].fingerprint, name


class OutsideReader:
    """Decodes adl-stream's output values with the Apache Avro library only: single-object encoding
    by fingerprint of schemas/*.avsc, Confluent framing by schema id from the registry."""

    def __init__(self, client=None) -> None:
        self.client = client
        self.by_fingerprint = {reference_fingerprint(s): s for s in REFERENCE_SCHEMAS.values()}

    def read(self, value: bytes) -> tuple[str, dict]:
        if value[:2] == b"\xc3\x01":
            writer, body = self.by_fingerprint[value[2:10]], value[10:]
        else:
            assert value[:1] == b"\x00", value[:8]
            text = self.client.get_schema(int.from_bytes(value[1:5], "big")).schema_str
            writer, body = avro.schema.parse(text), value[5:]
        decoder = avro.io.BinaryDecoder(BytesIO(body))
        record = avro.io.DatumReader(writer).read(decoder)
        assert decoder.reader.read() == b""  # the whole value, nothing left over
        return writer.fullname, record


def as_adl_stream_decodes_it(record) -> dict:
    fields = asdict(record)
    if "order_ids" in fields:
        fields["order_ids"] = list(fields["order_ids"])
    return fields


@pytest.mark.parametrize("framing", ["single-object", "registry"])
def test_outside_readers_decode_the_output_topics_with_the_apache_avro_library(settings, start_processor, framing):
    settings = replace(settings, indicator_interval_ms=1000)
    if framing == "registry":
        settings = registry_settings(settings)
    running = start_processor(settings)
    client = registry_client({"url": settings.schema_registry_url}) if framing == "registry" else None
    codec = RegistryCodec(client, _subjects(settings, INPUTS), auto_register=True) if client else Codec()
    run_scenario(feed_with(settings, codec), running)
    reader = OutsideReader(client)
    seen = {}
    for topic, cls, expect in ((settings.topics.adl_orders, AdlOrder, len(sc.EXPECTED_ORDERS)),
                               (settings.topics.adl_decisions, ShortfallDecision, 4),
                               (settings.topics.adl_indicators, AdlIndicator, 1)):
        values = [m.value() for m in read_topic(settings, topic, expect) if m.value() is not None]
        assert values, topic
        for value in values:
            name, record = reader.read(value)
            ours = running.processor.codec.decode(value, cls)
            assert name == f"io.adlstream.{cls.__name__}"
            ts = record.pop("ts")
            assert round(ts.timestamp() * 1000) == ours.ts
            assert record == {k: v for k, v in as_adl_stream_decodes_it(ours).items() if k != "ts"}
        seen[cls.__name__] = len(values)
    assert seen["AdlOrder"] == len(sc.EXPECTED_ORDERS) and seen["ShortfallDecision"] == 4
    assert running.close() == 0


def test_registry_framed_bad_input_goes_to_the_dlq_with_its_reason(settings, start_processor):
    settings = registry_settings(settings)
    client = registry_client({"url": settings.schema_registry_url})
    running = start_processor(settings)
    broken = client.register_schema(f"{settings.topics.fills}-value",
                                    RegistrySchema(json.dumps(incompatible_fill()), "AVRO"))
    body = Codec().body(sc.SETUP[5])[1]
    feed = Feed(settings)
    sent = {
        feed.send_raw(settings.topics.fills, "BTCUSDT", b"\x00\x00\x01\x86\xa0" + body): "unknown_schema",
        feed.send_raw(settings.topics.fills, "BTCUSDT", b"\x00" + broken.to_bytes(4, "big") + body): "unresolvable_schema",
        feed.send_raw(settings.topics.fills, "BTCUSDT", b"\x00\x00"): "undecodable",
    }
    dead = read_topic(settings, settings.topics.adl_dlq, len(sent))
    found = {(int(h["source.partition"]), int(h["source.offset"])): h["error.reason"]
             for h in ({k: v.decode() for k, v in m.headers()} for m in dead)}
    assert found == sent
    assert any("Fill.quantity" in dict(m.headers())["error"].decode() for m in dead)
    assert metric(running.processor, "adl_dead_letters_total", reason="unresolvable_schema") == 1
    assert running.close() == 0
