"""``mark-entry-leverage`` (Hyperliquid): the mark's gain over entry times leverage."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .base import QueuePolicy


@dataclass(frozen=True, slots=True)
class MarkEntryLeverage(QueuePolicy):
    """``score = (M / entry_price for a long, entry_price / M for a short) * notional / equity``
    (equity <= 0 first). ``M / entry = notional / |cost|`` for a long, ``entry / M = |cost| /
    notional`` for a short, so the score is a product of two ratios of the columns."""

    name: ClassVar[str] = "mark-entry-leverage"

    def score(self, long, notional, upnl, cost, equity):
        return ((notional / cost) if long else (cost / notional)) * (notional / equity)
