"""Which task owns which records: the processor's unit of scale-out.

The state one shortfall decision reads is its settle asset's: equity sums the wallet and the
unrealized PnL of every position settled in that asset, and the fund that pays belongs to it (a
fund serves one settle asset; the settings refuse one that would mix assets). So each settle asset
is processed by one engine, fed with that asset's records only, merged in event-time order: its
outputs depend on nothing else, whatever the number of instances.

Settle assets are grouped into *tasks*, one per partition of the changelog topic, by a stable hash
(CRC-32 of the asset name, modulo the partition count). The consumer group hands out changelog
partitions, so an instance that owns task ``t`` owns the assets hashed to ``t``. Records are routed
by their Kafka key where SPEC §2 fixes it (``symbol``, ``fund_id``), by the decoded ``asset`` for
balances (keyed by account). A record that names no declared symbol, fund or asset, or that
cannot be decoded, belongs to the *unrouted* domain ``""`` of task 0, whose engine knows no symbol:
it dead-letters them with the engine's reason.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping

from ..engine import BalanceUpdate, FundFlow, SymbolSpec

UNROUTED = ""


def task_of(asset: str, tasks: int) -> int:
    return 0 if asset == UNROUTED else zlib.crc32(asset.encode()) % tasks


class Topology:
    def __init__(self, symbols: Mapping[str, SymbolSpec], tasks: int) -> None:
        if tasks < 1:
            raise ValueError("a topology needs at least one task")
        self.tasks = tasks
        self.symbols = dict(symbols)
        self.asset_of_symbol = {name: spec.settle_asset for name, spec in symbols.items()}
        self.asset_of_fund = {spec.fund_id: spec.settle_asset for spec in symbols.values()}
        assets = sorted(set(self.asset_of_symbol.values()))
        self.assets = frozenset(assets)
        self.assets_of_task: dict[int, list[str]] = {t: [] for t in range(tasks)}
        for asset in [UNROUTED, *assets]:
            self.assets_of_task[task_of(asset, tasks)].append(asset)

    def symbols_of(self, asset: str) -> dict[str, SymbolSpec]:
        return {name: spec for name, spec in self.symbols.items() if spec.settle_asset == asset}

    def asset_of_key(self, by_fund: bool, key: bytes | None) -> str:
        """The settle asset a record keyed by symbol (or, ``by_fund``, by fund id) belongs to."""
        try:
            name = key.decode() if key is not None else None
        except UnicodeDecodeError:
            return UNROUTED
        return (self.asset_of_fund if by_fund else self.asset_of_symbol).get(name, UNROUTED)

    def asset_of_record(self, record) -> str:
        """The settle asset a decoded record belongs to, by its own fields."""
        if isinstance(record, BalanceUpdate):
            return record.asset if record.asset in self.assets else UNROUTED
        if isinstance(record, FundFlow):
            return self.asset_of_fund.get(record.fund_id, UNROUTED)
        return self.asset_of_symbol.get(record.symbol, UNROUTED)
