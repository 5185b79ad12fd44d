"""Reservations: quantity held on a position by an emitted, not yet filled ADL order (SPEC §3.4).

Each ADL order reserves its quantity on both sides it closes: the counterparty's position and the
bankrupt position. A fill with ``kind=ADL`` and that ``adl_order_id`` on the same account releases
the reservation by the filled quantity; otherwise it expires once stream (event) time passes
``expires_at``.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from .numbers import ZERO
from .positions import Position


@dataclass(slots=True)
class Reservation:
    order_id: str
    position: Position
    quantity: Decimal
    expires_at: int


def _ignore(position: Position) -> None:
    pass


class ReservationBook:
    """Open reservations; ``on_change(position)`` is told of every change of a position's ``reserved``."""

    __slots__ = ("_open", "_expiry", "_on_change")

    def __init__(self, on_change: Callable[[Position], None] = _ignore) -> None:
        self._open: dict[tuple[str, str], Reservation] = {}
        self._expiry: list[tuple[int, str, str]] = []
        self._on_change = on_change

    def __len__(self) -> int:
        return len(self._open)

    def __iter__(self):
        return iter(self._open.values())

    def get(self, order_id: str, account_id: str) -> Reservation | None:
        return self._open.get((order_id, account_id))

    def reserve(self, order_id: str, position: Position, quantity: Decimal, expires_at: int) -> None:
        key = (order_id, position.account_id)
        self._open[key] = Reservation(order_id, position, quantity, expires_at)
        position.reserved += quantity
        self._on_change(position)
        heapq.heappush(self._expiry, (expires_at, order_id, position.account_id))

    def release(self, order_id: str, account_id: str, quantity: Decimal) -> Reservation | None:
        """Release up to ``quantity`` of the reservation; return it if it exists."""
        reservation = self._open.get((order_id, account_id))
        if reservation is None:
            return None
        taken = min(quantity, reservation.quantity)
        reservation.quantity -= taken
        reservation.position.reserved -= taken
        self._on_change(reservation.position)
        if reservation.quantity == ZERO:
            del self._open[(order_id, account_id)]
        return reservation

    def expire(self, now: int) -> list[Reservation]:
        """Drop and return the reservations whose ``expires_at`` <= ``now``."""
        expired = []
        while self._expiry and self._expiry[0][0] <= now:
            _, order_id, account_id = heapq.heappop(self._expiry)
            reservation = self._open.pop((order_id, account_id), None)
            if reservation is not None:
                reservation.position.reserved -= reservation.quantity
                self._on_change(reservation.position)
                expired.append(reservation)
        return expired
