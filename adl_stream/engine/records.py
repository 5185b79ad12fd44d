"""The records the engine consumes and produces: plain, immutable values, no I/O.

Field names are those of ``schemas/*.avsc`` (SPEC §2). Enumerations are kept as their Avro symbol
strings so that decoding needs no conversion; the constants below name them.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, fields
from decimal import Decimal
from itertools import repeat

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


def by_column(cls: type, names: tuple[str, ...] | None = None):
    """The function that makes ``n`` records of the slotted dataclass ``cls`` of their field values
    by column (one iterable a field, in ``names`` order: all of them by default), as its
    ``__init__`` does (each slot set through its own setter, as ``object.__setattr__`` does for a
    frozen one), without a call's arguments: each column is set by one ``map`` that runs in C, not
    by a Python loop per record (0.6 -> 0.25 us a fill; 2.3 -> 0.65 us an indicator)."""
    names = names or tuple(f.name for f in fields(cls))
    new, setters = object.__new__, tuple(cls.__dict__[name].__set__ for name in names)

    def make(columns, n: int) -> list:
        out = list(map(new, repeat(cls, n)))
        for set_field, column in zip(setters, columns):
            deque(map(set_field, out, column), 0)
        return out

    return make
