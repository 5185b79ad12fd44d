"""Positions: signed quantity and cost basis per (account, symbol), changed by fills (SPEC §1).

A position keeps its *cost basis* ``cost = sum(signed qty x price)`` of the open quantity instead of
a rounded entry price, so ``entry_price = cost / qty`` and ``upnl = qty x mark - cost`` are exact.
Reducing a position removes the pro-rata share of the cost (the one rounding, see
:func:`adl_stream.engine.numbers.prorate`); realized PnL is ``closed x fill price`` minus that share,
signed by the position's side.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from .numbers import ZERO, prorate


@dataclass(slots=True)
class Position:
    account_id: str
    symbol: str
    quantity: Decimal = ZERO
    """Signed: long > 0, short < 0."""
    cost: Decimal = ZERO
    """Signed cost basis of the open quantity (same sign as ``quantity``)."""
    reserved: Decimal = ZERO
    """Quantity held by ADL orders emitted and not yet filled or expired."""
    row: int = field(default=-1, compare=False, repr=False)
    """Its row in the ranking index (:mod:`.index`), -1 when not indexed."""
    indexed_long: bool = field(default=False, compare=False, repr=False)
    """The side it is indexed on."""
    light: int = field(default=0, compare=False, repr=False)
    """The last ADL indicator light published for it (:mod:`.indicators`): + long, - short, 0 none."""

    @property
    def entry_price(self) -> Decimal:
        return self.cost / self.quantity if self.quantity else ZERO

    @property
    def free(self) -> Decimal:
        """Quantity that a new ADL order may still take (never negative)."""
        free = self.quantity.copy_abs() - self.reserved
        return free if free > ZERO else ZERO

    def upnl(self, mark: Decimal) -> Decimal:
        return self.quantity * mark - self.cost

    def apply_fill(self, signed_quantity: Decimal, price: Decimal) -> Decimal:
        """Apply a fill of ``signed_quantity`` (BUY > 0) at ``price``; return the realized PnL."""
        q = self.quantity
        if q == ZERO or (q > ZERO) == (signed_quantity > ZERO):
            self.quantity = q + signed_quantity
            self.cost += signed_quantity * price
            return ZERO
        open_abs, fill_abs = q.copy_abs(), signed_quantity.copy_abs()
        closed = min(open_abs, fill_abs)
        removed_cost = prorate(self.cost, closed, open_abs)
        realized = (closed * price if q > ZERO else -closed * price) - removed_cost
        if fill_abs > open_abs:  # crosses zero: the remainder opens at the fill price
            self.quantity = q + signed_quantity
            self.cost = self.quantity * price
        else:
            self.quantity = q + signed_quantity
            self.cost -= removed_cost
        return realized


class PositionBook:
    """Open positions by symbol, then account. An account's positions across symbols are found by
    asking each symbol (a few dict lookups, only for an exact equity): the ranking index keeps what
    ranking needs per account, so the book keeps no second map."""

    __slots__ = ("_by_symbol",)

    def __init__(self) -> None:
        self._by_symbol: dict[str, dict[str, Position]] = {}

    def __len__(self) -> int:
        return sum(len(positions) for positions in self._by_symbol.values())

    def get(self, account_id: str, symbol: str) -> Position | None:
        in_symbol = self._by_symbol.get(symbol)
        return None if in_symbol is None else in_symbol.get(account_id)

    def open(self, account_id: str, symbol: str) -> Position:
        """The position of ``account_id`` in ``symbol``, created flat if there is none."""
        in_symbol = self._by_symbol.get(symbol)
        if in_symbol is None:
            in_symbol = self._by_symbol[symbol] = {}
        position = in_symbol.get(account_id)
        if position is None:
            position = in_symbol[account_id] = Position(account_id, symbol)
        return position

    def discard_if_idle(self, position: Position) -> None:
        """Forget a flat position that no reservation holds."""
        if position.quantity != ZERO or position.reserved != ZERO:
            return
        in_symbol = self._by_symbol.get(position.symbol, {})
        # Identity, not key: a reservation may outlive its (already forgotten) position, and the
        # account may since hold a new position in the symbol that must stay.
        if in_symbol.get(position.account_id) is position:
            del in_symbol[position.account_id]

    def in_symbol(self, symbol: str):
        return self._by_symbol.get(symbol, {}).values()

    def of_account(self, account_id: str):
        """The account's positions, by symbol in the order symbols were first seen."""
        for positions in self._by_symbol.values():
            position = positions.get(account_id)
            if position is not None:
                yield position

    def __iter__(self):
        for positions in self._by_symbol.values():
            yield from positions.values()
