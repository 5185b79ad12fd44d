"""The pure ADL domain: positions, wallets, insurance funds, ranking, matching. No Kafka, no I/O."""

from .engine import Engine, Outcome
from .errors import Rejected
from .indicators import AdlIndicator, IndicatorCleared
from .funds import FundExhausted, FundFloor, TriggerPolicy
from .allocation import ALLOCATION_POLICIES, AllocationPolicy, PnlLeverage
from .funds import Drawdown
from .records import (
    AdlOrder,
    BalanceUpdate,
    Fill,
    FundFlow,
    InputRecord,
    LiquidationShortfall,
    MarkPrice,
    OutputRecord,
    ShortfallDecision,
)
from .symbols import SymbolSpec

__all__ = [
    "AdlIndicator",
    "IndicatorCleared",
    "AdlOrder",
    "BalanceUpdate",
    "Engine",
    "Fill",
    "FundExhausted",
    "FundFloor",
    "FundFlow",
    "InputRecord",
    "LiquidationShortfall",
    "MarkPrice",
    "Outcome",
    "OutputRecord",
    "PnlLeverage",
    "ALLOCATION_POLICIES",
    "AllocationPolicy",
    "Drawdown",
    "Rejected",
    "ShortfallDecision",
    "SymbolSpec",
    "TriggerPolicy",
]
