"""The recorded inputs of a deployment, read to their end, in the order the processor applies them.

``adl-stream compare --from-topics`` decides the recorded shortfalls again under other policies. It
needs the input records (read_committed, up to the end each partition has now) per settle asset,
merged across partitions exactly as the processor merges them (:mod:`.merge`: event time, topic
priority, partition, offset), so that a policy equal to the processor's decides alike. Records that
the processor would dead-letter before the engine (undecodable, unroutable, key and value naming
different settle assets) are counted and left out. No group joins, nothing commits.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from ..engine import BalanceUpdate, Fill, FundFlow, LiquidationShortfall, MarkPrice
from ..engine.errors import Rejected
from ..wire import Codec
from .config import Settings
from .kafka import read_to_end
from .merge import EventTimeMerger
from .topology import UNROUTED, Topology


@dataclass
class Recorded:
    """Input records per settle asset, in processing order, and what was left out."""

    by_asset: dict[str, list] = field(default_factory=dict)
    read: int = 0
    left_out: Counter = field(default_factory=Counter)
    """Dead-letter reason -> records the processor would not have applied (undecodable, ...)."""


def priorities(settings: Settings) -> dict[str, int]:
    """Same event time: funds and wallets first, then marks and fills, shortfalls last (as the processor)."""
    t = settings.topics
    return {t.insurance_fund: 0, t.balances: 1, t.mark_prices: 2, t.fills: 3, t.liquidation_shortfalls: 4}


def read_recorded(settings: Settings, timeout_s: float = 60.0) -> Recorded:
    t = settings.topics
    types = {t.fills: Fill, t.mark_prices: MarkPrice, t.balances: BalanceUpdate, t.insurance_fund: FundFlow,
             t.liquidation_shortfalls: LiquidationShortfall}
    topology, codec, recorded = Topology(settings.symbols, 1), Codec(), Recorded()
    mergers: dict[str, EventTimeMerger] = {}
    for topic, record_type in types.items():
        for message in read_to_end(settings, topic, timeout_s):
            recorded.read += 1
            try:
                record = codec.decode(message.value(), record_type)
            except Rejected as rejected:
                recorded.left_out[rejected.reason] += 1
                continue
            if record_type is BalanceUpdate:
                asset = topology.asset_of_record(record)
            else:
                asset = topology.asset_of_key(record_type is FundFlow, message.key())
            if asset == UNROUTED:
                recorded.left_out["unrouted"] += 1
                continue
            if topology.asset_of_record(record) != asset:
                recorded.left_out["key_mismatch"] += 1
                continue
            merger = mergers.setdefault(asset, EventTimeMerger(priorities(settings)))
            merger.add((topic, message.partition()), message.offset(), record.ts, record)
    for asset in sorted(mergers):  # everything is buffered: no partition to wait for (max_idle_ms 0)
        recorded.by_asset[asset] = list(mergers[asset].release())
    return recorded
