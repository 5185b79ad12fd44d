"""Positions: signed quantity and cost basis per (account, symbol), changed by fills (SPEC §1).

A position keeps its *cost basis* ``cost = sum(signed qty x price)`` of the open quantity instead of
a rounded entry price, so ``entry_price = cost / qty`` and ``upnl = qty x mark - cost`` are exact.
Reducing a position removes the pro-rata share of the cost (the one rounding, see
:func:`adl_stream.engine.numbers.prorate_units`); realized PnL is ``closed x fill price`` minus that share,
signed by the position's side.
"""

from __future__ import annotations

from decimal import Decimal

from .numbers import MONEY_SCALE, QUANTITY_SCALE, ZERO, of_units, prorate_units, to_units


class Position:
    """One open position. The exact values are scaled integers (:mod:`.numbers`): ``q`` the signed
    quantity in units of 1e-18, ``c`` the signed cost basis in units of 1e-36; ``quantity`` and
    ``cost`` give them as ``Decimal``. Seven slots and two integers: no dict, no ``Decimal`` held (the
    side it is indexed on is the side whose row ``row`` holds it, :mod:`.index`)."""

    __slots__ = ("account_id", "symbol", "q", "c", "reserved", "row", "light")

    def __init__(self, account_id: str, symbol: str, quantity: Decimal = ZERO, cost: Decimal = ZERO,
                 reserved: Decimal = ZERO) -> None:
        self.account_id = account_id
        self.symbol = symbol
        self.q = to_units(quantity, QUANTITY_SCALE) if quantity else 0
        """Signed quantity in units of 1e-18: long > 0, short < 0."""
        self.c = to_units(cost, MONEY_SCALE) if cost else 0
        """Signed cost basis of the open quantity in units of 1e-36 (same sign as ``q``)."""
        self.reserved = reserved
        """Quantity held by ADL orders emitted and not yet filled or expired."""
        self.row = -1
        """Its row in the ranking index (:mod:`.index`), -1 when not indexed."""
        self.light = 0
        """The last ADL indicator light published for it (:mod:`.indicators`): + long, - short, 0 none."""

    def __repr__(self) -> str:
        return (f"Position(account_id={self.account_id!r}, symbol={self.symbol!r}, quantity={self.quantity}, "
                f"cost={self.cost}, reserved={self.reserved})")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Position):
            return NotImplemented
        return ((self.account_id, self.symbol, self.q, self.c, self.reserved)
                == (other.account_id, other.symbol, other.q, other.c, other.reserved))

    __hash__ = None  # type: ignore[assignment]  # mutable, compared by value (as the dataclass was)

    @property
    def quantity(self) -> Decimal:
        """Signed: long > 0, short < 0."""
        return of_units(self.q, QUANTITY_SCALE)

    @quantity.setter
    def quantity(self, value: Decimal) -> None:
        self.q = to_units(value, QUANTITY_SCALE)

    @property
    def cost(self) -> Decimal:
        """Signed cost basis of the open quantity (same sign as ``quantity``)."""
        return of_units(self.c, MONEY_SCALE)

    @cost.setter
    def cost(self, value: Decimal) -> None:
        self.c = to_units(value, MONEY_SCALE)

    @property
    def entry_price(self) -> Decimal:
        return self.cost / self.quantity if self.q else ZERO

    @property
    def free(self) -> Decimal:
        """Quantity that a new ADL order may still take (never negative)."""
        free = of_units(abs(self.q), QUANTITY_SCALE) - self.reserved
        return free if free > ZERO else ZERO

    def upnl(self, mark: Decimal) -> Decimal:
        return self.quantity * mark - self.cost

    def apply_fill(self, signed_quantity: Decimal, price: Decimal) -> Decimal:
        """Apply a fill of ``signed_quantity`` (BUY > 0) at ``price``; return the realized PnL."""
        return of_units(self.apply_units(to_units(signed_quantity, QUANTITY_SCALE), to_units(price, QUANTITY_SCALE)),
                        MONEY_SCALE)

    def apply_units(self, signed: int, price: int) -> int:
        """:meth:`apply_fill` in units: ``signed`` quantity and ``price`` in 1e-18, the realized PnL
        returned in 1e-36. Reducing removes the pro-rata share of the cost, rounded half-even
        (:func:`.numbers.prorate_units`), the one rounding; what stays is the rest of the cost."""
        q = self.q
        if q == 0 or (q > 0) == (signed > 0):
            self.q = q + signed
            self.c += signed * price
            return 0
        open_abs, fill_abs = abs(q), abs(signed)
        closed = open_abs if open_abs < fill_abs else fill_abs
        removed_cost = prorate_units(self.c, closed, open_abs)
        realized = (closed * price if q > 0 else -closed * price) - removed_cost
        self.q = q = q + signed
        if fill_abs > open_abs:  # crosses zero: the remainder opens at the fill price
            self.c = q * price
        else:
            self.c -= removed_cost
        return realized


_new_position = object.__new__


def _restored(account_id: str, symbol: str, q: int, c: int) -> Position:
    """A position from its exact values in units, nothing reserved (a restore's bulk load: one
    plain call a position)."""
    position = _new_position(Position)
    position.account_id, position.symbol, position.q, position.c = account_id, symbol, q, c
    position.reserved, position.row, position.light = ZERO, -1, 0
    return position


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

    def load(self, symbols: list[str], accounts: list[str], q: list[int],
             c: list[int]) -> tuple[list[Position], list[int] | None]:
        """Add positions, row ``i`` being ``(symbols[i], accounts[i]) -> (q[i], c[i])`` (exact
        values in units), to a book that holds none of them (a restore). Returns the positions made
        and None, or, when a key repeats (a later row overrides an earlier one, as in a dict), the
        positions the book kept and their rows."""
        by_symbol = self._by_symbol
        loaded = list(map(_restored, accounts, symbols, q, c))
        distinct = dict.fromkeys(symbols)
        held = 0
        for symbol in distinct:
            in_symbol = by_symbol.get(symbol)
            if in_symbol is None:
                in_symbol = by_symbol[symbol] = {}
            held += len(in_symbol)
        if len(distinct) == 1:  # (one symbol: one dict update)
            by_symbol[symbols[0]].update(zip(accounts, loaded))
        else:
            for symbol, account, position in zip(symbols, accounts, loaded):
                by_symbol[symbol][account] = position
        if sum(len(by_symbol[symbol]) for symbol in distinct) - held == len(loaded):
            return loaded, None
        row_of = {id(position): row for row, position in enumerate(loaded)}
        kept = [position for symbol in distinct for position in by_symbol[symbol].values() if id(position) in row_of]
        return kept, [row_of[id(position)] for position in kept]

    def discard_if_idle(self, position: Position) -> None:
        """Forget a flat position that no reservation holds."""
        if position.q or position.reserved != ZERO:
            return
        in_symbol = self._by_symbol.get(position.symbol, {})
        # Identity, not key: a reservation may outlive its (already forgotten) position, and the
        # account may since hold a new position in the symbol that must stay.
        if in_symbol.get(position.account_id) is position:
            del in_symbol[position.account_id]

    def in_symbol(self, symbol: str):
        return self._by_symbol.get(symbol, {}).values()

    def by_account(self, symbol: str) -> dict[str, Position]:
        """The positions in ``symbol`` by account, as the book holds them (read it, do not change it)."""
        return self._by_symbol.get(symbol) or {}

    def of_account(self, account_id: str):
        """The account's positions, by symbol in the order symbols were first seen."""
        for positions in self._by_symbol.values():
            position = positions.get(account_id)
            if position is not None:
                yield position

    def __iter__(self):
        for positions in self._by_symbol.values():
            yield from positions.values()
