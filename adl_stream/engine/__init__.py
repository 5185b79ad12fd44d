"""The pure ADL domain: positions, wallets, insurance funds, ranking, matching. No Kafka, no I/O."""

from .engine import Engine, Outcome
from .errors import Rejected
from .funds import FundExhausted, FundFloor, TriggerPolicy
from .ranking import RANKING_POLICIES, PnlLeverage, RankingPolicy
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
    "RANKING_POLICIES",
    "RankingPolicy",
    "Rejected",
    "ShortfallDecision",
    "SymbolSpec",
    "TriggerPolicy",
]
