"""Avro schema resolution checked before reading (wire/resolution.py), and records of evolved
writer schemas read through it (writer_schemas)."""

import copy
import json
from decimal import Decimal as D

import avro.schema
import fastavro
import pytest
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType
from hypothesis import given, settings
from hypothesis import strategies as st

from adl_stream.engine import Fill, Rejected
from adl_stream.wire import Codec, UnresolvableSchema, load_schemas, load_writer_schemas
from adl_stream.wire.resolution import resolution_problems
from adl_stream.wire.schemas import parse
from tests import scenarios as sc
from tests.wire.evolution import (
    EvolvedCodec,
    document,
    field_of,
    fill_v2,
    incompatible_fill,
    write_avsc,
)

SCHEMAS = load_schemas()


def problems(writer: dict, reader: dict) -> list[str]:
    return resolution_problems(fastavro.parse_schema(copy.deepcopy(writer)), fastavro.parse_schema(copy.deepcopy(reader)))


def test_every_schema_resolves_to_itself_and_an_added_optional_field_resolves():
    for name in SCHEMAS:
        assert problems(document(name), document(name)) == [], name
    assert problems(fill_v2(), document("Fill")) == []  # a reader skips the new field
    assert problems(document("Fill"), fill_v2()) == []  # and a v2 reader takes its default


@pytest.mark.parametrize("change, field, words", [
    (lambda s: field_of(s, "quantity").update(type="string"), "Fill.quantity", "cannot be read as"),
    (lambda s: s["fields"].remove(field_of(s, "price")), "Fill.price", "no default"),
    (lambda s: field_of(s, "side")["type"]["symbols"].append("HOLD"), "Fill.side", "HOLD"),
    (lambda s: field_of(s, "fee")["type"].update(scale=20, precision=38), "Fill.fee", "does not fit"),
    (lambda s: field_of(s, "ts").update(type="long"), "Fill.ts", "cannot be read as"),
    (lambda s: field_of(s, "adl_order_id").update(type=["null", "long"]), "Fill.adl_order_id", "matches no branch"),
])
def test_an_incompatible_change_names_the_field(change, field, words):
    writer = document("Fill")
    change(writer)
    found = problems(writer, document("Fill"))
    assert len(found) == 1 and found[0].startswith(f"{field}:") and words in found[0], found


def test_promotions_and_a_narrower_decimal_resolve():
    writer = document("AdlOrder")
    field_of(writer, "score").update(type="float")  # float -> double
    field_of(writer, "rank").update(type="int")
    field_of(writer, "quantity")["type"].update(precision=20, scale=8)  # fits decimal(38, 18)
    assert problems(writer, document("AdlOrder")) == []
    assert problems(document("AdlOrder"), writer) != []  # double -> float is no promotion


# Mutations that both the Apache reference checker and ours judge (logical types aside: the
# reference ignores them, adl-stream is stricter there, tested above).
def _add_field(schema, optional):
    taken = {f["name"] for f in schema["fields"]}
    name = next(f"extra{i}" for i in range(len(taken) + 1) if f"extra{i}" not in taken)
    schema["fields"].append({"name": name, "type": ["null", "string"], "default": None} if optional
                            else {"name": name, "type": "string"})


def _drop_field(schema, index):
    del schema["fields"][index % len(schema["fields"])]


def _retype_string(schema, index):
    strings = [f for f in schema["fields"] if f["type"] == "string"]
    strings[index % len(strings)]["type"] = "long"
    strings[index % len(strings)].pop("default", None)


def _default_on(schema, index):
    strings = [f for f in schema["fields"] if f["type"] == "string"]
    strings[index % len(strings)]["default"] = "x"


MUTATIONS = st.lists(st.one_of(
    st.builds(lambda o: lambda s: _add_field(s, o), st.booleans()),
    st.builds(lambda i: lambda s: _drop_field(s, i), st.integers(0, 20)),
    st.builds(lambda i: lambda s: _retype_string(s, i), st.integers(0, 20)),
    st.builds(lambda i: lambda s: _default_on(s, i), st.integers(0, 20)),
), min_size=0, max_size=3)


@settings(max_examples=150, deadline=None)
@given(name=st.sampled_from(["Fill", "LiquidationShortfall", "AdlOrder", "ShortfallDecision"]),
       writer_changes=MUTATIONS, reader_changes=MUTATIONS)
def test_agrees_with_the_apache_avro_reference_checker(name, writer_changes, reader_changes):
    writer, reader = document(name), document(name)
    for change in writer_changes:
        change(writer)
    for change in reader_changes:
        change(reader)
    reference = ReaderWriterCompatibilityChecker().get_compatibility(
        avro.schema.parse(json.dumps(reader)), avro.schema.parse(json.dumps(writer)))
    ours = problems(writer, reader)
    assert (reference.compatibility is SchemaCompatibilityType.compatible) == (not ours), (ours, reference.messages)


def test_an_evolved_fill_is_read_like_v1_and_its_own_fingerprint_is_refused_without_it(tmp_path):
    write_avsc(tmp_path / "exchange", "Fill-v2.avsc", fill_v2())
    codec = Codec(writers=load_writer_schemas([tmp_path / "exchange"]))
    fill = sc.SETUP[5]
    payload = EvolvedCodec().encode(fill)
    assert payload[2:10] == parse(fill_v2()).fingerprint != SCHEMAS["Fill"].fingerprint
    assert codec.decode(payload, Fill) == fill
    with pytest.raises(Rejected, match="unknown_schema"):
        Codec().decode(payload, Fill)


@given(quantity=st.decimals(min_value=D("0.000000000000000001"), max_value=D("99999999999999999999"), places=18),
       venue=st.text(max_size=8))
def test_any_v2_fill_decodes_to_its_v1_fields(quantity, venue):
    codec = Codec(writers=[("v2", parse(fill_v2()))])
    fill = Fill("f", "a", "BTCUSDT", "BUY", quantity, D(100), D(0), "TRADE", None, 5)
    assert codec.decode(EvolvedCodec(venue).encode(fill), Fill) == fill


def test_an_unresolvable_writer_schema_is_refused_naming_the_file_and_the_field(tmp_path):
    path = write_avsc(tmp_path, "fill-broken.avsc", incompatible_fill())
    with pytest.raises(UnresolvableSchema) as refused:
        Codec(writers=load_writer_schemas([tmp_path]))
    assert str(path) in str(refused.value) and "Fill.quantity" in str(refused.value)
    unknown = document("Fill")
    unknown["name"] = "Trade"
    write_avsc(tmp_path / "other", "trade.avsc", unknown)
    with pytest.raises(UnresolvableSchema, match="adl-stream reads no record of that name"):
        Codec(writers=load_writer_schemas([tmp_path / "other"]))
