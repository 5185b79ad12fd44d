"""The fill checks on integer units agree with the same checks in Decimal, for any value."""

import decimal
from decimal import Decimal as D

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adl_stream.engine import Fill, Rejected
from adl_stream.engine.numbers import EXACT
from adl_stream.engine.symbols import SymbolSpec
from adl_stream.engine.validation import _check_fill_exactly, check_fill

# up to 20 places (more than the wire's 18: the Decimal way), zero and negatives included
values = st.decimals(min_value=D("-1000"), max_value=D("100000"), places=20, allow_nan=False,
                     allow_infinity=False) | st.sampled_from([D(0), D("0.001"), D("0.0015"), D("90000.5"), D("1E-18")])
steps = st.none() | st.sampled_from([D("0.001"), D("0.5"), D(1), D("0.1"), D("1E-18"), D("1E-19"), D("2.5")])


def _outcome(check, fill, spec):
    """What ``check`` says, in the engine's context (EXACT: a Decimal remainder may trap there)."""
    try:
        with decimal.localcontext(EXACT):
            return ("ok", check(fill, spec))
    except Rejected as rejected:
        return ("rejected", rejected.reason, rejected.detail)


@given(quantity=values, price=values, fee=values, lot=steps, tick=steps, adl=st.booleans(), order=st.booleans())
def test_check_fill_on_units_decides_as_in_decimal(quantity, price, fee, lot, tick, adl, order):
    spec = SymbolSpec("BTCUSDT", "USDT", "USDT", lot, tick)
    fill = Fill("f", "a", "BTCUSDT", "BUY", quantity, price, fee, "ADL" if adl else "TRADE",
                "E:1" if order else None, 5)
    fast = _outcome(lambda f, s: check_fill(f, {"BTCUSDT": s}), fill, spec)
    exact = _outcome(_check_fill_exactly, fill, spec)
    assert fast == exact


def test_an_off_grid_quantity_is_refused_naming_the_lot():
    spec = SymbolSpec("BTCUSDT", "USDT", "USDT", D("0.001"), D("0.1"))
    with pytest.raises(Rejected, match=r"quantity 0.0015 is not a multiple of 0.001 for BTCUSDT"):
        check_fill(Fill("f", "a", "BTCUSDT", "BUY", D("0.0015"), D(1), D(0), "TRADE", None, 5), {"BTCUSDT": spec})
    with pytest.raises(Rejected, match=r"price 1.05 is not a multiple of 0.1 for BTCUSDT"):
        check_fill(Fill("f", "a", "BTCUSDT", "BUY", D("0.002"), D("1.05"), D(0), "TRADE", None, 5), {"BTCUSDT": spec})


def _units_or_error(convert, value):
    try:
        return ("units", convert(value))
    except (ValueError, OverflowError, decimal.InvalidOperation) as error:
        return ("error", type(error))


@given(st.lists(values | st.sampled_from([D("NaN"), D("sNaN"), D("Infinity"), D("1.000"), D("1"), D("-0")]),
                max_size=40), st.integers(min_value=1, max_value=8))
def test_the_kept_units_of_a_value_are_its_units(held, kept):
    """The units check_fill keeps per value are to_units of it: for repeats, for equal values of other
    exponents (1 and 1.000), after the cache starts afresh, and a NaN refused as before."""
    from adl_stream.engine import validation
    from adl_stream.engine.numbers import QUANTITY_SCALE, to_units

    saved, validation.UNITS_KEPT = validation.UNITS_KEPT, kept
    validation._UNITS.clear()
    try:
        for value in held + [EXACT.add(v, D("0.000")) for v in held if v.is_finite()]:
            with decimal.localcontext(EXACT):
                assert _units_or_error(validation._units, value) == _units_or_error(
                    lambda v: to_units(v, QUANTITY_SCALE), value)
            assert len(validation._UNITS) <= kept
    finally:
        validation.UNITS_KEPT = saved
        validation._UNITS.clear()
