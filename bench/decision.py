"""ADL decision latency against the number of open positions in the symbol, update rate, state size.

The pure engine, no Kafka, on a cross-margin book: ``n`` accounts hold ``n`` positions in BTCUSDT
(half long, half short, opened by trades between them at scattered prices so scores differ), and
every account also holds a position in one of four other USDT symbols, so an account's equity
depends on two marks. The fund is empty, so each shortfall (a small quantity of one long) goes to
ADL: the index ranks the ``n/2`` shorts and takes the quantity from the top.

Between two decisions the market moves, so no decision sees the book the last one saw: the
BTCUSDT mark and one other symbol's mark move, ten pairs of accounts trade, and the previous
decision's ADL orders are filled on both sides. The latency is ``Engine.apply`` of the shortfall
record, decision and orders included (and the index catching up with what moved).

The update rate is fills and marks (one mark per hundred fills) through ``Engine.apply`` with the
index maintained, its catching up included; the records are built before the clock starts, as a
processor's decoder hands them over. Memory is the growth of the process's resident set
while the book is built, per open position: it counts the wallets, the de-duplicated fill ids and
the index's columns that come with the positions.
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
from adl_stream.engine.allocation import ALLOCATION_POLICIES, PnlLeverage

from .report import percentiles, rss_bytes

SYMBOL = "BTCUSDT"
OTHERS = ("ETHUSDT", "SOLUSDT", "XRPUSDT", "DOGEUSDT")
START_TS = 1_795_996_800_000
SPECS = {s: SymbolSpec(s, "USDT", "USDT", Decimal("0.001") if s == SYMBOL else None, None)
         for s in (SYMBOL, *OTHERS)}
PRICES = {SYMBOL: 90_000, "ETHUSDT": 3_000, "SOLUSDT": 150, "XRPUSDT": 2, "DOGEUSDT": 1}
TRADES_BETWEEN = 10


class Book:
    """An engine holding the cross-margin book, and the clock and ids that move it."""

    def __init__(self, n: int, seed: int = 1, policy=None, halfway=None) -> None:
        """``halfway``, when given, is called once half the pairs have traded (the marginal memory)."""
        self.rng = rng = random.Random(seed)
        self.engine = engine = Engine(SPECS, trigger=FundExhausted(), ranking=policy or PnlLeverage(),
                                      reservation_timeout_ms=3_600_000, dedup_window_ms=86_400_000)
        self.ts, self.ids, self.applied, self.pairs = START_TS, 0, 0, n // 2
        self.marks = {symbol: Decimal(price) for symbol, price in PRICES.items()}
        for i in range(self.pairs):
            if i == self.pairs // 2 and halfway is not None:
                halfway(engine)
            buyer, seller = f"L{i:07d}", f"S{i:07d}"
            for account in (buyer, seller):
                engine.apply(BalanceUpdate(account, "USDT", Decimal(rng.randint(1_000, 100_000)), self.ts))
            price = Decimal(rng.randint(80_000, 100_000))
            self.trade(SYMBOL, buyer, seller, Decimal(rng.randint(1, 1000)) / 1000, price)
            other = OTHERS[i % len(OTHERS)]
            base = PRICES[other]
            other_price = Decimal(rng.randint(95 * base, 105 * base)) / 100
            self.trade(other, *((buyer, seller) if rng.random() < 0.5 else (seller, buyer)),
                       Decimal(rng.randint(1, 1000)) * PRICES[SYMBOL] // base / 1000, other_price)
            self.ts += 1
        for symbol, mark in self.marks.items():
            engine.apply(MarkPrice(symbol, mark, self.ts))

    def fills(self, symbol: str, buyer: str, seller: str, quantity: Decimal, price: Decimal, kind="TRADE",
              order_id=None) -> list[Fill]:
        """Both sides of a trade, not applied."""
        fills = []
        for account, side in ((buyer, "BUY"), (seller, "SELL")):
            self.ids += 1
            fills.append(Fill(f"f{self.ids}", account, symbol, side, quantity, price, Decimal(0), kind, order_id,
                              self.ts))
        return fills

    def apply(self, record) -> None:
        self.applied += 1
        if self.applied % 4096 == 0:  # the processor takes the changes at every commit
            self.engine.changed.clear()
            self.engine.seen.take()
        self.engine.apply(record)

    def trade(self, *args, **kwargs) -> None:
        for fill in self.fills(*args, **kwargs):
            self.apply(fill)

    def mark(self, symbol: str) -> MarkPrice:
        """A mark move of up to 0.1 % (a random walk), not applied."""
        mark = self.marks[symbol]
        self.marks[symbol] = mark = (mark * Decimal(1 + self.rng.uniform(-0.001, 0.001))).quantize(Decimal("0.01"))
        return MarkPrice(symbol, mark, self.ts)

    def move(self, symbol: str) -> None:
        self.engine.apply(self.mark(symbol))

    def random_fills(self) -> list[Fill]:
        i = self.rng.randrange(self.pairs)
        return self.fills(SYMBOL, f"L{i:07d}", f"S{i:07d}", Decimal("0.001"), self.marks[SYMBOL])

    def random_trade(self) -> None:
        for fill in self.random_fills():
            self.apply(fill)

    def updates(self, trades: int) -> list:
        """``trades`` random trades with a mark move every 50 (one other symbol's in two), not applied."""
        records = []
        for i in range(trades):
            records += self.random_fills()
            if i % 50 == 0:
                self.ts += 1
                records.append(self.mark(SYMBOL if i % 100 else OTHERS[i // 100 % len(OTHERS)]))
        return records


def decide(book: Book, samples: int) -> tuple[list[float], int]:
    """``samples`` shortfalls of random longs, the market moving between them: (latencies in ms,
    orders emitted)."""
    engine, latencies, orders, last = book.engine, [], 0, []
    for i in range(samples):
        book.ts += 1
        book.move(SYMBOL)
        book.move(OTHERS[i % len(OTHERS)])
        for _ in range(TRADES_BETWEEN):
            book.random_trade()
        for order in last:  # the previous decision's ADL orders are filled (short buys, long sells)
            book.trade(SYMBOL, order.account_id, order.bankrupt_account_id, order.quantity, order.price,
                       "ADL", order.order_id)
        account = f"L{book.rng.randrange(book.pairs):07d}"
        quantity = min(engine.book.get(account, SYMBOL).free, Decimal("0.002"))
        shortfall = LiquidationShortfall(f"liq-{i}", account, SYMBOL, "LONG", quantity,
                                         book.marks[SYMBOL] * Decimal("0.95"), Decimal(1), book.ts)
        t0 = time.perf_counter_ns()
        outcome = engine.apply(shortfall)
        latencies.append((time.perf_counter_ns() - t0) / 1e6)
        assert outcome.decision.outcome == "ADL", outcome.decision
        orders += len(outcome.orders)
        last = outcome.orders
    return latencies, orders


def policies(sizes: list[int], samples: int) -> list[dict]:
    """Decision latency of every allocation policy on the same moving book (BTCUSDT lots of 0.001)."""
    rows = []
    for name, policy in ALLOCATION_POLICIES.items():
        for n in sizes:
            book = Book(n, policy=policy())
            latencies, orders = decide(book, samples)
            p = percentiles(latencies)
            rows.append({"policy": name, "positions": n, "samples": samples, "p50_ms": p["p50"],
                         "p99_ms": p["p99"], "orders_per_shortfall": round(orders / samples, 2)})
    return rows


def indicator_passes(sizes: list[int]) -> list[dict]:
    """An ADL indicator pass over the whole book (every symbol, both sides): the first (every light
    new) and the next after the marks moved (only changed lights)."""
    rows = []
    for n in sizes:
        book = Book(n)
        engine = book.engine
        engine.index.flush()
        figures = {"positions": sum(1 for p in engine.book if p.quantity != 0)}
        for run in ("first", "next"):
            if run == "next":
                book.ts += 1
                for symbol in (SYMBOL, *OTHERS):
                    book.move(symbol)
                engine.index.flush()
            t0 = time.perf_counter()
            records = engine.indicators.publish(engine, book.ts, set())
            figures[f"{run}_s"] = round(time.perf_counter() - t0, 3)
            figures[f"{run}_records"] = len(records)
        rows.append(figures)
        del book, engine
    return rows


def run(sizes: list[int], samples: dict[int, int]) -> list[dict]:
    rows = []
    for n in sizes:
        gc.collect()
        before = rss_bytes()
        half: list[tuple[int, int]] = []  # (resident set, positions) when half the book is built
        started = time.perf_counter()
        book = Book(n, halfway=lambda engine: half.append((rss_bytes(), len(engine.book))))
        built_s = time.perf_counter() - started
        engine = book.engine
        open_positions = sum(1 for p in engine.book if p.quantity != 0)
        grown = rss_bytes()
        per_position = (grown - before) / open_positions
        marginal = (grown - half[0][0]) / (len(engine.book) - half[0][1]) if half else per_position
        latencies, orders = decide(book, samples[n])
        updates = book.updates(50_000)  # built first: the rate is the engine's, not the bench's
        t0 = time.perf_counter()
        for record in updates:
            book.apply(record)
        engine.index.flush()
        update_s = time.perf_counter() - t0
        p = percentiles(latencies)
        rows.append({"positions": n, "samples": len(latencies), "p50_ms": p["p50"], "p99_ms": p["p99"],
                     "max_ms": p["max"], "orders_per_shortfall": round(orders / len(latencies), 2),
                     "updates_per_s": round(len(updates) / update_s), "open_positions": open_positions,
                     "bytes_per_position": round(per_position),
                     "marginal_bytes_per_position": round(marginal), "build_s": round(built_s, 1)})
        del engine, book
    return rows
