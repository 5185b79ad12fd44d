"""A seeded synthetic perpetual-futures market with a crash: the records an exchange would publish.

The model, in event time:

1. **Book.** Each trader has a wallet (100 to ~30k, log-uniform), one symbol, a side and a leverage
   (2x to 100x, weighted toward the low end). Their positions are opened by trades between longs
   and shorts of the symbol at the mark; a market maker per symbol (a deep wallet) takes what does
   not pair. Every trade pays a 4 bp fee; a tenth of the fees flows to the fund as ``FEE_INCOME``.
2. **Marks.** A random walk, then a crash of ``crash_depth`` over ``crash_steps`` marks (one per
   ``step_ms``), then a rebound that wins back ``rebound`` of the drop. Between marks, traders
   keep adding to their positions.
3. **Liquidations.** A trader whose equity falls to the maintenance margin (0.5 % of notional) is
   liquidated: the liquidation engine can sell (buy, for a short) at the mark minus a slippage of
   0.2 %-3 %. At or above the bankruptcy price (equity = 0) the position closes there
   (``LIQUIDATION`` fills) and the rest of the margin goes to the fund (``LIQUIDATION_SURPLUS``);
   below it, a ``liquidation-shortfalls`` record asks for the loss.
4. **ADL echoes.** The simulator runs the :class:`~adl_stream.engine.Engine` beside itself, so it
   knows how each shortfall is decided, as the processor will decide it (same engine, same
   order): it closes a fund-covered position in the market, and executes every ADL order at the
   bankruptcy price (``ADL`` fills on both sides, releasing the reservations), closing an unfilled
   rest in the market. The bankrupt wallet is then reset to 0 (``balances``).

Every record the engine would reject is a bug here, so none is emitted. Event times rise by a
millisecond a record at least, except the two fills of one trade, which share theirs and a
partition (both keyed by symbol): the processor's event-time merge reproduces exactly this order,
as long as no partition lags the others by more than ``max_idle_ms``. The same :class:`Scenario`
always yields the same records, byte for byte.

Prices (marks, trades, liquidations, bankruptcy prices) lie on each symbol's ``tick_size`` grid and
quantities on its ``lot_size`` grid (a cent and a thousandth without them), as the processor
requires. ``id_prefix`` starts every id (fills, events, flows, accounts), so that two runs can share
the topics of one processor without one's ids repeating the other's.
"""

from __future__ import annotations

import decimal
import heapq
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from ..engine import (
    BalanceUpdate,
    Engine,
    Fill,
    FundFlow,
    LiquidationShortfall,
    MarkPrice,
    ShortfallDecision,
    SymbolSpec,
)
from ..engine.funds import FundExhausted, TriggerPolicy
from ..engine.allocation import AllocationPolicy as RankingPolicy
from ..engine.allocation import PnlLeverage

#: 2026-11-30T00:00:00Z: the default start of event time (fixed, so runs are reproducible;
#: ``adl-stream simulate`` starts at the current time unless given ``--start-ts``).
DEFAULT_START_TS = 1_795_996_800_000
MAINTENANCE_MARGIN = Decimal("0.005")
FEE_RATE = Decimal("0.0004")
LEVERAGES = (2, 3, 3, 5, 5, 5, 10, 10, 10, 10, 20, 20, 25, 50)
START_PRICES = {"BTCUSDT": Decimal(90_000), "ETHUSDT": Decimal(3_000), "SOLUSDT": Decimal(140)}
CENT = Decimal("0.01")
_WORK = decimal.Context(prec=40, rounding=decimal.ROUND_HALF_EVEN)


@dataclass(frozen=True)
class Scenario:
    seed: int = 1
    accounts: int = 2_000
    crash_depth: Decimal = Decimal("0.30")
    """Fraction the marks fall, e.g. 0.30 for -30 %."""
    rebound: Decimal = Decimal("0.5")
    """Fraction of the drop won back after the bottom."""
    warmup_steps: int = 30
    crash_steps: int = 120
    rebound_steps: int = 60
    step_ms: int = 1_000
    """Event time between two marks of a symbol."""
    trades_per_step: int = 4
    leverages: tuple[int, ...] = LEVERAGES
    """Each trader's leverage is drawn from these (uniformly: repeat one to weigh it)."""
    fund_seed: Decimal | None = None
    """Initial deposit of each insurance fund (default: 50 per account, so that a crash drains it
    and ADL follows whatever the size)."""
    start_ts: int = DEFAULT_START_TS
    id_prefix: str = ""
    """Starts every id (fills, events, flows, accounts, market makers)."""


def default_symbols() -> dict[str, SymbolSpec]:
    """The demo's contracts: two in the USDT fund, one in its own fund (as SPEC §5's example)."""
    return {
        "BTCUSDT": SymbolSpec("BTCUSDT", "USDT", "USDT", Decimal("0.001"), CENT),
        "ETHUSDT": SymbolSpec("ETHUSDT", "USDT", "USDT", Decimal("0.01"), CENT),
        "SOLUSDT": SymbolSpec("SOLUSDT", "USDT", "USDT-ALT", Decimal("0.1"), CENT),
    }


@dataclass
class Trader:
    account_id: str
    symbol: str
    direction: int  # +1 long, -1 short, 0 the market maker
    version: int = 0
    slot: int = -1  # index in its side's list of active traders


@dataclass
class Tape:
    """What the simulation did besides its records: for summaries, pictures and tests."""

    decisions: list[ShortfallDecision] = field(default_factory=list)
    orders: int = 0
    marks: dict[str, list[tuple[int, Decimal]]] = field(default_factory=dict)
    fund_path: dict[str, list[tuple[int, Decimal]]] = field(default_factory=dict)
    liquidations: int = 0
    records: int = 0


class MarketSimulator:
    def __init__(self, scenario: Scenario, symbols: Mapping[str, SymbolSpec] | None = None, *,
                 trigger: TriggerPolicy | None = None, ranking: RankingPolicy | None = None,
                 indicator_interval_ms: int = 0, observer=None) -> None:
        """``trigger``/``ranking`` must be the processor's, for the ADL echoes to match its orders;
        ``indicator_interval_ms`` too, for its engine to hold the processor's state (lights included).
        ``observer(engine, record, outcome)``, if given, sees each record right after the engine
        applied it (before the exchange's reaction: a decision's orders are not filled yet)."""
        self.scenario = scenario
        self.fund_seed = scenario.fund_seed if scenario.fund_seed is not None else Decimal(50 * scenario.accounts)
        self.symbols = dict(symbols or default_symbols())
        self.engine = Engine(self.symbols, trigger=trigger or FundExhausted(), ranking=ranking or PnlLeverage(),
                             indicator_interval_ms=indicator_interval_ms)
        self.tape = Tape(marks={s: [] for s in self.symbols},
                         fund_path={f: [] for f in sorted({s.fund_id for s in self.symbols.values()})})
        self._rng = random.Random(scenario.seed)
        self._ts = scenario.start_ts
        self._ids = 0
        self._marks = {s: self._on_grid(START_PRICES.get(s, Decimal(100)), self._tick_size(s)) for s in self.symbols}
        self._traders: dict[str, Trader] = {}
        self._by_symbol: dict[str, tuple[list[Trader], list[Trader]]] = {s: ([], []) for s in self.symbols}
        # Liquidation triggers per symbol: longs by highest trigger price, shorts by lowest.
        self._long_triggers: dict[str, list] = {s: [] for s in self.symbols}
        self._short_triggers: dict[str, list] = {s: [] for s in self.symbols}
        self._fees: dict[str, Decimal] = {}
        self._out: list = []
        self._observer = observer

    # -- the run -----------------------------------------------------------------------------

    def records(self) -> Iterator:
        """Every record of the scenario, in order (a generator: millions need no list)."""
        for phase in (self._open_books, self._walk):
            for _ in phase():
                yield from self._flush()
        yield from self._flush()

    def _open_books(self) -> Iterator[None]:
        rng, s = self._rng, self.scenario
        for fund_id in self.tape.fund_path:
            self._emit(FundFlow(self._id("seed"), fund_id, "DEPOSIT", self.fund_seed, self._tick()))
        for symbol in self.symbols:
            self._emit(MarkPrice(symbol, self._marks[symbol], self._tick()))
            maker = Trader(self._maker(symbol), symbol, 0)
            self._traders[maker.account_id] = maker
            self._emit(BalanceUpdate(maker.account_id, self._asset(symbol), Decimal(10) ** 9, self._tick()))
        targets: dict[str, list[tuple[Trader, Decimal]]] = {s: [] for s in self.symbols}
        symbols = list(self.symbols)
        for i in range(s.accounts):
            symbol = rng.choice(symbols)
            trader = Trader(f"{self.scenario.id_prefix}acct-{i:07d}", symbol, rng.choice((1, -1)))
            self._traders[trader.account_id] = trader
            side = self._by_symbol[symbol][trader.direction < 0]
            trader.slot = len(side)
            side.append(trader)
            wallet = Decimal(round(10 ** rng.uniform(2, 4.5)))
            self._emit(BalanceUpdate(trader.account_id, self._asset(symbol), wallet, self._tick()))
            quantity = self._lots(symbol, wallet * rng.choice(s.leverages) / self._marks[symbol])
            targets[symbol].append((trader, quantity))
            if i % 1000 == 999:
                yield None
        for symbol in symbols:  # pair longs with shorts; the market maker takes the rest
            longs = [[t, q] for t, q in targets[symbol] if t.direction > 0]
            shorts = [[t, q] for t, q in targets[symbol] if t.direction < 0]
            maker = self._traders[self._maker(symbol)]
            while longs or shorts:
                buy = longs[-1] if longs else [maker, shorts[-1][1]]
                sell = shorts[-1] if shorts else [maker, longs[-1][1]]
                quantity = min(buy[1], sell[1])
                self._trade(symbol, buy[0], sell[0], quantity, self._marks[symbol])
                for side, book in ((buy, longs), (sell, shorts)):
                    side[1] -= quantity
                    if book and side is book[-1] and side[1] == 0:
                        book.pop()
                yield None

    def _walk(self) -> Iterator[None]:
        s, rng = self.scenario, self._rng
        drop = 1 - (1 - float(s.crash_depth)) ** (1 / s.crash_steps)  # per step, to reach the depth
        bottom = 1 - float(s.crash_depth)
        rise = ((bottom + (1 - bottom) * float(s.rebound)) / bottom) ** (1 / max(1, s.rebound_steps)) - 1
        phases = [(s.warmup_steps, 0.0), (s.crash_steps, -drop), (s.rebound_steps, rise)]
        for steps, drift in phases:
            for _ in range(steps):
                for symbol in self.symbols:
                    move = drift + rng.gauss(0, 0.001)
                    mark = self._on_grid(self._marks[symbol] * Decimal(str(round(1 + move, 6))), self._tick_size(symbol))
                    self._marks[symbol] = mark
                    self._emit(MarkPrice(symbol, mark, self._tick(s.step_ms // (len(self.symbols) * 2) or 1)))
                    self.tape.marks[symbol].append((self._ts, mark))
                    for _ in range(s.trades_per_step):
                        self._noise_trade(symbol)
                    self._liquidate(symbol)
                    self._pay_fee_income()
                    yield None

    # -- trading -----------------------------------------------------------------------------

    def _noise_trade(self, symbol: str) -> None:
        longs, shorts = self._by_symbol[symbol]
        if not longs or not shorts:
            return
        buyer, seller = self._rng.choice(longs), self._rng.choice(shorts)
        size = min(self._open_quantity(buyer), self._open_quantity(seller))
        quantity = self._lots(symbol, size * Decimal(self._rng.randint(1, 10)) / 100)
        if quantity > 0:
            self._trade(symbol, buyer, seller, quantity, self._marks[symbol])

    def _trade(self, symbol: str, buyer: Trader, seller: Trader, quantity: Decimal, price: Decimal,
               kind: str = "TRADE") -> None:
        ts = self._tick()
        for trader, side in ((buyer, "BUY"), (seller, "SELL")):
            fee = (quantity * price * FEE_RATE).quantize(CENT) if kind == "TRADE" else Decimal(0)
            self._emit(Fill(self._id("f"), trader.account_id, symbol, side, quantity, price, fee, kind, None, ts))
            fund_id = self.symbols[symbol].fund_id
            self._fees[fund_id] = self._fees.get(fund_id, Decimal(0)) + fee
            self._rearm(trader)

    def _pay_fee_income(self) -> None:
        for fund_id, fees in sorted(self._fees.items()):
            income = (fees / 10).quantize(CENT, rounding=decimal.ROUND_DOWN)
            if income > 0:
                self._emit(FundFlow(self._id("fee"), fund_id, "FEE_INCOME", income, self._tick()))
                self._fees[fund_id] = Decimal(0)

    # -- liquidation -------------------------------------------------------------------------

    def _rearm(self, trader: Trader) -> None:
        """Recompute the mark at which ``trader`` reaches maintenance margin; queue it."""
        if not trader.direction:
            return
        trader.version += 1
        position = self.engine.book.get(trader.account_id, trader.symbol)
        if position is None or position.quantity == 0:
            return
        q, cost = float(position.quantity), float(position.cost)
        wallet = float(self.engine.wallets.balance(trader.account_id, self._asset(trader.symbol)))
        mm = float(MAINTENANCE_MARGIN)
        # equity = wallet + q*M - cost reaches mm*|q|*M at M = (cost - wallet) / (q - mm*|q|)
        trigger = (cost - wallet) / (q - mm * abs(q))
        if trigger <= 0:
            return  # never reaches maintenance: fully collateralized
        if q > 0:
            heapq.heappush(self._long_triggers[trader.symbol], (-trigger, trader.account_id, trader.version))
        else:
            heapq.heappush(self._short_triggers[trader.symbol], (trigger, trader.account_id, trader.version))

    def _liquidate(self, symbol: str) -> None:
        mark = float(self._marks[symbol])
        for heap, crossed in ((self._long_triggers[symbol], lambda t: -t >= mark),
                              (self._short_triggers[symbol], lambda t: t <= mark)):
            due = []
            while heap and crossed(heap[0][0]):
                _, account_id, version = heapq.heappop(heap)
                trader = self._traders[account_id]
                if version == trader.version:
                    due.append(trader)
            for trader in due:
                self._liquidate_one(trader)

    def _liquidate_one(self, trader: Trader) -> None:
        symbol, asset = trader.symbol, self._asset(trader.symbol)
        position = self.engine.book.get(trader.account_id, symbol)
        mark = self._marks[symbol]
        equity = self.engine.equity(trader.account_id, asset)
        if position is None or position.free == 0 or equity > MAINTENANCE_MARGIN * position.quantity.copy_abs() * mark:
            self._rearm(trader)  # float trigger a hair early: look again at a later mark
            return
        self.tape.liquidations += 1
        long = position.quantity > 0
        quantity = position.free
        wallet = self.engine.wallets.balance(trader.account_id, asset)
        tick = self._tick_size(symbol)
        up, down = decimal.ROUND_CEILING, decimal.ROUND_FLOOR
        bankruptcy = self._on_grid(_WORK.divide(position.cost - wallet, position.quantity), tick, up if long else down)
        slip = Decimal(self._rng.randint(2, 30)) / 1000
        close = self._on_grid(mark * (1 - slip if long else 1 + slip), tick, down if long else up)
        maker = self._traders[self._maker(symbol)]
        buyer, seller = (maker, trader) if long else (trader, maker)
        if bankruptcy <= 0:
            bankruptcy = tick
        covers = close >= bankruptcy if long else close <= bankruptcy
        if covers:  # closes at or better than bankruptcy: the margin left goes to the fund
            self._trade(symbol, buyer, seller, quantity, close, "LIQUIDATION")
            surplus = (quantity * (close - bankruptcy).copy_abs()).quantize(CENT, decimal.ROUND_DOWN)
            if surplus > 0:
                self._emit(FundFlow(self._id("surplus"), self.symbols[symbol].fund_id, "LIQUIDATION_SURPLUS",
                                    surplus, self._tick()))
        else:
            shortfall = (quantity * (bankruptcy - close).copy_abs()).quantize(CENT, decimal.ROUND_UP)
            event = LiquidationShortfall(self._id("liq"), trader.account_id, symbol, "LONG" if long else "SHORT",
                                         quantity, bankruptcy, shortfall, self._tick())
            outcome = self._emit(event)
            decision = outcome.decision
            self.tape.decisions.append(decision)
            self.tape.orders += len(outcome.orders)
            for order in outcome.orders:  # the exchange executes each ADL order at once
                counterparty = self._traders[order.account_id]
                pair = (counterparty, trader) if order.side == "BUY" else (trader, counterparty)
                ts = self._tick()
                for who, side in zip(pair, ("BUY", "SELL"), strict=True):
                    self._emit(Fill(self._id("f"), who.account_id, symbol, side, order.quantity, order.price,
                                    Decimal(0), "ADL", order.order_id, ts))
                    self._rearm(who)
            rest = quantity if decision.outcome == "FUND_COVERED" else decision.unfilled_quantity
            if rest > 0:
                self._trade(symbol, buyer, seller, rest, close, "LIQUIDATION")
        self._emit(BalanceUpdate(trader.account_id, asset, Decimal(0), self._tick()))
        side = self._by_symbol[symbol][not long]  # swap-remove: O(1), still deterministic
        last = side.pop()
        if last is not trader:
            side[trader.slot], last.slot = last, trader.slot
        trader.version += 1

    # -- plumbing ----------------------------------------------------------------------------

    def _emit(self, record):
        outcome = self.engine.apply(record)  # a rejection here is a simulator bug: let it raise
        if self._observer is not None:
            self._observer(self.engine, record, outcome)
        if isinstance(record, FundFlow) or (outcome.decision and outcome.decision.fund_covered):
            fund_id = record.fund_id if isinstance(record, FundFlow) else outcome.decision.fund_id
            self.tape.fund_path[fund_id].append((record.ts, self.engine.funds.balance(fund_id)))
        self._out.append(record)
        return outcome

    def _flush(self) -> Iterator:
        out, self._out = self._out, []
        self.tape.records += len(out)
        yield from out

    def _tick(self, ms: int = 1) -> int:
        self._ts += ms
        return self._ts

    def _id(self, prefix: str) -> str:
        self._ids += 1
        return f"{self.scenario.id_prefix}{prefix}-{self.scenario.seed}-{self._ids:08d}"

    def _asset(self, symbol: str) -> str:
        return self.symbols[symbol].settle_asset

    def _maker(self, symbol: str) -> str:
        return f"{self.scenario.id_prefix}maker-{symbol}"

    def _tick_size(self, symbol: str) -> Decimal:
        return self.symbols[symbol].tick_size or CENT

    @staticmethod
    def _on_grid(value: Decimal, step: Decimal, rounding: str = decimal.ROUND_HALF_EVEN) -> Decimal:
        """``value`` rounded to a multiple of ``step`` (any step, not only powers of ten)."""
        return _WORK.divide(value, step).to_integral_value(rounding) * step

    def _lots(self, symbol: str, quantity: Decimal) -> Decimal:
        lot = self.symbols[symbol].lot_size or Decimal("0.001")
        return max(lot, self._on_grid(quantity, lot, decimal.ROUND_FLOOR))

    def _open_quantity(self, trader: Trader) -> Decimal:
        position = self.engine.book.get(trader.account_id, trader.symbol)
        return position.free if position else Decimal(0)
