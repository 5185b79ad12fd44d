"""``min-max-leverage`` (Campbell, Hey, Moallemi, Nutz 2026, "Risk-Based Auto-Deleveraging"):
leverage draining. The quantities that make the largest effective leverage after ADL as small as
possible."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..index import UNITS
from .base import SpreadPolicy, in_queue_order

_ROUNDS = 64  # bisection steps on the leverage level (float64 has 53 bits)
_GREEDY_STEPS_PER_POSITION = 4  # lot-by-lot placements after the level, per position, at most


@dataclass(frozen=True, slots=True)
class MinMaxLeverage(SpreadPolicy):
    """A position giving ``x`` has leverage ``(|q| - x) * M / (equity - x * h)`` after ADL (``h``
    the haircut per unit); closing all of it leaves 0. Accounts with equity <= 0 give first, in
    queue order (no level makes them finite otherwise). Over the others the lowest level ``T`` is
    found (bisection) at which each position's smallest lots reaching ``T`` sum to at most the
    quantity: each gives those lots; the lots left go first (queue order) to positions whose leverage
    falls as they give, then one at a time to the position whose leverage after the lot is lowest
    (ties in queue order), at most a few per position; the rest in queue order. The leverages are
    float64 of the index's columns: a pure function of the exact state."""

    name: ClassVar[str] = "min-max-leverage"

    def lots(self, view, request, grid, free, quantity):
        lots = in_queue_order([0] * len(free), [f if b else 0 for f, b in zip(free, view.broke.tolist())], quantity)
        left = quantity - sum(lots)
        healthy = ~view.broke
        if left <= 0 or not healthy.any():
            return lots
        lot = float(grid)
        q, equity, mark = view.q[healthy], view.equity[healthy], view.mark
        h = float(request.haircut_per_unit) * UNITS
        room = np.asarray(free, dtype=np.float64)[healthy]
        whole = np.rint(q / lot) == room  # all of it is free: closing it leaves leverage 0

        def need(level: float) -> np.ndarray:
            """Smallest lots giving leverage <= level (inf where none does)."""
            with np.errstate(divide="ignore", invalid="ignore"):
                x = (q * mark - level * equity) / (mark - level * h) / lot
                n = np.ceil(np.clip(np.nan_to_num(x, nan=0.0, posinf=np.inf, neginf=0.0), 0.0, None))
                fewer = np.maximum(n - 1, 0)  # float rounding may ask one lot too many
                n = np.where(leverage(fewer) <= level, fewer, n)
                n = np.where(leverage(np.minimum(n, room)) <= level, np.minimum(n, room), np.inf)
            n = np.where(np.isinf(n) & whole, room, n)
            return np.where(now <= level, 0.0, n)  # already there (the formula bounds x from above
            # when the haircut per unit outweighs: mark < level * h)

        def leverage(n: np.ndarray) -> np.ndarray:
            given = n * lot
            rest = equity - given * h
            value = (q - given) * mark / rest
            return np.where(given >= q, 0.0, np.where(rest > 0, value, np.inf))

        now = leverage(np.zeros(len(q)))
        low, high = 0.0, float(now.max())
        if np.isinf(high):
            high = float(np.finfo(np.float64).max)
        if need(low).sum() <= left:
            high = low
        for _ in range(_ROUNDS):
            if high - low <= high * 1e-15:
                break
            middle = (low + high) / 2
            if need(middle).sum() <= left:
                high = middle
            else:
                low = middle
        given = need(high)
        given = np.where(np.isinf(given), 0, given)
        # The lots the level leaves go first, in queue order, to positions whose leverage falls as
        # they give (their haircut on all of it is below their equity); then one at a time to the
        # position whose leverage after the lot is lowest (a lot can raise a leverage).
        spare = left - int(given.sum())
        falls = np.where(q * h < equity, room - given, 0)
        before = np.cumsum(falls) - falls
        given += np.clip(spare - before, 0, falls)
        full = np.where(whole, room, np.inf)  # lots that close a wholly free position (leverage 0)
        steps = _GREEDY_STEPS_PER_POSITION * len(q)  # bounded: what is left goes in queue order
        while (spare := left - int(given.sum())) > 0 and (steps := steps - 1) >= 0:
            after = np.where(given < room, leverage(given + 1), np.inf)
            best = int(np.argmin(after))
            closing = np.where(full - given <= spare, full - given, np.inf)
            closing[given >= room] = np.inf
            if (np.isinf(after[best]) or after[best] > high) and np.isfinite(closing).any():
                best = int(np.argmin(closing))  # a lot would overshoot the level: close one outright
                given[best] = room[best]
            elif np.isfinite(after[best]):
                given[best] += 1
            else:
                break
        it = iter(given.astype(np.int64).tolist())
        for i, is_healthy in enumerate(healthy.tolist()):
            if is_healthy:
                lots[i] = next(it)
        return in_queue_order(lots, free, quantity)
