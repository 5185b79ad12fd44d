"""ADL decision latency against the number of open positions in the symbol, and state size.

The pure engine, no Kafka: ``n`` accounts hold ``n`` positions in BTCUSDT (half long, half short,
opened by trades between them at scattered prices so scores differ), the fund is empty, and each
shortfall takes a small quantity from one long: ADL ranks the ``n/2`` shorts and fills the
quantity from the top. The latency is ``Engine.apply`` of the shortfall record, decision and
orders included. Memory is the growth of the process's resident set while the book is built,
per open position (so it counts the wallet and the de-duplicated fill ids that come with one).
"""

from __future__ import annotations

import gc
import random
import time
from decimal import Decimal

from adl_stream.engine import (
    BalanceUpdate,
    Engine,
    Fill,
    LiquidationShortfall,
    MarkPrice,
    SymbolSpec,
)
from adl_stream.engine.funds import FundExhausted
from adl_stream.engine.ranking import PnlLeverage

from .report import percentiles, rss_bytes

SYMBOL = "BTCUSDT"
START_TS = 1_795_996_800_000


def build(n: int, seed: int = 1) -> tuple[Engine, list[str], int]:
    """An engine with ``n`` open positions in :data:`SYMBOL`; the long accounts; the next ts."""
    rng = random.Random(seed)
    engine = Engine({SYMBOL: SymbolSpec(SYMBOL, "USDT", "USDT", None, None)}, trigger=FundExhausted(),
                    ranking=PnlLeverage(), reservation_timeout_ms=3_600_000, dedup_window_ms=86_400_000)
    ts = START_TS
    longs = []
    for i in range(n // 2):
        buyer, seller = f"L{i:07d}", f"S{i:07d}"
        longs.append(buyer)
        price = Decimal(rng.randint(80_000, 100_000))
        quantity = Decimal(rng.randint(1, 1000)) / 1000
        for account, side in ((buyer, "BUY"), (seller, "SELL")):
            engine.apply(BalanceUpdate(account, "USDT", Decimal(rng.randint(1_000, 100_000)), ts))
            engine.apply(Fill(f"f-{account}", account, SYMBOL, side, quantity, price, Decimal(0), "TRADE", None, ts))
        ts += 1
    engine.apply(MarkPrice(SYMBOL, Decimal(90_000), ts))
    return engine, longs, ts + 1


def run(sizes: list[int], samples: dict[int, int]) -> list[dict]:
    rows = []
    for n in sizes:
        gc.collect()
        before = rss_bytes()
        started = time.perf_counter()
        engine, longs, ts = build(n)
        built_s = time.perf_counter() - started
        per_position = (rss_bytes() - before) / n
        latencies, orders = [], 0
        for i in range(samples[n]):
            account = longs[i * 7919 % len(longs)]  # spread over the book, deterministic
            position = engine.book.get(account, SYMBOL)
            quantity = min(position.free, Decimal("0.001"))
            shortfall = LiquidationShortfall(f"liq-{i}", account, SYMBOL, "LONG", quantity, Decimal(85_000),
                                             Decimal(1), ts + i)
            t0 = time.perf_counter_ns()
            outcome = engine.apply(shortfall)
            latencies.append((time.perf_counter_ns() - t0) / 1e6)
            assert outcome.decision.outcome == "ADL", outcome.decision
            orders += len(outcome.orders)
        p = percentiles(latencies)
        rows.append({"positions": n, "samples": len(latencies), "p50_ms": p["p50"], "p99_ms": p["p99"],
                     "max_ms": p["max"], "orders_per_shortfall": orders / len(latencies),
                     "bytes_per_position": round(per_position), "build_s": round(built_s, 2)})
        del engine, longs
    return rows
