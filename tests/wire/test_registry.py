"""Confluent framing with confluent-kafka's in-process mock registry (``mock://``): no registry
server can be installed on the test machines."""

import json
import uuid
from dataclasses import asdict, replace
from decimal import Decimal as D

import pytest
from confluent_kafka.schema_registry import Schema as RegistrySchema
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from adl_stream.engine import AdlIndicator, AdlOrder, Fill, IndicatorCleared, MarkPrice, Rejected, ShortfallDecision
from adl_stream.wire import Codec, load_schemas
from adl_stream.wire.registry import RegistryCodec, SchemaNotUsable, registry_client, subject
from adl_stream.wire.schemas import parse
from tests import scenarios as sc
from tests.wire.evolution import EvolvedCodec, document, fill_v2, incompatible_fill

OUTPUTS = {"AdlOrder": "adl-orders-value", "ShortfallDecision": "adl-decisions-value",
           "AdlIndicator": "adl-indicators-value"}
ORDER = AdlOrder("E:1", "E", "BTCUSDT", "S", "BUY", D(1), D("95.5"), "B", 1, 3.25, 5)
DECISION = ShortfallDecision("E", "BTCUSDT", "B", "USDT", D(5), D(800), "ADL", D(0), D(5), D(0), 2,
                             ("E:1", "E:2"), D(700), "fund-exhausted/pnl-leverage", 5_000)
LIGHT = AdlIndicator("BTCUSDT", "S", "SHORT", 5, 1, 5, 3.25, 30_000)


def fresh_client():
    return registry_client({"url": f"mock://{uuid.uuid4().hex}"})


def test_one_mock_registry_per_url_in_the_process():
    url = f"mock://{uuid.uuid4().hex}"
    assert registry_client({"url": url}) is registry_client({"url": url})
    assert registry_client({"url": url}) is not fresh_client()


def test_outputs_round_trip_with_registered_ids_and_the_bytes_of_confluents_serializer():
    client = fresh_client()
    codec = RegistryCodec(client, OUTPUTS, auto_register=True)
    for record in (ORDER, DECISION, LIGHT):
        payload = codec.encode(record)
        name = type(record).__name__
        registered = client.get_latest_version(OUTPUTS[name])
        assert payload[:1] == b"\x00" and int.from_bytes(payload[1:5], "big") == registered.schema_id
        assert json.loads(registered.schema.schema_str) == document(name)
        assert codec.decode(payload, type(record)) == record
        # A consumer with only the registry decodes it too (another codec, same registry).
        assert RegistryCodec(client, {}, auto_register=False).decode(payload, type(record)) == record
        # confluent-kafka's AvroSerializer writes the same bytes for the same record.
        serializer = AvroSerializer(client, registered.schema.schema_str,
                                    conf={"auto.register.schemas": False, "use.latest.version": False})
        values = asdict(record) | {"ts": record.ts}
        if "order_ids" in values:
            values["order_ids"] = list(values["order_ids"])
        topic = OUTPUTS[name].removesuffix("-value")
        assert serializer(values, SerializationContext(topic, MessageField.VALUE)) == payload


def test_a_pass_of_lights_is_framed_as_one_light_at_a_time_its_tombstones_none():
    cleared = IndicatorCleared("BTCUSDT", "T", 30_000)
    lights = [LIGHT, cleared, replace(LIGHT, account_id="U", light=4)]
    for codec in (RegistryCodec(fresh_client(), OUTPUTS, auto_register=True), Codec()):
        assert codec.encode_all(lights, AdlIndicator) == [codec.encode(LIGHT), None, codec.encode(lights[2])]
    with pytest.raises(KeyError, match="no subject given for AdlIndicator"):
        RegistryCodec(fresh_client(), {}, auto_register=False).encode_all(lights, AdlIndicator)


def test_inputs_by_schema_id_including_an_evolved_fill_and_single_object_encoding():
    client = fresh_client()
    producer = RegistryCodec(client, {"Fill": "fills-value"}, auto_register=True,
                             schemas={**load_schemas(), "Fill": parse(fill_v2())})
    reader = RegistryCodec(client, OUTPUTS, auto_register=True)
    fill = sc.SETUP[5]
    v2 = producer.encode(fill)
    assert json.loads(client.get_schema(int.from_bytes(v2[1:5], "big")).schema_str) == fill_v2()
    assert reader.decode(v2, Fill) == fill
    assert reader.decode(Codec().encode(fill), Fill) == fill  # single-object encoding still read
    with pytest.raises(Rejected, match="wrong_schema"):
        reader.decode(v2, MarkPrice)


def test_unknown_ids_unresolvable_schemas_and_bad_framing_are_rejected_with_a_reason():
    client = fresh_client()
    reader = RegistryCodec(client, OUTPUTS, auto_register=True)
    broken_id = client.register_schema("fills-value", RegistrySchema(json.dumps(incompatible_fill()), "AVRO"))
    body = Codec().body(sc.SETUP[5])[1]
    cases = [
        (b"\x00\x00\x00\x27\x10" + body, "unknown_schema"),  # id 10000: not in the registry
        (b"\x00" + broken_id.to_bytes(4, "big") + body, "unresolvable_schema"),
        (b"\x00\x00\x01", "undecodable"),
        (b"\x00" + client.get_latest_version(OUTPUTS["AdlOrder"]).schema_id.to_bytes(4, "big") + body, "wrong_schema"),
    ]
    for payload, reason in cases:
        with pytest.raises(Rejected) as refused:
            reader.decode(payload, Fill)
        assert refused.value.reason == reason, refused.value
    with pytest.raises(Rejected, match="Fill.quantity"):
        reader.decode(b"\x00" + broken_id.to_bytes(4, "big") + body, Fill)
    with pytest.raises(Rejected, match="set schema_registry_url"):
        Codec().decode(b"\x00" + broken_id.to_bytes(4, "big") + body, Fill)


def test_without_auto_registration_the_output_schemas_must_be_registered_and_compatible():
    client = fresh_client()
    with pytest.raises(SchemaNotUsable, match="not registered under subject 'adl-orders-value'"):
        RegistryCodec(client, OUTPUTS, auto_register=False)
    RegistryCodec(client, OUTPUTS, auto_register=True)  # as an operator registering them would
    registered = RegistryCodec(client, OUTPUTS, auto_register=False)
    assert registered.encode(ORDER)[1:5] == RegistryCodec(client, OUTPUTS, auto_register=True).encode(ORDER)[1:5]
    # A later version of the subject that readers use and that cannot read adl-stream's records:
    later = document("AdlOrder")
    later["fields"].append({"name": "venue", "type": "string"})
    client.register_schema("adl-orders-value", RegistrySchema(json.dumps(later), "AVRO"))
    with pytest.raises(SchemaNotUsable, match="AdlOrder.venue"):
        RegistryCodec(client, OUTPUTS, auto_register=False)


def test_the_subject_is_the_topic_name_strategy():
    assert subject("adl-orders") == "adl-orders-value"


def test_an_evolved_fill_in_single_object_encoding_needs_writer_schemas_even_with_a_registry():
    reader = RegistryCodec(fresh_client(), OUTPUTS, auto_register=True)
    with pytest.raises(Rejected, match="unknown_schema"):
        reader.decode(EvolvedCodec().encode(sc.SETUP[5]), Fill)
    with_writers = RegistryCodec(fresh_client(), OUTPUTS, auto_register=True, writers=[("v2", parse(fill_v2()))])
    assert with_writers.decode(EvolvedCodec().encode(sc.SETUP[5]), Fill) == sc.SETUP[5]


def test_a_registry_that_does_not_answer_is_an_outage_not_a_bad_record():
    from adl_stream.wire.registry import RegistryUnavailable

    down = registry_client({"url": "http://127.0.0.1:1", "max.retries": 0, "timeout": 2})
    with pytest.raises(RegistryUnavailable, match="did not answer"):
        RegistryCodec(down, OUTPUTS, auto_register=True)  # at start: the processor refuses to start
    reader = RegistryCodec(down, {}, auto_register=False)
    with pytest.raises(RegistryUnavailable, match="schema id 7"):
        reader.decode(b"\x00\x00\x00\x00\x07" + Codec().body(sc.SETUP[5])[1], Fill)  # running: exit 1, restart
