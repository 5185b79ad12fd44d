"""The records the engine consumes and produces: plain, immutable values, no I/O.

Field names are those of ``schemas/*.avsc`` (SPEC §2). Enumerations are kept as their Avro symbol
strings so that decoding needs no conversion; the constants below name them.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

BUY, SELL = "BUY", "SELL"
LONG, SHORT = "LONG", "SHORT"
TRADE, LIQUIDATION, ADL = "TRADE", "LIQUIDATION", "ADL"
DEPOSIT, WITHDRAWAL, LIQUIDATION_SURPLUS, FEE_INCOME = (
    "DEPOSIT",
    "WITHDRAWAL",
    "LIQUIDATION_SURPLUS",
    "FEE_INCOME",
)
FUND_INFLOWS = frozenset({DEPOSIT, LIQUIDATION_SURPLUS, FEE_INCOME})
FUND_COVERED, ADL_FULL, ADL_PARTIAL = "FUND_COVERED", "ADL", "ADL_PARTIAL"
OUTCOMES = (FUND_COVERED, ADL_FULL, ADL_PARTIAL)


@dataclass(frozen=True, slots=True)
class Fill:
    fill_id: str
    account_id: str
    symbol: str
    side: str
    quantity: Decimal
    price: Decimal
    fee: Decimal
    kind: str
    adl_order_id: str | None
    ts: int


@dataclass(frozen=True, slots=True)
class MarkPrice:
    symbol: str
    mark_price: Decimal
    ts: int


@dataclass(frozen=True, slots=True)
class BalanceUpdate:
    account_id: str
    asset: str
    wallet_balance: Decimal
    ts: int


@dataclass(frozen=True, slots=True)
class FundFlow:
    flow_id: str
    fund_id: str
    kind: str
    amount: Decimal
    ts: int


@dataclass(frozen=True, slots=True)
class LiquidationShortfall:
    event_id: str
    account_id: str
    symbol: str
    position_side: str
    quantity: Decimal
    bankruptcy_price: Decimal
    shortfall: Decimal
    ts: int


@dataclass(frozen=True, slots=True)
class AdlOrder:
    order_id: str
    shortfall_event_id: str
    symbol: str
    account_id: str
    side: str
    quantity: Decimal
    price: Decimal
    bankrupt_account_id: str
    rank: int
    score: float
    ts: int


@dataclass(frozen=True, slots=True)
class ShortfallDecision:
    event_id: str
    symbol: str
    bankrupt_account_id: str
    fund_id: str
    quantity: Decimal
    shortfall: Decimal
    outcome: str
    fund_covered: Decimal
    adl_quantity: Decimal
    unfilled_quantity: Decimal
    orders: int
    order_ids: tuple[str, ...]
    fund_balance_after: Decimal
    policy: str
    ts: int
    haircut: Decimal = Decimal(0)
    """What the orders cost their holders against the mark (SPEC §3.5), summed."""


InputRecord = Fill | MarkPrice | BalanceUpdate | FundFlow | LiquidationShortfall
OutputRecord = AdlOrder | ShortfallDecision
