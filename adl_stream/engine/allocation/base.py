"""What every allocation policy shares (SPEC §3.2-3.3): the request it answers, the allocation it
returns, and the walk of a queue that the queue policies have in common.

An allocation policy answers one question: given the opposite side of a bankrupt position and the
quantity to close, how much does each position give? A *queue* policy only scores positions (a
vectorized ``score`` over the index's columns) and takes ``min(left, free)`` from each in turn; a
*spreading* policy looks at the whole side (:class:`~adl_stream.engine.index.SideView`, in
``pnl-leverage`` queue order) and returns quantities on the symbol's lot grid.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal
from typing import ClassVar, Protocol

import numpy as np

from ..index import Candidate, RankingIndex, SideView
from ..positions import Position
from ..numbers import ZERO

#: The lot of a symbol without ``lot_size``: the wire scale.
FINEST_LOT = Decimal(1).scaleb(-18)
#: Below this many lots a float quantity divided by the lot rounds to the exact whole number.
_EXACT_LOTS = float(1 << 48)


@dataclass(frozen=True, slots=True)
class Request:
    """One ADL to allocate: close ``quantity`` of the bankrupt position against the ``long`` (or
    short) side of ``symbol``, at ``price`` (the bankruptcy price), ranked at ``mark``."""

    index: RankingIndex
    symbol: str
    long: bool
    mark: Decimal
    price: Decimal
    quantity: Decimal
    lot: Decimal
    exact_equity: Callable[[str], Decimal]

    @property
    def haircut_per_unit(self) -> Decimal:
        """What one unit closed costs its holder against the mark (SPEC §3.5): a short buys back at
        the price, a long sells at it."""
        return self.mark - self.price if self.long else self.price - self.mark

    def lots(self, quantity: Decimal) -> int:
        """``quantity`` in whole lots, rounded down."""
        return int((quantity / self.lot).to_integral_value(rounding=ROUND_FLOOR))


@dataclass(frozen=True, slots=True)
class Allocation:
    """What one position gives: ``quantity`` (> 0), with its place ``rank`` in the queue that the
    order id and the order's ``rank`` carry."""

    candidate: Candidate
    rank: int
    quantity: Decimal


class AllocationPolicy(Protocol):
    name: str

    def allocate(self, request: Request) -> list[Allocation]:
        """The positions that give, and how much, by rank."""


class QueuePolicy:
    """A policy that orders the side by its ``score`` and takes ``min(left, free)`` in turn."""

    name: ClassVar[str]

    def score(self, long: bool, notional: np.ndarray, upnl: np.ndarray, cost: np.ndarray,
              equity: np.ndarray) -> np.ndarray:
        """Scores of one side's positions, higher first, from float64 columns: ``notional = |q| * M``,
        ``upnl``, ``cost = |cost basis|`` and the ``equity > 0`` of each position's account, all in
        the same unit (the index's 2**-16 of the settle asset): a score must be made of their ratios."""
        raise NotImplementedError

    def allocate(self, request: Request) -> list[Allocation]:
        left, out = request.quantity, []
        queue = request.index.ranked(request.symbol, request.long, request.mark, request.exact_equity, self.score,
                                     covering=request.quantity)
        for rank, candidate in enumerate(queue, start=1):
            if left == ZERO:
                break
            take = min(left, candidate.position.free)
            out.append(Allocation(candidate, rank, take))
            left -= take
        return out


def choose(mask: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``np.where(mask, a, b)`` for float64, bit for bit, without its branch per element (which a
    random mask mispredicts: four times slower on a side of 500k)."""
    bits = np.negative(mask, dtype=np.int64)  # all ones where mask
    out = np.bitwise_and(a.view(np.int64), bits)
    np.invert(bits, out=bits)
    np.bitwise_and(b.view(np.int64), bits, out=bits)
    np.bitwise_or(out, bits, out=out)
    return out.view(np.float64)


class SpreadPolicy:
    """A policy that spreads the quantity over the whole side, in whole lots (SPEC §3.3)."""

    name: ClassVar[str]

    def lots(self, view: SideView, request: Request, grid: Decimal, free: list[int], quantity: int) -> list[int]:
        """Lots of ``grid`` each position of ``view`` gives (queue order), summing to at most
        ``quantity``, none above its ``free`` lots."""
        raise NotImplementedError

    def room(self, position: Position, request: Request) -> Decimal:
        """The most ``position`` may give in all (its free quantity, unless the policy caps it)."""
        return position.free

    def allocate(self, request: Request) -> list[Allocation]:
        from .pnl_leverage import PnlLeverage  # the queue that orders every spreading policy's orders

        view = request.index.view(request.symbol, request.long, request.mark, request.exact_equity,
                                  PnlLeverage().score)
        if view is None:
            return []
        grid = spreading_grid(view, request)
        free = free_lots(view, request, grid)
        given = self.lots(view, request, grid, free, int(request.quantity // grid))
        out, left = [], request.quantity - sum(given) * grid
        finest = [0] * len(view)
        if left > 0 and grid != request.lot:  # what the coarser grid left, on the symbol's own lots
            for i, position in enumerate(view.positions):
                take = min(request.lots(left), request.lots(self.room(position, request) - given[i] * grid))
                if take > 0:
                    finest[i] = take
                    left -= take * request.lot
                if left < request.lot:
                    break
        for rank, (position, score, lots, fine) in enumerate(zip(view.positions, view.scores.tolist(), given, finest),
                                                             start=1):
            if lots or fine:
                quantity = lots * grid + fine * request.lot
                if quantity > position.free:  # the float-derived lots are checked exactly
                    raise AssertionError(f"{self.name} gave {quantity} of {position.free} free")
                out.append(Allocation(Candidate(position, score, position.quantity.copy_abs() * request.mark),
                                      rank, quantity))
        return out


def spreading_grid(view: SideView, request: Request) -> Decimal:
    """The symbol's lot, or a power of ten of lots coarse enough that every count of lots stays
    exact in float64 (the wire scale's 1e-18 with no ``lot_size``): spreading works on that grid,
    and what it leaves is given on the symbol's lots in queue order."""
    lot, largest = request.lot, max(float(view.free.max()), float(request.quantity))
    while largest / float(lot) >= _EXACT_LOTS:
        lot *= 10
    return lot


def free_lots(view: SideView, request: Request, grid: Decimal) -> list[int]:
    """Each position's free quantity in whole ``grid`` lots, rounded down (exact: from the floats
    where they are whole numbers of lots, from the ``Decimal`` values where not)."""
    lots = view.free / float(grid)
    whole = np.rint(lots)
    if grid == request.lot or np.array_equal(whole, lots):
        return whole.astype(np.int64).tolist()
    return [int(position.free // grid) for position in view.positions]


def exact_shares(quantity: int, weights: list[int], total: int) -> tuple[list[int], np.ndarray]:
    """``floor(quantity * w / total)`` of each whole-number weight, and the remainders
    ``quantity * w mod total`` (in int64 while the products fit, in Python integers beyond)."""
    if quantity * max(weights, default=0) < 1 << 62:
        products = np.asarray(weights, dtype=np.int64) * quantity
        return (products // total).tolist(), products % total
    products = [quantity * w for w in weights]
    return [p // total for p in products], np.array([p % total for p in products], dtype=object)


def largest_remainders(base: list[int], remainders: np.ndarray, room: list[int], extra: int) -> list[int]:
    """Give ``extra`` more lots, one each, to the positions with the largest ``remainders`` that
    have room (``base < room``); ties in queue order (the order of the lists)."""
    if extra <= 0:
        return base
    out = list(base)
    for i in np.argsort(-remainders, kind="stable").tolist():
        if extra == 0:
            break
        if out[i] < room[i]:
            out[i] += 1
            extra -= 1
    return out


def in_queue_order(lots: list[int], free: list[int], quantity: int) -> list[int]:
    """Top ``lots`` up to ``quantity`` in queue order, each position to its ``free``."""
    left = quantity - sum(lots)
    out = list(lots)
    for i, room in enumerate(free):
        if left <= 0:
            break
        take = min(left, room - out[i])
        if take > 0:
            out[i] += take
            left -= take
    return out
