"""ADL ranking policies: who is deleveraged first (SPEC §3.3).

A queue policy is a small object with a vectorized ``score``: given the columns of one side of a
symbol (float64 arrays from the ranking index, :mod:`.index`), it returns each position's score,
higher first. The index does the rest: equity <= 0 first (decided exactly), the selection of the
top of the queue and the exact tie-breaks (larger notional, then ``account_id``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Protocol

import numpy as np

from .index import Candidate, choose

__all__ = ["Candidate", "PnlLeverage", "RANKING_POLICIES", "RankingPolicy"]


class RankingPolicy(Protocol):
    name: str

    def score(self, long: bool, notional: np.ndarray, upnl: np.ndarray, cost: np.ndarray,
              equity: np.ndarray) -> np.ndarray:
        """Scores of one side's positions, higher first, from float64 columns: ``notional = |q| * M``,
        ``upnl``, ``cost = |cost basis|`` and the ``equity > 0`` of each position's account, all in
        the same unit (the index's 2**-16 of the settle asset): a score must be made of their ratios."""


@dataclass(frozen=True, slots=True)
class PnlLeverage:
    """BitMEX / Binance / Bybit style: profit percentage times effective leverage.

    ``pnl_pct = upnl / (|q| * entry_price)``, ``eff_leverage = notional / equity``;
    ``score = pnl_pct * eff_leverage`` when ``upnl > 0``, else ``pnl_pct / eff_leverage``.
    (An account with equity <= 0 scores +inf: the index sets it.)
    """

    name: ClassVar[str] = "pnl-leverage"

    def score(self, long, notional, upnl, cost, equity):
        pnl_pct = upnl / cost
        leverage = notional / equity
        return choose(upnl > 0, pnl_pct * leverage, pnl_pct / leverage)


RANKING_POLICIES: dict[str, type[PnlLeverage]] = {PnlLeverage.name: PnlLeverage}
