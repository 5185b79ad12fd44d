"""``pnl-leverage`` (the default; BitMEX, Binance, Bybit): profit percentage times effective leverage."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .base import QueuePolicy, choose


@dataclass(frozen=True, slots=True)
class PnlLeverage(QueuePolicy):
    """``pnl_pct = upnl / (|q| * entry_price)``, ``eff_leverage = notional / equity``;
    ``score = pnl_pct * eff_leverage`` when ``upnl > 0``, else ``pnl_pct / eff_leverage``
    (an account with equity <= 0 first: the index sees to it)."""

    name: ClassVar[str] = "pnl-leverage"

    def score(self, long, notional, upnl, cost, equity):
        pnl_pct = upnl / cost
        leverage = notional / equity
        return choose(upnl > 0, pnl_pct * leverage, pnl_pct / leverage)
