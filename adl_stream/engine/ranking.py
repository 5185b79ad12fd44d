"""ADL ranking policies: who is deleveraged first (SPEC §3.3)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import ClassVar, Protocol

from .numbers import ZERO
from .positions import Position


@dataclass(frozen=True, slots=True)
class Candidate:
    position: Position
    score: float
    notional: Decimal


class RankingPolicy(Protocol):
    name: str

    def rank(
        self,
        positions: Iterable[Position],
        mark: Decimal,
        equity_of: Callable[[str], Decimal],
    ) -> list[Candidate]:
        """Order the positions with free quantity, first to be deleveraged first."""


def _queue_order(candidate: Candidate) -> tuple[float, Decimal, str]:
    # Higher score first; ties by larger notional, then account id (SPEC §3.3).
    return (-candidate.score, -candidate.notional, candidate.position.account_id)


@dataclass(frozen=True, slots=True)
class PnlLeverage:
    """BitMEX / Binance / Bybit style: profit percentage times effective leverage.

    ``pnl_pct = upnl / (|q| * entry_price)``, ``eff_leverage = notional / equity``;
    ``score = pnl_pct * eff_leverage`` when ``pnl_pct > 0``, else ``pnl_pct / eff_leverage``.
    An account with equity <= 0 scores +inf (first in the queue). Scores are floats: they only order.
    """

    name: ClassVar[str] = "pnl-leverage"

    def rank(
        self,
        positions: Iterable[Position],
        mark: Decimal,
        equity_of: Callable[[str], Decimal],
    ) -> list[Candidate]:
        ranked = []
        for position in positions:
            if position.free <= ZERO:
                continue
            upnl = position.upnl(mark)
            notional = position.quantity.copy_abs() * mark
            equity = equity_of(position.account_id)
            if equity <= ZERO:
                score = math.inf
            else:
                pnl_pct = float(upnl) / float(position.cost.copy_abs())
                leverage = float(notional) / float(equity)
                score = pnl_pct * leverage if upnl > ZERO else pnl_pct / leverage
            ranked.append(Candidate(position, score, notional))
        ranked.sort(key=_queue_order)
        return ranked


RANKING_POLICIES: dict[str, type[PnlLeverage]] = {PnlLeverage.name: PnlLeverage}
