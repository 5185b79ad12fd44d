"""A batch read column by column (``Codec.decode_all``, :mod:`adl_stream.wire.columns`) gives what
``Codec.decode`` gives for each payload alone: the same records (every decimal's digits and exponent
included) and the same refusals (reason and detail), whatever else the batch holds."""

import uuid
from decimal import Decimal as D

from hypothesis import given, settings
from confluent_kafka.schema_registry import Schema as RegistrySchema
from hypothesis import strategies as st

from adl_stream.engine import BalanceUpdate, Fill, FundFlow, LiquidationShortfall, MarkPrice, Rejected
from adl_stream.wire import Codec
from adl_stream.wire.codec import COLUMNS_FROM, HEADER_SIZE
from adl_stream.wire.registry import RegistryCodec, registry_client

codec = Codec()

texts = st.text(max_size=12)
longs = st.integers(-(2**63), 2**63 - 1)
decimals = st.one_of(
    st.decimals(min_value=D("-99999999999999999999.999999999999999999"),
                max_value=D("99999999999999999999.999999999999999999"), places=18,
                allow_nan=False, allow_infinity=False),
    st.sampled_from([D(0), D("0.001"), D(90_000), D("-0.000000000000000001")]),  # repeated values
)
of_type = {
    Fill: st.builds(Fill, texts, texts, texts, st.sampled_from(["BUY", "SELL"]), decimals, decimals, decimals,
              st.sampled_from(["TRADE", "LIQUIDATION", "ADL"]), st.none() | texts, longs),
    BalanceUpdate: st.builds(BalanceUpdate, texts, texts, decimals, longs),
    MarkPrice: st.builds(MarkPrice, texts, decimals, longs),
    FundFlow: st.builds(FundFlow, texts, texts, st.sampled_from(["DEPOSIT", "WITHDRAWAL", "LIQUIDATION_SURPLUS", "FEE_INCOME"]),
              decimals, longs),
    LiquidationShortfall: st.builds(LiquidationShortfall, texts, texts, texts, st.sampled_from(["LONG", "SHORT"]), decimals, decimals,
              decimals, longs),
}


@st.composite
def payloads(draw, record_type):
    """A payload of ``record_type``: well formed, or corrupted the ways the wire can be."""
    record = draw(of_type[record_type])
    payload = codec.encode(record)
    how = draw(st.sampled_from(["as is"] * 6 + ["truncated", "extended", "flipped", "garbage", "other", "none"]))
    if how == "truncated":
        payload = payload[:draw(st.integers(0, len(payload) - 1))]
    elif how == "extended":
        payload += draw(st.binary(min_size=1, max_size=12))
    elif how == "flipped":
        at = draw(st.integers(HEADER_SIZE, len(payload) - 1))
        payload = payload[:at] + bytes([draw(st.integers(0, 255))]) + payload[at + 1:]
    elif how == "garbage":
        payload = payload[:HEADER_SIZE] + draw(st.binary(max_size=80))
    elif how == "other":  # another record type's payload on this topic
        other = draw(st.sampled_from([t for t in of_type if t is not record_type]))
        payload = codec.encode(draw(of_type[other]))
    elif how == "none":
        payload = draw(st.sampled_from([None, b""]))
    return payload


def one_by_one(batch, record_type):
    out = []
    for payload in batch:
        try:
            out.append(codec.decode(payload, record_type))
        except Rejected as rejected:
            out.append(rejected)
    return out


def same(got, expected):
    """Equal records with the same reprs (a Decimal's exponent shows there), or the same refusals."""
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        if isinstance(b, Rejected):
            assert isinstance(a, Rejected) and (a.reason, a.detail) == (b.reason, b.detail)
        else:
            assert type(a) is type(b) and a == b and repr(a) == repr(b)


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(list(of_type)).flatmap(
    lambda t: st.tuples(st.just(t), st.lists(payloads(t), min_size=COLUMNS_FROM, max_size=3 * COLUMNS_FROM))))
def test_a_batch_decodes_as_each_payload_alone(case):
    record_type, batch = case
    same(codec.decode_all(batch, record_type), one_by_one(batch, record_type))


@settings(max_examples=40, deadline=None)
@given(st.lists(payloads(Fill), min_size=1, max_size=COLUMNS_FROM), st.integers(0, 2 * COLUMNS_FROM))
def test_a_record_decodes_alike_whatever_batch_holds_it(neighbours, at):
    """A record's decoding does not depend on the others of its batch (a replay's batches differ)."""
    fill = Fill("f", "a", "BTCUSDT", "BUY", D("0.5"), D(90_000), D(0), "TRADE", None, 1)
    well_formed = [codec.encode(fill)] * (2 * COLUMNS_FROM)
    batch = well_formed[:at] + neighbours + well_formed[at:]
    got = codec.decode_all(batch, Fill)
    same(got, one_by_one(batch, Fill))
    assert all(record == fill for record in got[:at] + got[at + len(neighbours):])


def test_varints_written_longer_than_needed_read_as_the_codec_reads_them():
    """Avro allows a varint with zero continuation bytes (0x81 0x00 is 1): read the same either way;
    one of ten bytes (beyond 63 bits) is the codec's own."""
    fill = Fill("f", "a", "BTCUSDT", "BUY", D("0.5"), D(90_000), D(0), "TRADE", None, 1)
    payload = codec.encode(fill)
    body = payload[HEADER_SIZE:]
    assert body[0] == 2  # the length of "f", zigzag
    padded = payload[:HEADER_SIZE] + b"\x82\x80\x00" + body[1:]
    ten_bytes_ts = payload[:-1] + b"\x82\x80\x80\x80\x80\x80\x80\x80\x80\x00"  # ts 1 in ten bytes
    batch = [payload, padded, ten_bytes_ts] * COLUMNS_FROM
    got = codec.decode_all(batch, Fill)
    same(got, one_by_one(batch, Fill))
    assert got[1] == fill


def test_small_batches_and_other_framings_are_read_one_by_one():
    fill = Fill("f", "a", "BTCUSDT", "BUY", D("0.5"), D(90_000), D(0), "TRADE", None, 1)
    batch = [codec.encode(fill)] * (COLUMNS_FROM - 1) + [b"\x00\x00\x00\x00\x01garbage"]
    same(codec.decode_all(batch, Fill), one_by_one(batch, Fill))


@settings(max_examples=25, deadline=None)
@given(st.lists(payloads(Fill), min_size=COLUMNS_FROM, max_size=2 * COLUMNS_FROM), st.data())
def test_confluent_framing_of_ids_met_is_read_by_columns_as_one_by_one(batch, data):
    """With a schema registry (confluent-kafka's mock:// client): a batch framed with the id of
    adl-stream's own Fill schema, once that id has been met, reads as each payload alone; so do
    payloads of other ids and single-object ones in the same batch."""
    client = registry_client({"url": f"mock://{uuid.uuid4().hex}"})
    own = client.register_schema("fills-value", RegistrySchema(codec.schemas["Fill"].text, "AVRO"))
    other = client.register_schema("marks-value", RegistrySchema(codec.schemas["MarkPrice"].text, "AVRO"))
    registry = RegistryCodec(client, {}, auto_register=False)
    framed = [b"\x00" + data.draw(st.sampled_from([own, own, own, other])).to_bytes(4, "big") + p[HEADER_SIZE:]
              if p and not data.draw(st.booleans()) else p for p in batch]  # (some left single-object)

    def alone(payloads):
        out = []
        for payload in payloads:
            try:
                out.append(registry.decode(payload, Fill))
            except Rejected as rejected:
                out.append(rejected)
        return out

    expected = alone(framed)  # (meets the ids)
    assert any(header.startswith(b"\x00") for header, _, _ in registry._column_readers(Fill)) == any(
        p and p[:5] == b"\x00" + own.to_bytes(4, "big") for p in framed)
    same(registry.decode_all(framed, Fill), expected)
