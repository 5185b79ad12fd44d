"""Lean positions (README, "Lean positions"): wallets folded past the lateness horizon, the seen-id
table exact whatever the hashes, one account id object, and the same answers as before."""

from __future__ import annotations

from decimal import Decimal as D

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adl_stream.engine import Engine, Rejected
from adl_stream.engine import dedup
from adl_stream.engine.dedup import SEGMENT_MS, SeenIds
from adl_stream.engine.state import WALLET, restore, take_changes, value_of
from adl_stream.engine.wallets import Wallets
from tests import scenarios as sc

LATENESS = 1_000


def test_a_balance_more_than_the_lateness_bound_behind_is_a_late_event_and_changes_nothing():
    e = Engine(sc.SYMBOLS, dedup_window_ms=10_000, max_lateness_ms=LATENESS)
    e.apply(sc.BalanceUpdate("A", "USDT", D(100), 5_000))
    e.apply(sc.fill("a", "A", "BUY", 1, 100, 10_000))
    assert e.apply(sc.BalanceUpdate("A", "USDT", D(50), 9_000)).stale is False  # exactly the bound: accepted
    before = e.snapshot()
    with pytest.raises(Rejected, match="late_event.*max_event_lateness_ms") as info:
        e.apply(sc.BalanceUpdate("A", "USDT", D(7), 8_999))
    assert info.value.reason == "late_event" and e.snapshot() == before


def test_a_wallet_without_balances_keeps_only_the_fills_a_balance_could_still_reach():
    e = Engine(sc.SYMBOLS, dedup_window_ms=10_000, max_lateness_ms=LATENESS)
    for i in range(200):  # fills every 100 ms, each with a fee: every one moves the wallet
        e.apply(sc.Fill(f"f{i}", "A", "BTCUSDT", "BUY" if i % 2 else "SELL", D(1), D(100), D("0.5"), "TRADE",
                        None, 1_000 + 100 * i))
    wallet = e.wallets.get("A", "USDT")
    horizon = e.stream_time - LATENESS
    assert wallet.balance == D(-100) and all(ts > horizon - 100 for ts, _ in wallet.after)
    assert len(wallet.after) <= LATENESS // 100 + 2  # not 200


_EVENTS = st.lists(
    st.tuples(st.sampled_from(["fill", "balance"]), st.integers(0, 5_000), st.integers(-50, 50)),
    max_size=80,
)


@settings(max_examples=200, deadline=None)
@given(_EVENTS, st.integers(1, 3_000))
def test_folding_changes_no_balance_that_an_accepted_input_can_produce(events, lateness):
    """The same fills and balances into a wallet that folds and one that never does (the rule of
    SPEC §1 as it was): every balance equal, every time; and what the folded one drops is only what
    no balance still accepted can keep."""
    folded, reference, stream_time = Wallets(), Wallets(), -1
    for kind, ts, amount in events:
        horizon = stream_time - lateness
        if kind == "balance":
            if ts < horizon:  # the engine rejects it (late_event) for both
                continue
            assert folded.set_balance("A", "USDT", amount, ts) == reference.set_balance("A", "USDT", amount, ts)
        else:
            if ts < horizon:  # a late fill is rejected too
                continue
            stream_time = max(stream_time, ts)
            assert (folded.apply_fill("A", "USDT", amount, ts, stream_time - lateness)
                    == reference.apply_fill("A", "USDT", amount, ts))
        stream_time = max(stream_time, ts)
        assert folded.balance("A", "USDT") == reference.balance("A", "USDT")
    kept = folded.get("A", "USDT")
    if kept is not None:
        everything = reference.get("A", "USDT").after or []
        assert all(entry in everything for entry in kept.after or [])


def test_a_folded_wallet_restores_as_it_was_written():
    e = Engine(sc.SYMBOLS, dedup_window_ms=10_000, max_lateness_ms=LATENESS)
    log = {}
    for i in range(40):
        e.apply(sc.Fill(f"f{i}", "A", "BTCUSDT", "BUY", D(1), D(100), D("0.25"), "TRADE", None, 1_000 + 300 * i))
        log.update(take_changes(e))
    log = {key: value for key, value in log.items() if value is not None}
    restored = Engine(sc.SYMBOLS, dedup_window_ms=10_000, max_lateness_ms=LATENESS)
    restore(restored, log)
    key = (WALLET, "A", "USDT")
    assert value_of(restored, key) == value_of(e, key) and len(value_of(e, key)[2]) < 40
    assert restored.wallets.get("A", "USDT") == e.wallets.get("A", "USDT")
    late = sc.BalanceUpdate("A", "USDT", D(1_000), e.stream_time - LATENESS)  # the earliest still accepted
    assert restored.apply(late).stale == e.apply(late).stale
    assert restored.wallets.get("A", "USDT") == e.wallets.get("A", "USDT")


def test_one_account_id_object_serves_the_book_the_wallet_and_the_index():
    e = Engine(sc.SYMBOLS)
    first, second = "".join(["A", "1"]), "".join(["A", "1"])  # equal, distinct objects (as decoded records)
    assert first is not second
    e.apply(sc.fill("x", first, "BUY", 1, 100, 1_000))
    e.apply(sc.fill("y", second, "BUY", 1, 100, 1_000, symbol="ETHUSDT"))
    e.index.flush()
    accounts = e.wallets.accounts("USDT")
    canonical = accounts.ids[accounts.slot_of["A1"]]
    assert canonical is first
    assert all(position.account_id is first for position in e.book.of_account("A1"))


# -- the seen ids: exact whatever the hashes ---------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 30), st.integers(0, 8_000)), max_size=120), st.integers(1, 4),
       st.integers(500, 4_000))
def test_the_seen_ids_answer_like_a_set_even_when_every_hash_collides(events, spread, window):
    """With a hash of 1 to 4 values (every id collides with many), membership, adds and eviction
    answer exactly as a set of the ids in their window does."""
    original = dedup.hash if hasattr(dedup, "hash") else None
    dedup.hash = lambda id_: hash(id_) % spread
    try:
        seen, held, now = SeenIds(window), {}, -1
        for n, ts in events:
            id_ = f"id{n}"
            result = seen.add_new(id_, ts, now - window)
            if id_ in held:
                assert result == dedup.DUPLICATE
            elif ts < now - window:
                assert result == dedup.LATE
            else:
                assert result == dedup.ADDED
                held[id_] = ts
            now = max(now, ts)
            seen.evict(now)
            held = {i: t for i, t in held.items() if (t // SEGMENT_MS + 1) * SEGMENT_MS - 1 >= now - window}
            if n % 3 == 0:
                seen.take()
            assert {f"id{k}" for k in range(31) if f"id{k}" in seen} == set(held)
            assert len(seen) == len(held)
    finally:
        if original is None:
            del dedup.hash
        else:
            dedup.hash = original


def test_a_repeated_id_at_another_time_is_still_a_duplicate():
    e = Engine(sc.SYMBOLS)
    e.apply(sc.fill("x", "A", "BUY", 1, 100, 1_000))
    for ts in (1_000, 5_000, 900):  # its own segment, a later one, an earlier one
        assert e.apply(sc.fill("x", "A", "BUY", 1, 100, ts)).duplicate
    assert e.book.get("A", "BTCUSDT").quantity == 1


def test_many_seen_ids_grow_the_table_and_stay_exact():
    seen = SeenIds(window_ms=10**9)
    ids = [f"fill-{i}" for i in range(60_000)]
    for i, id_ in enumerate(ids):
        assert seen.add_new(id_, 1_000 + i, 0) == dedup.ADDED
        if i % 5_000 == 0:
            seen.take()
    assert len(seen._buckets) > 256 and len(seen) == len(ids)
    assert all(id_ in seen for id_ in ids[::97]) and not any(f"other-{i}" in seen for i in range(2_000))
