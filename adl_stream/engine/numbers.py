"""Exact decimal arithmetic for money and quantities.

Decision (README, "Exact arithmetic"): the engine computes with :class:`decimal.Decimal` in a context
of 80 significant digits that *traps* ``Inexact``. Wire values are ``decimal(38, 18)``, so a
product of two of them has at most 76 digits and every sum, difference and product the engine
makes is exact; were one ever to round, the engine raises instead of silently losing money.

The one division the engine makes (the cost basis removed when a position is partly reduced)
rounds explicitly, half-even, to :data:`COST_EXPONENT` in :func:`prorate`, and the remaining cost
is computed by subtraction, so money is conserved to the last digit.
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


def prorate(total: Decimal, part: Decimal, whole: Decimal) -> Decimal:
    """``total * part / whole`` rounded half-even to :data:`COST_EXPONENT` (the only rounding step)."""
    if part == whole:
        return total
    return _ROUNDING.divide(_ROUNDING.multiply(total, part), whole).quantize(
        COST_EXPONENT, context=_ROUNDING
    )


def rounded_to_wire(value: Decimal) -> Decimal:
    """``value`` rounded half-even to the wire scale: for a figure that is a product of wire values
    and only reported (a decision's total haircut), never for a quantity or a balance."""
    return value.quantize(Decimal(1).scaleb(-WIRE_SCALE), context=_ROUNDING)


def to_wire(value: Decimal) -> Decimal:
    """Express ``value`` at the wire scale; raises ``decimal.Inexact`` if that would round."""
    return value.quantize(Decimal(1).scaleb(-WIRE_SCALE), context=EXACT)
