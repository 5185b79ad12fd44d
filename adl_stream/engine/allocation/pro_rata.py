"""``pro-rata`` (Drift): the quantity spread over the side in proportion to free quantity."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .base import SpreadPolicy, exact_shares, largest_remainders


@dataclass(frozen=True, slots=True)
class ProRata(SpreadPolicy):
    """Each position gives ``quantity * free / total free``, rounded down to the lot grid; the lots
    left over go one each to the largest remainders (ties in ``pnl-leverage`` queue order). Exact:
    shares and remainders are whole-number arithmetic on lots."""

    name: ClassVar[str] = "pro-rata"

    def lots(self, view, request, grid, free, quantity):
        total = sum(free)
        if total <= quantity:
            return list(free)
        shares, remainders = exact_shares(quantity, free, total)
        return largest_remainders(shares, remainders, free, quantity - sum(shares))
