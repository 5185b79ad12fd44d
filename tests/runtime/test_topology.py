"""Routing records to settle assets and settle assets to tasks; the changelog's transaction fold."""

from decimal import Decimal as D

import pytest

from adl_stream.engine import BalanceUpdate, Fill, FundFlow, MarkPrice
from adl_stream.runtime.changelog import (
    COMMIT_KEY,
    TXN_HEADER,
    decode_entity,
    encode_entity,
    encode_marker,
    fold,
)
from adl_stream.runtime.topology import UNROUTED, Topology, task_of
from tests.market import symbols_of

SYMBOLS = {**symbols_of("USDT"), **symbols_of("USDC")}


def test_every_settle_asset_has_one_task_stable_across_runs_and_unrouted_records_go_to_task_0():
    topology = Topology(SYMBOLS, 2)
    assert topology.assets_of_task == {0: [UNROUTED, "USDC"], 1: ["USDT"]}  # CRC-32 of the name
    assert task_of("USDT", 2) == 1 and task_of(UNROUTED, 7) == 0
    for tasks in range(1, 9):
        owned = [a for assets in Topology(SYMBOLS, tasks).assets_of_task.values() for a in assets]
        assert sorted(owned) == sorted([UNROUTED, "USDT", "USDC"])
    with pytest.raises(ValueError):
        Topology(SYMBOLS, 0)


def test_records_route_by_their_key_or_for_balances_by_their_asset():
    topology = Topology(SYMBOLS, 3)
    assert topology.asset_of_key(False, b"ETHUSDC") == "USDC"
    assert topology.asset_of_key(True, b"USDT-ALT") == "USDT"  # a fund belongs to its symbols' asset
    assert topology.asset_of_key(False, b"DOGEUSDT") == UNROUTED
    assert topology.asset_of_key(False, None) == UNROUTED
    assert topology.asset_of_key(False, b"\xff") == UNROUTED
    assert topology.asset_of_record(BalanceUpdate("A", "USDC", D(1), 1)) == "USDC"
    assert topology.asset_of_record(BalanceUpdate("A", "EUR", D(1), 1)) == UNROUTED
    assert topology.asset_of_record(FundFlow("x", "USDC-ALT", "DEPOSIT", D(1), 1)) == "USDC"
    assert topology.asset_of_record(MarkPrice("BTCUSDT", D(1), 1)) == "USDT"
    assert topology.asset_of_record(Fill("f", "A", "XRPUSDT", "BUY", D(1), D(1), D(0), "TRADE", None, 1)) == UNROUTED


class Message:
    """What fold() reads of a consumed changelog message."""

    def __init__(self, key: bytes, value: bytes | None, txn: str, headers=(), partition: int = 0) -> None:
        self._key, self._value, self._headers = key, value, [(TXN_HEADER, txn.encode()), *headers]
        self._partition = partition

    def partition(self):
        return self._partition

    def key(self):
        return self._key

    def value(self):
        return self._value

    def headers(self):
        return self._headers


def _entity(asset, key, value, txn):
    return Message(*encode_entity(asset, key, value), txn)


def test_entities_round_trip_exactly():
    for key, value in [(("p", "BTCUSDT", "A"), (D("1.5"), D("-150.25"))),
                       (("w", "A", "USDT"), (D("10.000000000000000001"), 7, ((8, D("-1")), (9, D("2.5"))))),
                       (("f", "USDT"), D("0")), (("m", "BTCUSDT"), (D("99.5"), 12)),
                       (("r", "E1:1", "A"), ("BTCUSDT", D("0.3"), 99)), (("s", "f1"), 5), (("t",), 42)]:
        raw_key, raw_value = encode_entity("USDT", key, value)
        assert decode_entity(raw_key, raw_value) == ("USDT", key, value)


def test_fold_applies_a_transaction_only_at_its_own_marker():
    marker = encode_marker({"USDT": {("fills", 0): 10}})
    later = encode_marker({"USDT": {("fills", 0): 20}})
    restored = fold([
        _entity("USDT", ("f", "USDT"), D(5), "t1"),
        _entity("USDT", ("m", "BTCUSDT"), (D(100), 1), "t1"),
        Message(COMMIT_KEY, marker, "t1"),
        _entity("USDT", ("f", "USDT"), D(999), "t2"),  # a transaction cut short (aborted, shown by Tansu)
        _entity("USDT", ("m", "BTCUSDT"), None, "t3"),  # a tombstone, then the marker of its transaction
        _entity("USDT", ("f", "USDT"), D(7), "t3"),
        Message(COMMIT_KEY, later, "t3"),
        _entity("USDT", ("f", "USDT"), D(1), "t4"),  # after the last marker: not committed
    ])
    assert restored.entities["USDT"].keys() == [("f", "USDT")] and restored.entities["USDT"].funds == {"USDT": D(7)}
    assert restored.offsets == {"USDT": {("fills", 0): 20}}
    assert (restored.records, restored.discarded) == (8, 2)
