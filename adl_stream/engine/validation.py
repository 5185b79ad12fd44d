"""Field checks that turn a bad input record into a dead-letter reason (SPEC §4, last point).

Each ``check_*`` raises :class:`Rejected` with a stable reason code and a detail naming the field;
a record that passes may still be rejected by the engine for what the *state* says (e.g. a
shortfall for a position it does not hold).
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

from .errors import Rejected
from .numbers import QUANTITY_SCALE, QUANTITY_UNIT, ZERO, to_units
from .records import ADL, BalanceUpdate, Fill, FundFlow, LiquidationShortfall, MarkPrice
from .symbols import SymbolSpec


def _spec(symbols: Mapping[str, SymbolSpec], symbol: str) -> SymbolSpec:
    spec = symbols.get(symbol)
    if spec is None:
        raise Rejected("unknown_symbol", f"symbol {symbol!r} is not declared in [symbols]")
    return spec


def _positive(name: str, value: Decimal, reason: str) -> None:
    if value <= ZERO:
        raise Rejected(reason, f"{name} must be > 0, got {value}")


def _on_grid(name: str, value: Decimal, step: Decimal | None, symbol: str) -> None:
    if step is not None and value % step != ZERO:
        raise Rejected("off_grid", f"{name} {value} is not a multiple of {step} for {symbol}")


def units(name: str, value: Decimal, reason: str) -> int:
    """``value`` in the book's integer units of 1e-18 (:mod:`.numbers`); Rejected with ``reason``
    when it has more places than the wire's scale (18: no Avro record can carry one)."""
    try:
        return to_units(value, QUANTITY_SCALE)
    except ValueError:
        raise Rejected(reason, f"{name} {value} has more than {QUANTITY_SCALE} decimal places "
                               f"(the wire's scale)") from None


_GRIDS: dict[int, tuple[SymbolSpec, int | None, int | None]] = {}
"""id(spec) -> (spec, lot, tick): the grid in units of 1e-18 (None: unset, or not a whole number of
units, then checked in ``Decimal``). The spec itself is held, so its id is not reused meanwhile."""


def _grid_units(step: Decimal | None) -> int | None:
    if step is None:
        return None
    try:
        units = to_units(step, QUANTITY_SCALE)
    except (ValueError, OverflowError):
        return None
    return units if units > 0 else None


def _grid(spec: SymbolSpec) -> tuple[SymbolSpec, int | None, int | None]:
    grid = _GRIDS.get(id(spec))
    if grid is None or grid[0] is not spec:
        grid = _GRIDS[id(spec)] = (spec, _grid_units(spec.lot_size), _grid_units(spec.tick_size))
    return grid


UNITS_KEPT = 1 << 16
"""Distinct quantities and prices whose units :func:`_units` keeps (a market's repeat: a fill's two
conversions were 5 % of applying it); past that it starts afresh."""
_UNITS: dict[Decimal, int] = {}


def _units(value: Decimal) -> int:
    """``to_units(value, QUANTITY_SCALE)``, kept by value (equal decimals, ``1.0`` and ``1``, have
    equal units: a cache of a pure function, nothing the state or the order of records changes)."""
    try:
        return _UNITS[value]
    except KeyError:
        pass
    except TypeError:  # a signalling NaN is not hashable: to_units says what it is
        return to_units(value, QUANTITY_SCALE)
    units = to_units(value, QUANTITY_SCALE)
    if len(_UNITS) >= UNITS_KEPT:
        _UNITS.clear()
    _UNITS[value] = units
    return units


def check_fill(fill: Fill, symbols: Mapping[str, SymbolSpec]) -> tuple[SymbolSpec, int, int, int]:
    """The fill's symbol, and its quantity and price in units of 1e-18 and fee in units of 1e-36.

    The checks run on the units (integers: a sign and a remainder cost less than in ``Decimal``) when
    quantity and price have at most 18 places, as every decoded record's do; the same checks in the
    same order as :func:`_check_fill_exactly`, which takes any other value."""
    spec = _spec(symbols, fill.symbol)
    try:
        quantity, price = _units(fill.quantity), _units(fill.price)
    except (ValueError, OverflowError):  # more places than the wire's, or not finite
        return _check_fill_exactly(fill, spec)
    if quantity <= 0:
        raise Rejected("invalid_quantity", f"quantity must be > 0, got {fill.quantity}")
    if price <= 0:
        raise Rejected("invalid_price", f"price must be > 0, got {fill.price}")
    _, lot, tick = _grid(spec)
    if lot is not None:
        if quantity % lot:
            raise Rejected("off_grid", f"quantity {fill.quantity} is not a multiple of {spec.lot_size} for {fill.symbol}")
    else:
        _on_grid("quantity", fill.quantity, spec.lot_size, fill.symbol)
    if tick is not None:
        if price % tick:
            raise Rejected("off_grid", f"price {fill.price} is not a multiple of {spec.tick_size} for {fill.symbol}")
    else:
        _on_grid("price", fill.price, spec.tick_size, fill.symbol)
    if (fill.kind == ADL) != (fill.adl_order_id is not None):
        raise Rejected("invalid_adl_fill", "adl_order_id must be set exactly when kind=ADL")
    fee = units("fee", fill.fee, "invalid_amount") * QUANTITY_UNIT if fill.fee else 0
    return spec, quantity, price, fee


def _check_fill_exactly(fill: Fill, spec: SymbolSpec) -> tuple[SymbolSpec, int, int, int]:
    """:func:`check_fill` in ``Decimal``, for any value."""
    _positive("quantity", fill.quantity, "invalid_quantity")
    _positive("price", fill.price, "invalid_price")
    _on_grid("quantity", fill.quantity, spec.lot_size, fill.symbol)
    _on_grid("price", fill.price, spec.tick_size, fill.symbol)
    if (fill.kind == ADL) != (fill.adl_order_id is not None):
        raise Rejected("invalid_adl_fill", "adl_order_id must be set exactly when kind=ADL")
    fee = units("fee", fill.fee, "invalid_amount") * QUANTITY_UNIT if fill.fee else 0
    return (spec, units("quantity", fill.quantity, "invalid_quantity"), units("price", fill.price, "invalid_price"),
            fee)


def check_mark(mark: MarkPrice, symbols: Mapping[str, SymbolSpec]) -> None:
    _spec(symbols, mark.symbol)
    _positive("mark_price", mark.mark_price, "invalid_price")


def check_balance(update: BalanceUpdate, assets: frozenset[str]) -> int:
    """The balance in units of 1e-36."""
    if update.asset not in assets:
        raise Rejected("unknown_asset", f"asset {update.asset!r} settles no declared symbol")
    balance = update.wallet_balance
    return units("wallet_balance", balance, "invalid_amount") * QUANTITY_UNIT if balance else 0


def check_flow(flow: FundFlow, funds: frozenset[str]) -> None:
    if flow.fund_id not in funds:
        raise Rejected("unknown_fund", f"fund {flow.fund_id!r} backs no declared symbol")
    _positive("amount", flow.amount, "invalid_amount")


def check_shortfall(shortfall: LiquidationShortfall, symbols: Mapping[str, SymbolSpec]) -> SymbolSpec:
    spec = _spec(symbols, shortfall.symbol)
    _positive("quantity", shortfall.quantity, "invalid_quantity")
    _positive("bankruptcy_price", shortfall.bankruptcy_price, "invalid_price")
    if shortfall.shortfall < ZERO:
        raise Rejected("invalid_amount", f"shortfall must be >= 0, got {shortfall.shortfall}")
    _on_grid("quantity", shortfall.quantity, spec.lot_size, shortfall.symbol)
    return spec
