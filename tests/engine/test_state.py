"""The engine's state as changelog entities: restoring what was taken gives the same engine."""

from decimal import Decimal as D

from hypothesis import given
from hypothesis import strategies as st

from adl_stream.engine import BalanceUpdate, Engine, Fill, Rejected
from adl_stream.engine.state import count, gather, keys, restore, take_changes, weight
from tests import scenarios as sc
from tests.engine.test_properties import _run_market, markets
from tests.market import generate


def _applied(market, **options) -> list:
    """Every record ``_run_market`` applies (it sizes shortfalls from the state as it goes)."""
    engine, applied = Engine(sc.SYMBOLS, **options), []
    apply = engine.apply

    def recording(record):
        applied.append(record)
        return apply(record)

    engine.apply = recording
    _run_market(engine, *market)
    return applied


def _apply(engine, record):
    """(outcome, or the rejection's reason) of applying ``record``."""
    try:
        outcome = engine.apply(record)
    except Rejected as rejected:
        return rejected.reason
    return (outcome.orders, outcome.decision, [r.order_id for r in outcome.expired], outcome.duplicate, outcome.stale)


def _log_through(engine, records, take_every: set[int]) -> dict:
    """Apply ``records``, taking the changes after the indices in ``take_every`` and at the end; the
    resulting key -> value log, as a compacted changelog holds it."""
    log = {}

    def take():
        for key, value in take_changes(engine):
            if value is None:
                log.pop(key, None)
            else:
                log[key] = value

    for i, record in enumerate(records):
        _apply(engine, record)
        if i in take_every:
            take()
    take()
    return log


# Short windows, so that ids are evicted and reservations expire within the drawn markets.
OPTIONS = dict(reservation_timeout_ms=25, dedup_window_ms=40)


@given(markets(), st.data())
def test_a_restored_engine_equals_the_original_and_decides_the_rest_alike(market, data):
    records = _applied(market, **OPTIONS)
    cut = data.draw(st.integers(0, len(records)))
    takes = data.draw(st.sets(st.integers(0, max(0, cut - 1))))
    original = Engine(sc.SYMBOLS, **OPTIONS)
    log = _log_through(original, records[:cut], takes)
    restored = Engine(sc.SYMBOLS, **OPTIONS)
    restore(restored, log)
    assert restored.snapshot() == original.snapshot()
    for record in records[cut:]:
        assert _apply(restored, record) == _apply(original, record)
    assert restored.snapshot() == original.snapshot()


@given(markets(), st.data())
def test_count_is_the_number_of_keys_at_any_point(market, data):
    """The snapshot cadence weighs the state with count(), never listing it: the two must agree
    (positions, wallets, funds, marks, reservations, id parts, lights, stream time)."""
    records = _applied(market, **OPTIONS)
    engine = Engine(sc.SYMBOLS, **OPTIONS)
    for record in records[:data.draw(st.integers(0, len(records)))]:
        _apply(engine, record)
        engine.seen.take()
    assert count(engine) == len(keys(engine))
    # what the cadence weighs the state at is what a snapshot of it holds (a part of ids as its ids)
    assert weight(engine) == gather(engine, keys(engine)).weight() == count(engine) + sum(
        len(ids) - 1 for ids in gather(engine, keys(engine)).seen.values())


def test_count_includes_lights_and_closed_positions_still_unlit():
    lit = Engine(sc.SYMBOLS, indicator_interval_ms=200, **OPTIONS)  # lights, and closed ones still unlit
    for record in generate(seed=5, trades=400).records:
        _apply(lit, record)
    kinds = {key[0] for key in keys(lit)}
    assert {"p", "w", "l", "r", "m"} <= kinds and count(lit) == len(keys(lit))


def test_the_crash_market_restores_from_its_changes_at_any_commit_interval():
    market = generate(seed=11, trades=3000)
    for every in (1, 10, 97, 5000):
        engine = Engine(sc.SYMBOLS)
        log = _log_through(engine, market.records, set(range(0, len(market.records), every)))
        restored = Engine(sc.SYMBOLS)
        restore(restored, log)
        assert restored.snapshot() == market.engine.snapshot()
        # Closed positions are tombstoned, not kept: the log holds exactly the live entities.
        assert sum(1 for key in log if key[0] == "p") == len(market.engine.book)


def test_a_wallet_is_written_when_a_fill_changes_it_and_only_then():
    """An opening fill without a fee leaves a wallet as it was: the changelog does not hold it
    again (a restore of a book once read 1.43M wallet rows for 1M wallets); a fee, a realised PnL
    or the first fill of an account without a balance (it makes the wallet) is written."""
    def written(engine, record):
        engine.apply(record)
        return {key for key, _ in take_changes(engine) if key[0] == "w"}

    engine = Engine(sc.SYMBOLS)
    assert written(engine, BalanceUpdate("S1", "USDT", D(100), 1_000)) == {("w", "S1", "USDT")}
    assert written(engine, sc.fill("f1", "S1", "SELL", 4, 120, 2_000)) == set()  # opened, no fee
    with_fee = Fill("f2", "S1", "BTCUSDT", "SELL", D(1), D(120), D("0.5"), "TRADE", None, 2_001)
    assert written(engine, with_fee) == {("w", "S1", "USDT")}
    assert written(engine, sc.fill("f3", "S1", "BUY", 1, 110, 2_002)) == {("w", "S1", "USDT")}  # realised 10
    assert written(engine, sc.fill("f4", "B", "BUY", 1, 100, 2_003)) == {("w", "B", "USDT")}  # a new wallet
    assert written(engine, sc.fill("f5", "B", "BUY", 1, 100, 2_004)) == set()
    accounts = engine.wallets.accounts("USDT")
    assert accounts.units[accounts.slot_of["S1"]] == (D(100) - D("0.5") + D(10)) * 10**36


def test_restore_refuses_an_engine_that_has_state():
    engine = Engine(sc.SYMBOLS)
    engine.apply(sc.SETUP[0])
    try:
        restore(engine, {})
    except ValueError as error:
        assert "fresh engine" in str(error)
    else:
        raise AssertionError("restore into a used engine must fail")
