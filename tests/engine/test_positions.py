import decimal
from decimal import Decimal as D

import pytest

from adl_stream.engine import Engine, Rejected
from adl_stream.engine.numbers import EXACT
from adl_stream.engine.positions import Position, PositionBook
from adl_stream.engine.reservations import ReservationBook
from tests import scenarios as sc


def test_increase_keeps_weighted_entry():
    p = Position("A", "BTCUSDT")
    assert p.apply_fill(D(2), D(100)) == 0
    assert p.apply_fill(D(1), D(130)) == 0
    assert (p.quantity, p.entry_price) == (D(3), D(110))


def test_reduce_realizes_against_entry_long_and_short():
    long = Position("A", "BTCUSDT", D(3), D(330))
    assert long.apply_fill(D(-1), D(120)) == D(10)
    assert (long.quantity, long.entry_price) == (D(2), D(110))
    short = Position("A", "BTCUSDT", D(-2), D(-200))
    assert short.apply_fill(D(1), D(90)) == D(10)
    assert (short.quantity, short.cost) == (D(-1), D(-100))


def test_crossing_zero_closes_and_reopens_at_fill_price():
    p = Position("A", "BTCUSDT", D(2), D(200))
    assert p.apply_fill(D(-5), D(90)) == D(-20)
    assert (p.quantity, p.entry_price) == (D(-3), D(90))


def test_partial_reduce_rounds_only_the_removed_cost_and_conserves_money():
    with decimal.localcontext(EXACT):  # the engine's context (Engine.apply sets it)
        p = Position("A", "BTCUSDT")
        p.apply_fill(D(1), D("100.000000000000000001"))
        p.apply_fill(D(2), D(100))
        realized = p.apply_fill(D(-1), D(100))
        # 1/3 of the cost is not a finite decimal: it is rounded once (to 1e-36), and what was not
        # removed stays in the cost, so realized PnL minus open cost equals the cash, exactly.
        assert p.cost == D("200.000000000000000000666666666666666667")
        assert realized == D("-0.000000000000000000333333333333333333")
        assert realized - p.cost == D(100) - D("300.000000000000000001")


def test_fills_after_the_balance_update_move_the_wallet_fees_included():
    engine = Engine(sc.SYMBOLS)
    engine.apply(sc.BalanceUpdate("A", "USDT", D(1000), 5_000))
    engine.apply(sc.Fill("x1", "A", "BTCUSDT", "BUY", D(1), D(100), D("0.5"), "TRADE", None, 4_000))
    assert engine.wallets.balance("A", "USDT") == D(1000)  # at or before the balance: already in it
    engine.apply(sc.Fill("x2", "A", "BTCUSDT", "SELL", D(1), D(110), D("0.5"), "TRADE", None, 6_000))
    assert engine.wallets.balance("A", "USDT") == D("1009.5")
    assert engine.apply(sc.BalanceUpdate("A", "USDT", D(1), 4_500)).stale  # older than held
    assert engine.wallets.balance("A", "USDT") == D("1009.5")
    # A balance as of 5.5 s arriving after the fill of 6 s: the fill's +9.5 is not in it, so it stays.
    engine.apply(sc.BalanceUpdate("A", "USDT", D(1), 5_500))
    assert engine.wallets.balance("A", "USDT") == D("10.5")
    engine.apply(sc.BalanceUpdate("A", "USDT", D(7), 6_000))
    assert engine.wallets.balance("A", "USDT") == D(7)


def test_older_mark_is_ignored():
    engine = Engine(sc.SYMBOLS)
    engine.apply(sc.MarkPrice("BTCUSDT", D(90), 3_000))
    assert engine.apply(sc.MarkPrice("BTCUSDT", D(80), 2_000)).stale
    assert engine.mark("BTCUSDT") == D(90)


@pytest.mark.parametrize(
    "record, reason",
    [
        (sc.fill("z", "A", "BUY", -1, 100, 1), "invalid_quantity"),
        (sc.fill("z", "A", "BUY", 0, 100, 1), "invalid_quantity"),
        (sc.fill("z", "A", "BUY", 1, 0, 1), "invalid_price"),
        (sc.fill("z", "A", "BUY", 1, -3, 1), "invalid_price"),
        (sc.fill("z", "A", "BUY", 1, 100, 1, symbol="DOGEUSDT"), "unknown_symbol"),
        (sc.fill("z", "A", "BUY", 1, 100, 1, kind="ADL"), "invalid_adl_fill"),
        (sc.MarkPrice("BTCUSDT", D(0), 1), "invalid_price"),
        (sc.BalanceUpdate("A", "EUR", D(1), 1), "unknown_asset"),
        (sc.FundFlow("w", "USDT", "WITHDRAWAL", D("1000.01"), 1), "fund_overdraft"),
        (sc.FundFlow("w", "NOPE", "DEPOSIT", D(1), 1), "unknown_fund"),
        (sc.FundFlow("w", "USDT", "DEPOSIT", D(-1), 1), "invalid_amount"),
        (sc.shortfall("s", "nobody", 1, 90, 10, 1), "unknown_position"),
        (sc.shortfall("s", "B", 1, 90, -10, 1), "invalid_amount"),
    ],
)
def test_bad_input_is_rejected_with_its_reason_and_changes_nothing(record, reason):
    engine = Engine(sc.SYMBOLS)
    for setup in sc.SETUP:
        engine.apply(setup)
    before = engine.snapshot()
    with pytest.raises(Rejected) as info:
        engine.apply(record)
    assert info.value.reason == reason
    after = engine.snapshot()
    before.pop("stream_time"), after.pop("stream_time")
    assert after == before


def test_shortfall_beyond_the_free_quantity_and_wrong_side_are_rejected():
    engine = Engine(sc.SYMBOLS)
    for setup in sc.SETUP:
        engine.apply(setup)
    with pytest.raises(Rejected, match="exceeds_position"):
        engine.apply(sc.shortfall("s", "B", 11, 95, 10, 9_000))
    with pytest.raises(Rejected, match="unknown_position"):
        engine.apply(sc.shortfall("s", "B", 1, 95, 10, 9_000, side="SHORT"))


def test_lot_and_tick_sizes_are_enforced_when_configured():
    symbols = {"BTCUSDT": sc.SymbolSpec("BTCUSDT", "USDT", "USDT", D("0.001"), D("0.1"))}
    engine = Engine(symbols)
    engine.apply(sc.fill("ok", "A", "BUY", "0.002", "100.1", 1))
    for bad in (sc.fill("q", "A", "BUY", "0.0015", "100", 2), sc.fill("p", "A", "BUY", "1", "100.05", 2)):
        with pytest.raises(Rejected, match="off_grid"):
            engine.apply(bad)


def test_late_event_beyond_the_dedup_window_is_rejected():
    engine = Engine(sc.SYMBOLS, dedup_window_ms=1_000)
    engine.apply(sc.fill("a", "A", "BUY", 1, 100, 10_000))
    with pytest.raises(Rejected, match="late_event"):
        engine.apply(sc.fill("b", "A", "BUY", 1, 100, 8_999))
    assert engine.apply(sc.fill("a", "A", "BUY", 1, 100, 10_000)).duplicate


def test_reservations_expiring_together_forget_their_flat_position_once():
    book, reservations = PositionBook(), ReservationBook()
    kept = book.open("B", "BTCUSDT")
    kept.apply_fill(D(1), D(10))
    position = book.open("A", "BTCUSDT")
    reservations.reserve("s1:1", position, D(1), expires_at=100)
    reservations.reserve("s2:1", position, D(2), expires_at=100)
    book.discard_if_idle(position)
    assert book.get("A", "BTCUSDT") is position  # reserved: kept
    expired = reservations.expire(100)
    assert [r.order_id for r in expired] == ["s1:1", "s2:1"]
    for reservation in expired:
        book.discard_if_idle(reservation.position)
    assert list(book) == [kept] and list(book.of_account("A")) == []


def test_a_reservation_outliving_its_position_does_not_forget_the_new_position():
    book, reservations = PositionBook(), ReservationBook()
    old = book.open("A", "BTCUSDT")
    old.apply_fill(D(1), D(10))
    reservations.reserve("s1:1", old, D(1), expires_at=100)
    reservations.release("s1:1", "A", D(1))  # its ADL fill arrived ...
    old.apply_fill(D(-1), D(10))
    book.discard_if_idle(old)  # ... and closed the position: forgotten
    new = book.open("A", "BTCUSDT")
    new.apply_fill(D(-2), D(10))
    for reservation in reservations.expire(100):  # nothing left of s1:1 to expire ...
        book.discard_if_idle(reservation.position)
    book.discard_if_idle(old)  # ... and the stale object, flat and unreserved, must not drop the new one
    assert book.get("A", "BTCUSDT") is new and list(book.of_account("A")) == [new]


def test_the_book_holds_scaled_integers_and_refuses_what_the_wire_cannot_carry():
    """Lean positions: quantity in units of 1e-18, cost and wallet in 1e-36, no Decimal held; a value
    with more places than the wire's 18 is rejected before it changes anything."""
    engine = Engine(sc.SYMBOLS)
    engine.apply(sc.BalanceUpdate("A", "USDT", D("1000.25"), 1_000))
    engine.apply(sc.Fill("x1", "A", "BTCUSDT", "BUY", D("1.5"), D("100.000000000000000001"), D(0), "TRADE", None, 2_000))
    position, wallet = engine.book.get("A", "BTCUSDT"), engine.wallets.get("A", "USDT")
    assert (position.q, position.c) == (15 * 10**17, 150000000000000000001500000000000000000)
    assert (position.quantity, position.cost) == (D("1.5"), D("150.0000000000000000015"))
    assert wallet.units == 100025 * 10**34 and wallet.balance == D("1000.25")  # a copy of the wallet: read again below
    for record, reason in [
        (sc.Fill("x2", "A", "BTCUSDT", "BUY", D("0.0000000000000000001"), D(100), D(0), "TRADE", None, 3_000),
         "invalid_quantity"),
        (sc.Fill("x3", "A", "BTCUSDT", "BUY", D(1), D("100.0000000000000000001"), D(0), "TRADE", None, 3_000),
         "invalid_price"),
        (sc.BalanceUpdate("A", "USDT", D("1.0000000000000000001"), 3_000), "invalid_amount"),
    ]:
        with pytest.raises(Rejected) as info:
            engine.apply(record)
        assert info.value.reason == reason
    wallet = engine.wallets.get("A", "USDT")
    assert (position.q, wallet.units, engine.stream_time) == (15 * 10**17, 100025 * 10**34, 2_000)
