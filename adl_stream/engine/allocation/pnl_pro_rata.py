"""``pnl-pro-rata`` (Chitra 2025, "Autodeleveraging: Impossibilities and Optimization"): capped
wealth pro rata. The loss is spread over the profitable positions in proportion to their uPnL,
no position giving more than its free quantity nor a haircut above ``haircut_cap`` times its uPnL."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import ClassVar

import numpy as np

from ..index import UNITS
from .base import SpreadPolicy, in_queue_order, largest_remainders


@dataclass(frozen=True, slots=True)
class PnlProRata(SpreadPolicy):
    """Water-filling: each profitable position gives ``min(cap, level * upnl)`` (its cap: its free
    lots and the lots whose haircut reaches ``haircut_cap * upnl``), the level set so the gifts sum
    to the quantity; rounded down to lots, the lots left over go to the largest remainders with
    room (ties in queue order). What the profitable positions cannot absorb goes to the others in
    ``pnl-leverage`` queue order. The weights are the index's float uPnL (a pure function of the
    exact state); the caps are exact."""

    haircut_cap: Decimal = Decimal(1)
    name: ClassVar[str] = "pnl-pro-rata"

    def room(self, position, request):
        """Its free quantity, or for a position in profit the quantity whose haircut reaches the cap."""
        per_unit, upnl = request.haircut_per_unit, position.quantity * request.mark - position.cost
        if per_unit <= 0 or upnl <= 0:
            return position.free
        return min(position.free, request.lot * (self.haircut_cap * upnl // (per_unit * request.lot)))

    def caps(self, view, request, grid, free) -> list[int]:
        """Lots of ``grid`` each position may give under the haircut cap (0 for one not in profit)."""
        per_unit = request.haircut_per_unit
        upnl = view.upnl.tolist()
        if per_unit <= 0:  # closing at the price costs nothing against the mark: no haircut to cap
            return [f if u > 0 else 0 for f, u in zip(free, upnl)]
        rough = float(self.haircut_cap) / (float(per_unit) * float(grid) * UNITS)
        caps = []
        for position, room, u in zip(view.positions, free, upnl):
            if u <= 0:
                caps.append(0)
            elif u * rough >= room + 1:  # the haircut cap is far: the free lots bind
                caps.append(room)
            else:  # exactly: lots * lot * per_unit <= haircut_cap * upnl
                exact = position.quantity * request.mark - position.cost
                caps.append(max(0, min(room, int(self.haircut_cap * exact // (per_unit * grid)))))
        return caps

    def lots(self, view, request, grid, free, quantity):
        caps = self.caps(view, request, grid, free)
        if sum(caps) <= quantity:  # every profitable position gives its cap; the rest, in queue order
            others = [0 if c or u > 0 else f for c, f, u in zip(caps, free, view.upnl.tolist())]
            rest = in_queue_order([0] * len(caps), others, quantity - sum(caps))
            return [c + r for c, r in zip(caps, rest)]
        weights = np.where(np.asarray(caps) > 0, view.upnl, 0.0)
        cap = np.asarray(caps, dtype=np.float64)
        level = _level(weights, cap, quantity)
        gifts = np.minimum(cap, level * weights)
        base = np.floor(gifts)
        remainders = gifts - base
        lots = base.astype(np.int64).tolist()
        over = sum(lots) - quantity
        for i in np.argsort(remainders, kind="stable").tolist():  # float rounding past the quantity
            if over <= 0:
                break
            if lots[i] > 0:
                lots[i] -= 1
                over -= 1
        lots = largest_remainders(lots, remainders, caps, quantity - sum(lots))
        return in_queue_order(lots, [c or f for c, f in zip(caps, free)], quantity) if sum(lots) < quantity else lots


def _level(weights: np.ndarray, caps: np.ndarray, quantity: int) -> float:
    """The ``level`` at which ``sum(min(caps, level * weights)) == quantity`` (there is one:
    ``sum(caps) > quantity``), from the sorted breakpoints ``caps / weights``."""
    live = weights > 0
    w, c = weights[live], caps[live]
    order = np.argsort(c / w, kind="stable")
    w, c = w[order], c[order]
    breaks = c / w
    capped = np.concatenate([[0.0], np.cumsum(c)])[:-1]  # gifts of the positions before k, capped
    free_weight = np.cumsum(w[::-1])[::-1]  # weights of k and after, not yet capped
    reached = capped + breaks * free_weight  # sum of gifts at level breaks[k]
    k = min(int(np.searchsorted(reached, quantity)), len(w) - 1)  # float rounding may miss the last
    return (quantity - capped[k]) / free_weight[k]
