import decimal
import json
from dataclasses import replace
from decimal import Decimal as D

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adl_stream.engine import AdlIndicator, AdlOrder, Fill, IndicatorCleared, MarkPrice, Rejected, ShortfallDecision
from adl_stream.engine.numbers import EXACT
from adl_stream.wire import SCHEMA_DIR, Codec, load_schemas
from adl_stream.wire.codec import RECORD_TYPES
from tests import scenarios as sc

codec = Codec()

wire_decimals = st.decimals(min_value=D("-99999999999999999999.999999999999999999"),
                            max_value=D("99999999999999999999.999999999999999999"), places=18,
                            allow_nan=False, allow_infinity=False)


def test_every_schema_has_a_record_type_with_the_same_fields():
    schemas = load_schemas()
    assert set(schemas) == set(RECORD_TYPES)
    for name, schema in schemas.items():
        assert schema.name == f"io.adlstream.{name}"
        fields = [f.name for f in RECORD_TYPES[name].__dataclass_fields__.values()]
        assert [f["name"] for f in json.loads((SCHEMA_DIR / f"{name}.avsc").read_text())["fields"]] == fields


def test_every_decimal_is_avro_decimal_38_18():
    for path in SCHEMA_DIR.glob("*.avsc"):
        for field in json.loads(path.read_text())["fields"]:
            if field["name"] in ("quantity", "price", "fee", "mark_price", "wallet_balance", "amount",
                                 "bankruptcy_price", "shortfall", "fund_covered", "adl_quantity",
                                 "unfilled_quantity", "fund_balance_after"):
                assert field["type"] == {"type": "bytes", "logicalType": "decimal", "precision": 38, "scale": 18}, (path.name, field)


def test_single_object_header_is_c3_01_and_the_spec_fingerprint():
    # Avro spec test vector: the CRC-64-AVRO of the schema "int" is 0x7275d51a3f395c8f,
    # written little-endian after C3 01. Our schemas go through the same function.
    from fastavro.schema import fingerprint
    assert bytes.fromhex(fingerprint('"int"', "CRC-64-AVRO")) == (0x7275D51A3F395C8F).to_bytes(8, "little")
    payload = codec.encode(sc.SETUP[5])
    assert payload[:2] == b"\xc3\x01"
    assert payload[2:10] == codec.schemas["Fill"].fingerprint


@given(quantity=wire_decimals, price=wire_decimals, ts=st.integers(0, 2**41))
def test_decimals_round_trip_exactly(quantity, price, ts):
    fill = Fill("id", "acct", "BTCUSDT", "SELL", quantity, price, D("-0.000000000000000001"), "ADL", "E:1", ts)
    assert codec.decode(codec.encode(fill), Fill) == fill


def test_outputs_round_trip_including_infinite_scores():
    decision = ShortfallDecision("E", "BTCUSDT", "B", "USDT", D(5), D(800), "ADL", D(0), D(5), D(0), 2,
                                 ("E:1", "E:2"), D(700), "fund-exhausted/pnl-leverage", 5_000)
    assert codec.decode(codec.encode(decision), ShortfallDecision) == decision
    order = sc.AdlOrder("E:1", "E", "BTCUSDT", "S", "BUY", D(1), D(95), "B", 1, float("inf"), 5)
    assert codec.decode(codec.encode(order), sc.AdlOrder) == order
    for light in (AdlIndicator("BTCUSDT", "Z", "SHORT", 5, 1, 5, float("inf"), 30_000),
                  AdlIndicator("BTCUSDT", "L", "LONG", 3, 2, 2, -0.2111, 30_000)):
        assert codec.decode(codec.encode(light), AdlIndicator) == light
    assert codec.encode(light)[2:10] == codec.schemas["AdlIndicator"].fingerprint


def test_decimals_go_out_at_the_schema_scale_exactly_and_never_rounded():
    # A haircut of two decoded wire decimals: 3.000000000000000000 x 5.000000000000000000 has
    # exponent -36, more than decimal(38, 18) holds; its value does fit, so it is written as 15.
    haircut = EXACT.multiply(D("3.000000000000000000"), D("5.000000000000000000"))
    decision = ShortfallDecision("E", "BTCUSDT", "B", "USDT", D(3), D(800), "ADL", D(0), D(3), D(0), 1,
                                 ("E:1",), D(700), "fund-exhausted/pro-rata", 5_000, haircut)
    assert haircut.as_tuple().exponent == -36
    assert codec.decode(codec.encode(decision), ShortfallDecision).haircut == D(15)
    with pytest.raises(decimal.Inexact):  # 1e-19 would round: the codec refuses to decide that
        codec.encode(replace(decision, haircut=D("1e-19")))


def _logical_body(record) -> bytes:
    """``record``'s body as fastavro's decimal logical type writes it (the codec's way before its
    direct writer): decimals with more places than 18 rescaled exactly first."""
    from io import BytesIO

    import fastavro

    from adl_stream.engine.numbers import to_wire

    name = type(record).__name__
    fields = {f: getattr(record, f) for f in codec._fields[name]}
    for f in codec._decimals[name]:
        if fields[f].as_tuple().exponent < -18:
            fields[f] = to_wire(fields[f])
    out = BytesIO()
    fastavro.schemaless_writer(out, codec.schemas[name].parsed, fields)
    return out.getvalue()


@given(coefficient=st.integers(-(10**40), 10**40) | st.sampled_from([0, 10**38 - 1, 10**38, -(10**38), 10**20]),
       exponent=st.integers(-24, 4), negative_zero=st.booleans())
def test_outputs_write_decimals_in_the_bytes_of_fastavros_logical_type(coefficient, exponent, negative_zero):
    # the direct writer makes each decimal's bytes itself: the same bytes as fastavro's logical
    # type, the same refusals (more places than 18 that are not zeros: Inexact; more than 38
    # digits: ValueError), so every output record is byte for byte what it was
    value = D(f"{'-' if negative_zero and not coefficient else ''}{coefficient}E{exponent}")
    order = sc.AdlOrder("E:1", "E", "BTCUSDT", "S", "BUY", value, D("95.5"), "B", 1, 0.25, 5)
    decision = ShortfallDecision("E", "BTCUSDT", "B", "USDT", D(3), D(800), "ADL", value, D(3), D(0), 1,
                                 ("E:1",), D(700), "fund-exhausted/pro-rata", 5_000, -value)
    for record in (order, decision):
        try:
            expected = _logical_body(record)
        except (decimal.Inexact, ValueError) as exc:
            with pytest.raises(type(exc)):
                codec.body(record)
            continue
        assert codec.body(record)[1] == expected


@pytest.mark.parametrize(
    "payload, reason",
    [
        (b"", "undecodable"),
        (b"garbage that is not avro", "undecodable"),
        (b"\xc3\x01" + b"\x00" * 8 + b"\x02", "unknown_schema"),
        (codec.encode(MarkPrice("BTCUSDT", D(1), 1)), "wrong_schema"),
        (codec.encode(sc.SETUP[5])[:-3], "undecodable"),
        (codec.encode(sc.SETUP[5]) + b"\x00", "undecodable"),
    ],
)
def test_bad_payloads_are_rejected_with_a_reason(payload, reason):
    with pytest.raises(Rejected) as info:
        codec.decode(payload, Fill)
    assert info.value.reason == reason


def test_decimal_beyond_the_schema_precision_is_rejected():
    too_big = Fill("id", "a", "BTCUSDT", "BUY", D(10) ** 21, D(1), D(0), "TRADE", None, 1)
    with pytest.raises(Rejected, match="decimal_out_of_range"):
        codec.decode(codec.encode(too_big), Fill)


def test_ts_is_read_as_the_long_it_is_on_the_wire_without_a_datetime():
    codec = Codec()
    fill = codec.schemas["Fill"]
    ts_field = next(f for f in fill.parsed["fields"] if f["name"] == "ts")
    assert ts_field["type"]["logicalType"] == "timestamp-millis"  # the contract keeps the logical type
    assert next(f for f in fill.decoding["fields"] if f["name"] == "ts")["type"] == "long"
    for ts in (0, 1, 1_732_406_400_123, -5):  # before 1970 too: no datetime in between
        record = MarkPrice("BTCUSDT", D("1.5"), ts)
        decoded = codec.decode(codec.encode(record), MarkPrice)
        assert decoded == record and type(decoded.ts) is int


@given(units=st.lists(st.integers(-(10**39), 10**39) | st.sampled_from([0, 1, -1, 10**38 - 1, -(10**38) + 1, 10**38]),
                      min_size=3, max_size=3))
def test_the_direct_decode_reads_decimals_as_fastavro_does(units):
    # adl-stream's own input schemas are read with their decimals as plain bytes, converted by the
    # codec: the same Decimal (digits and exponent) as fastavro's decimal logical type, and the
    # same refusal beyond decimal(38, 18)
    from io import BytesIO

    import fastavro

    from adl_stream.wire.codec import HEADER_SIZE

    schema = codec.schemas["Fill"]
    _, plain, _ = codec._direct[schema.fingerprint]
    fields = {"fill_id": "f", "account_id": "a", "symbol": "BTCUSDT", "side": "BUY", "kind": "TRADE",
              "adl_order_id": None, "ts": 7}
    for name, n in zip(("quantity", "price", "fee"), units):
        fields[name] = n.to_bytes((n.bit_length() + 8) // 8, "big", signed=True)
    out = BytesIO()
    fastavro.schemaless_writer(out, plain, fields)
    payload = b"\xc3\x01" + schema.fingerprint + out.getvalue()
    if any(abs(n) >= 10**38 for n in units):
        with pytest.raises(Rejected) as info:
            codec.decode(payload, Fill)
        assert info.value.reason == "decimal_out_of_range"
        return
    body = BytesIO(payload)
    body.seek(HEADER_SIZE)
    expected = fastavro.schemaless_reader(body, schema.decoding, None)  # the logical type's Decimals
    decoded = codec.decode(payload, Fill)
    for name in ("quantity", "price", "fee"):
        assert getattr(decoded, name).as_tuple() == expected[name].as_tuple()
    assert decoded == Fill(**expected)


def test_records_under_a_registry_framing_of_adl_streams_own_schema_take_the_direct_way():
    fill = sc.SETUP[5]
    schema, body = codec.body(fill)
    assert codec.read(b"\0\0\0\0\1" + body, 5, schema, None, Fill) == fill
    with pytest.raises(Rejected, match="wrong_schema"):
        codec.read(b"\0\0\0\0\1" + body, 5, schema, None, MarkPrice)


indicators = st.builds(
    AdlIndicator, symbol=st.sampled_from(["BTCUSDT", "ETHUSDT", "É€"]), account_id=st.text(max_size=40),
    side=st.sampled_from(["LONG", "SHORT"]), light=st.integers(-(2**31), 2**31 - 1),
    rank=st.integers(0, 2**31 - 1) | st.sampled_from([0, 63, 64, 127, 128, 8191, 8192]),
    positions=st.integers(-(2**31), 2**31 - 1),
    score=st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([0.0, -0.0]),
    ts=st.integers(-(2**63), 2**63 - 1) | st.sampled_from([0, 1_795_996_800_000]))


@given(st.lists(indicators, min_size=1, max_size=12))
def test_a_record_of_plain_fields_is_written_in_the_bytes_fastavro_writes(records):
    """The ADL indicator's body is made by the codec itself (every field plain: no fastavro per
    record), byte for byte what fastavro writes, one record after another (a value that repeats
    reuses its bytes: a -0.0 after a 0.0 must not)."""
    import io

    import fastavro

    schema = codec.schemas["AdlIndicator"]
    for record in records + [replace(records[-1], score=-records[-1].score, rank=records[-1].rank ^ 1)]:
        out = io.BytesIO()
        fastavro.schemaless_writer(out, schema.parsed, {f: getattr(record, f) for f in AdlIndicator.__slots__})
        assert codec.body(record)[1] == out.getvalue()


names = st.text(max_size=12)
amounts = wire_decimals | st.sampled_from([D(0), D("0E-18"), D("-0"), D("1E+19"), D("-0.000000000000000001")])
decisions = st.builds(
    ShortfallDecision, event_id=names, symbol=names, bankrupt_account_id=names, fund_id=names, quantity=amounts,
    shortfall=amounts, outcome=st.sampled_from(["FUND_COVERED", "ADL", "ADL_PARTIAL"]), fund_covered=amounts,
    adl_quantity=amounts, unfilled_quantity=amounts, orders=st.integers(-(2**31), 2**31 - 1),
    order_ids=st.lists(names, max_size=70).map(tuple), fund_balance_after=amounts, policy=names,
    ts=st.integers(-(2**63), 2**63 - 1), haircut=amounts)
orders = st.builds(
    AdlOrder, order_id=names, shortfall_event_id=names, symbol=names, account_id=names,
    side=st.sampled_from(["BUY", "SELL"]), quantity=amounts, price=amounts, bankrupt_account_id=names,
    rank=st.integers(-(2**31), 2**31 - 1), score=st.floats(allow_nan=False), ts=st.integers(-(2**63), 2**63 - 1))


@given(st.lists(decisions | orders, min_size=1, max_size=8))
def test_decisions_and_orders_are_written_in_the_bytes_fastavro_writes(records):
    """Their decimals (as decimal(38, 18) bytes) and the decision's order ids (an array of strings,
    empty or of several varint bytes of count) are written by the codec too, as fastavro does."""
    import io

    import fastavro

    for record in records:
        schema = codec.schemas[type(record).__name__]
        out = io.BytesIO()
        fastavro.schemaless_writer(out, schema.parsed, {f: getattr(record, f) for f in type(record).__slots__})
        assert codec.body(record)[1] == out.getvalue()
        assert codec.decode(codec.encode(record), type(record)) == record


@given(st.lists(st.lists(indicators | st.builds(IndicatorCleared, names, names, st.integers(0, 2**62)), max_size=12),
                max_size=4), st.lists(st.lists(decisions | orders, max_size=6), max_size=3), st.sampled_from([4, 1 << 18]))
def test_a_batch_is_written_as_its_records_one_by_one(passes, outputs, kept):
    """:meth:`Codec.encode_all` (a field's bytes made once per distinct value and kept across
    batches, up to KEPT_BYTES values) gives each record's :meth:`Codec.encode`, None for a tombstone."""
    from adl_stream.wire import codec as codec_module

    saved, codec_module.KEPT_BYTES = codec_module.KEPT_BYTES, kept
    try:
        fresh = Codec()  # its kept bytes start empty
        for lights in passes:
            assert fresh.encode_all(lights, AdlIndicator) == [
                codec.encode(light) if isinstance(light, AdlIndicator) else None for light in lights]
        for batch in outputs:
            for kind in (ShortfallDecision, AdlOrder):
                assert fresh.encode_all(batch, kind) == [codec.encode(r) if type(r) is kind else None for r in batch]
    finally:
        codec_module.KEPT_BYTES = saved


def test_a_batch_of_records_fastavro_writes_is_written_as_its_records_one_by_one():
    fills = [r for r in sc.SETUP if isinstance(r, Fill)]  # a union field (adl_order_id): fastavro's way
    mark = sc.SETUP[-1]
    assert fills and isinstance(mark, MarkPrice)
    assert codec.encode_all([*fills, mark], Fill) == [*map(codec.encode, fills), None]


def test_a_batch_refuses_a_field_out_of_its_range_naming_it():
    record = AdlIndicator("BTCUSDT", "A", "LONG", 5, 1, 1, 0.5, 0)
    with pytest.raises(ValueError, match="rank: 2147483648 is out of range for an Avro int"):
        codec.encode_all([record, replace(record, rank=2**31)], AdlIndicator)
    with pytest.raises(ValueError, match="side: 'FLAT' is not one of"):
        codec.encode_all([replace(record, side="FLAT")], AdlIndicator)


def test_a_decimal_the_wire_cannot_hold_is_refused_by_the_plain_writer_as_by_fastavro():
    order = AdlOrder("E1:1", "E1", "BTCUSDT", "A", "SELL", D("1"), D("1"), "B", 1, 0.5, 0)
    with pytest.raises(decimal.Inexact):
        codec.encode(replace(order, price=D("0.0000000000000000001")))
    with pytest.raises(ValueError, match="precision"):
        codec.encode(replace(order, quantity=D("1" * 21 + "." + "1" * 18)))  # 39 digits


def test_a_plain_field_out_of_its_range_or_its_symbols_is_refused_naming_it():
    record = AdlIndicator("BTCUSDT", "A", "LONG", 5, 1, 1, 0.5, 0)
    with pytest.raises(ValueError, match="rank: 2147483648 is out of range for an Avro int"):
        codec.encode(replace(record, rank=2**31))
    with pytest.raises(ValueError, match="side: 'FLAT' is not one of"):
        codec.encode(replace(record, side="FLAT"))
