"""Static symbol settings (SPEC §1): settle asset, insurance fund, lot and tick sizes."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal


@dataclass(frozen=True, slots=True)
class SymbolSpec:
    """What the configuration says of one perpetual contract."""

    symbol: str
    settle_asset: str
    fund_id: str
    #: Quantities must be whole multiples of this, when set.
    lot_size: Decimal | None = None
    #: Prices must be whole multiples of this, when set.
    tick_size: Decimal | None = None
