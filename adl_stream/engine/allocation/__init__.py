"""ADL allocation policies (SPEC §3.3), one small object per module: who gives how much.

Queue policies score the side and take ``min(left, free)`` in turn; spreading policies divide the
quantity over the whole side on the lot grid. Each is chosen by ``ranking_policy``.
"""

from decimal import Decimal

from .base import Allocation, AllocationPolicy, QueuePolicy, Request, SpreadPolicy
from .mark_entry_leverage import MarkEntryLeverage
from .min_max_leverage import MinMaxLeverage
from .pnl_leverage import PnlLeverage
from .pnl_pro_rata import PnlProRata
from .pro_rata import ProRata

ALLOCATION_POLICIES = {
    policy.name: policy for policy in (PnlLeverage, MarkEntryLeverage, ProRata, PnlProRata, MinMaxLeverage)
}



def allocation_policy(name: str, *, haircut_cap: Decimal = Decimal(1)) -> AllocationPolicy:
    """The allocation policy ``name`` (a key of :data:`ALLOCATION_POLICIES`) with its settings."""
    if name == PnlProRata.name:
        return PnlProRata(haircut_cap)
    return ALLOCATION_POLICIES[name]()


__all__ = [
    "ALLOCATION_POLICIES",
    "Allocation",
    "AllocationPolicy",
    "MarkEntryLeverage",
    "MinMaxLeverage",
    "PnlLeverage",
    "PnlProRata",
    "ProRata",
    "QueuePolicy",
    "Request",
    "SpreadPolicy",
    "allocation_policy",
]
