"""Exact decimal arithmetic for money and quantities.

Decision (README, "Exact arithmetic"): the engine computes with :class:`decimal.Decimal` in a context
of 80 significant digits that *traps* ``Inexact``. Wire values are ``decimal(38, 18)``, so a
product of two of them has at most 76 digits and every sum, difference and product the engine
makes is exact; were one ever to round, the engine raises instead of silently losing money.

The one division the engine makes (the cost basis removed when a position is partly reduced)
rounds explicitly, half-even, to :data:`COST_EXPONENT` in :func:`prorate_units`, and the remaining cost
is computed by subtraction, so money is conserved to the last digit.

The book holds its exact values as *scaled integers* (README, "Lean positions"): a quantity as an
integer number of 1e-18 (:data:`QUANTITY_SCALE`, the wire's scale), a cost basis, a wallet balance
and realized PnL as integer numbers of 1e-36 (:data:`MONEY_SCALE`: a product of two wire values).
A Python integer is a third of a ``Decimal`` object, and every value of the book is exactly one of
these integers (inputs have at most 18 places, :func:`to_units` refuses more); :func:`of_units`
gives the ``Decimal`` back wherever the engine reports or compares one.
"""

from __future__ import annotations

import decimal
from decimal import Decimal

#: The engine's arithmetic context: wide enough that no sum or product of wire values rounds.
EXACT = decimal.Context(
    prec=80,
    rounding=decimal.ROUND_HALF_EVEN,
    traps=[decimal.InvalidOperation, decimal.DivisionByZero, decimal.Overflow, decimal.Inexact],
)
_ROUNDING = decimal.Context(prec=80, rounding=decimal.ROUND_HALF_EVEN, traps=[decimal.InvalidOperation])

#: Precision and scale of every decimal on the wire (see schemas/*.avsc).
WIRE_PRECISION = 38
WIRE_SCALE = 18
#: Largest magnitude a wire decimal may hold.
WIRE_LIMIT = Decimal(10) ** (WIRE_PRECISION - WIRE_SCALE)
#: Cost basis (quantity x price) is kept to twice the wire scale.
COST_EXPONENT = Decimal(1).scaleb(-2 * WIRE_SCALE)

ZERO = Decimal(0)

#: Places of a quantity in the book (integer units of 1e-18), and of money (units of 1e-36).
QUANTITY_SCALE = 18
MONEY_SCALE = 2 * QUANTITY_SCALE
QUANTITY_UNIT = 10**QUANTITY_SCALE
MONEY_UNIT = 10**MONEY_SCALE
_POWERS = {QUANTITY_SCALE: Decimal(QUANTITY_UNIT), MONEY_SCALE: Decimal(MONEY_UNIT)}


def to_units(value: Decimal, scale: int) -> int:
    """``value * 10**scale`` as an integer; ValueError if ``value`` has more than ``scale`` places."""
    scaled = value.scaleb(scale, EXACT)
    units = int(scaled)
    if units != scaled:
        raise ValueError(f"{value} has more than {scale} decimal places")
    return units


def of_units(units: int, scale: int) -> Decimal:
    """The exact ``Decimal`` of ``units * 10**-scale``, without trailing zeros (``1.5``, ``100``)."""
    return EXACT.divide(Decimal(units), _POWERS[scale]) if units else ZERO


def prorate_units(total: int, part: int, whole: int) -> int:
    """``total * part / whole`` (``0 < part <= whole``) rounded half-even to an integer: on money
    units, the cost share rounded to :data:`COST_EXPONENT` (the only rounding step). It rounds the
    exact quotient once (the ``Decimal`` form it replaced rounded to 80 digits first, which gave the
    same result whenever the digits of ``total`` and ``whole`` summed to 80 or fewer)."""
    if part == whole:
        return total
    quotient, remainder = divmod(total * part, whole)
    twice = 2 * remainder
    if twice > whole or (twice == whole and quotient & 1):
        quotient += 1
    return quotient


_INTS: list[int] = list(range(1024))


def shared_int(n: int) -> int:
    """The one ``int`` object of value ``n >= 0`` that every index row and account slot holds
    (README, "Lean positions"): beyond 256 each Python integer is an object of 32 B, and a position
    keeps its row, an account map its slot; the same row of every side and the same slot of every
    asset share one object instead of one each. A cache of immutable values: nothing else."""
    ints = _INTS
    if n >= len(ints):
        ints.extend(range(len(ints), n + n // 4 + 1024))
    return ints[n]


def shared_ints(start: int, end: int) -> list[int]:
    """:func:`shared_int` of ``start`` to ``end - 1``, in one slice."""
    shared_int(end)
    return _INTS[start:end]


def rounded_to_wire(value: Decimal) -> Decimal:
    """``value`` rounded half-even to the wire scale: for a figure that is a product of wire values
    and only reported (a decision's total haircut), never for a quantity or a balance."""
    return value.quantize(Decimal(1).scaleb(-WIRE_SCALE), context=_ROUNDING)


def to_wire(value: Decimal) -> Decimal:
    """Express ``value`` at the wire scale; raises ``decimal.Inexact`` if that would round."""
    return value.quantize(Decimal(1).scaleb(-WIRE_SCALE), context=EXACT)
