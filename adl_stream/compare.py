"""The policy lab: the same crash decided under several trigger/allocation policies, side by side.

Two ways to get a crash (``adl-stream compare``):

- *scenario*: the simulator's crash (:mod:`.simulation.market`), run once per policy. The simulated
  exchange reacts to that policy's own orders (its ADL fills, its bankrupt accounts), so the later
  liquidations and shortfalls differ by policy.
- *recorded*: the input records of a deployment (:mod:`.runtime.recorded`), applied per settle
  asset in the processor's order to a fresh :class:`~adl_stream.engine.Engine` per policy. Each
  policy's orders are filled at once (``ADL`` fills of both sides at the bankruptcy price, at the
  shortfall's time); the recorded ``ADL`` fills are ignored. The recorded liquidations, marks and
  balances do not change with the policy. A recorded shortfall whose bankrupt position this
  policy has already deleveraged in part is decided for what is left of it (the shortfall scaled
  in proportion, rounded up to the wire scale), one with nothing left is dropped; both are counted.

Either way a :class:`Recorder` watches the engine: right after a decision, before its orders are
filled, it notes for each order its counterparty's position, uPnL and equity (the pre-ADL state),
and :func:`report` turns that into the figures of one policy (:data:`REPORT_KEYS`). Money stays
exact (``Decimal``); only ratios (shares, gini, leverage) are floats, each computed from the exact
values in a fixed 28-digit context, so a report is the same byte for byte on every run.
"""

from __future__ import annotations

import decimal
import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal

from .engine import (
    ALLOCATION_POLICIES,
    AdlOrder,
    Engine,
    Fill,
    LiquidationShortfall,
    Rejected,
    ShortfallDecision,
    SymbolSpec,
)
from .engine.allocation import allocation_policy
from .engine.funds import TRIGGER_POLICIES, trigger_policy
from .engine.numbers import EXACT, WIRE_SCALE, ZERO
from .engine.records import ADL, BUY, FUND_COVERED, SELL
from .readable import plain

TRIGGERS = TRIGGER_POLICIES
ALLOCATIONS = tuple(ALLOCATION_POLICIES)
#: The keys of one policy's entry in ``compare.json``, in their order.
REPORT_KEYS = (
    "policy", "shortfalls", "fund_covered_shortfalls", "adl_shortfalls", "fund_paid", "orders", "adl_quantity",
    "adl_notional", "unfilled_quantity", "haircut_total", "accounts_touched", "positions_closed_fully",
    "max_haircut_share_of_pnl", "max_haircut_share_of_equity", "haircut_gini", "max_leverage_after",
    "later_shortfalls", "later_shortfall_total",
)
#: Ratios are computed in this context from exact values, then written as floats.
RATIO = decimal.Context(prec=28, rounding=decimal.ROUND_HALF_EVEN)
UNBOUNDED = "inf"
"""``max_leverage_after`` when an account is left with a position and equity <= 0."""
_WIRE = Decimal(1).scaleb(-WIRE_SCALE)


@dataclass(frozen=True)
class PolicySpec:
    """One trigger policy with one allocation policy, and their settings."""

    trigger_name: str
    allocation_name: str
    fund_floor: Decimal = ZERO
    drawdown_pct: Decimal = Decimal(30)
    drawdown_window_ms: int = 28_800_000
    haircut_cap: Decimal = Decimal(1)

    @property
    def name(self) -> str:
        return f"{self.trigger_name}/{self.allocation_name}"

    def trigger(self):
        return trigger_policy(self.trigger_name, fund_floor=self.fund_floor, drawdown_pct=self.drawdown_pct,
                              drawdown_window_ms=self.drawdown_window_ms)

    def allocation(self):
        return allocation_policy(self.allocation_name, haircut_cap=self.haircut_cap)


def policy_specs(triggers: Sequence[str] = TRIGGERS, allocations: Sequence[str] = ALLOCATIONS,
                 **settings) -> list[PolicySpec]:
    """Every trigger with every allocation, triggers first, in the order given; ``settings`` are
    :class:`PolicySpec`'s (``fund_floor``, ``drawdown_pct``, ...)."""
    for name in triggers:
        if name not in TRIGGERS:
            raise ValueError(f"--triggers: unknown trigger policy {name!r}; choose from {', '.join(TRIGGERS)}")
    for name in allocations:
        if name not in ALLOCATIONS:
            raise ValueError(f"--policies: unknown allocation policy {name!r}; choose from {', '.join(ALLOCATIONS)}")
    return [PolicySpec(t, a, **settings) for t in dict.fromkeys(triggers) for a in dict.fromkeys(allocations)]


@dataclass(frozen=True, slots=True)
class Hit:
    """One ADL order as its counterparty lived it: the state right before the order, and the order."""

    event_id: str
    ts: int
    account_id: str
    symbol: str
    side: str
    """The order's side: BUY closes a short, SELL a long."""
    quantity: Decimal
    price: Decimal
    mark: Decimal
    """The mark the decision ranked at (the bankruptcy price before the first mark)."""
    held: Decimal
    """``|quantity|`` of the position before the order."""
    upnl: Decimal
    equity: Decimal

    @property
    def haircut(self) -> Decimal:
        """SPEC §3.5: a short buys back at the price, a long sells at it, against the mark."""
        per_unit = EXACT.subtract(self.price, self.mark) if self.side == BUY else EXACT.subtract(self.mark, self.price)
        return EXACT.multiply(self.quantity, per_unit)

    @property
    def closed_fully(self) -> bool:
        return self.quantity == self.held

    def leverage_after(self) -> Decimal | None:
        """Effective leverage of the position right after the order, ``(held - quantity) * M /
        (equity - haircut)``: 0 once closed, None (unbounded) with equity <= 0 left."""
        left = EXACT.subtract(self.held, self.quantity)
        if left == ZERO:
            return ZERO
        equity = EXACT.subtract(self.equity, self.haircut)
        return RATIO.divide(EXACT.multiply(left, self.mark), equity) if equity > ZERO else None


class Tally:
    """The running figures of one policy's hits: what :func:`report` needs, without keeping the
    hits (a spreading policy on a large crash gives millions)."""

    def __init__(self) -> None:
        self.orders = 0
        self.adl_quantity = ZERO
        self.adl_notional = ZERO
        self.haircut_total = ZERO
        self.haircut_of: dict[str, Decimal] = defaultdict(lambda: ZERO)
        self.closed_fully = 0
        self.max_share_of_pnl: float | None = None
        self.max_share_of_equity: float | None = None
        self.share_of_pnl: dict[str, float] = {}
        """Account -> its largest haircut ÷ uPnL before the ADL (positions in profit)."""
        self.max_leverage: Decimal | None = None
        self.unbounded = False

    def add(self, hit: Hit) -> None:
        with decimal.localcontext(EXACT):
            haircut = hit.haircut
            self.orders += 1
            self.adl_quantity += hit.quantity
            self.adl_notional += hit.quantity * hit.price
            self.haircut_total += haircut
            self.haircut_of[hit.account_id] += haircut
            self.closed_fully += hit.closed_fully
            if hit.upnl > ZERO:
                share = _ratio(haircut, hit.upnl)
                self.max_share_of_pnl = _max(self.max_share_of_pnl, share)
                self.share_of_pnl[hit.account_id] = _max(self.share_of_pnl.get(hit.account_id), share)
            if hit.equity > ZERO:
                self.max_share_of_equity = _max(self.max_share_of_equity, _ratio(haircut, hit.equity))
            leverage = hit.leverage_after()
            if leverage is None:
                self.unbounded = True
            else:
                self.max_leverage = leverage if self.max_leverage is None else max(self.max_leverage, leverage)


def _max(held, value):
    return value if held is None else max(held, value)


@dataclass
class PolicyRun:
    """What one policy did to the crash: every decision in processing order, the :class:`Tally`
    of its orders, and (``keep``) every order and :class:`Hit`; in recorded mode, how the
    counterfactual had to bend the record (``notes``)."""

    policy: str
    keep: bool = True
    decisions: list[ShortfallDecision] = field(default_factory=list)
    orders: list[AdlOrder] = field(default_factory=list)
    hits: list[Hit] = field(default_factory=list)
    tally: Tally = field(default_factory=Tally)
    notes: Counter = field(default_factory=Counter)


class Recorder:
    """``observer(engine, record, outcome)``: notes each decision and, for each of its orders, the
    counterparty's state, read from the engine right after the decision (orders not filled yet)."""

    def __init__(self, policy: str, keep: bool = True) -> None:
        self.run = PolicyRun(policy, keep)

    def __call__(self, engine: Engine, record, outcome) -> None:
        decision = outcome.decision
        if decision is None:
            return
        run = self.run
        run.decisions.append(decision)
        if not outcome.orders:
            return
        mark = engine.mark(record.symbol) or record.bankruptcy_price
        asset = engine.symbols[record.symbol].settle_asset
        with decimal.localcontext(EXACT):
            for order in outcome.orders:
                position = engine.book.get(order.account_id, order.symbol)
                hit = Hit(order.shortfall_event_id, order.ts, order.account_id, order.symbol, order.side,
                          order.quantity, order.price, mark, position.quantity.copy_abs(), position.upnl(mark),
                          engine.equity(order.account_id, asset))
                run.tally.add(hit)
                if run.keep:
                    run.orders.append(order)
                    run.hits.append(hit)


# -- running -------------------------------------------------------------------------------------


def run_scenario(scenario, symbols: Mapping[str, SymbolSpec] | None, spec: PolicySpec, keep: bool = True) -> PolicyRun:
    """The simulator's crash under ``spec``: the simulated exchange fills this policy's orders."""
    from .simulation.market import MarketSimulator

    recorder = Recorder(spec.name, keep)
    simulator = MarketSimulator(scenario, symbols, trigger=spec.trigger(), ranking=spec.allocation(),
                                observer=recorder)
    for _ in simulator.records():
        pass
    return recorder.run


def run_records(by_asset: Mapping[str, Iterable], symbols: Mapping[str, SymbolSpec], spec: PolicySpec, *,
                reservation_timeout_ms: int = 60_000, dedup_window_ms: int = 86_400_000,
                keep: bool = True) -> PolicyRun:
    """Recorded input records (per settle asset, in processing order) decided again under ``spec``,
    each of its orders filled at once, the recorded ``ADL`` fills ignored (see the module's doc)."""
    recorder = Recorder(spec.name, keep)
    notes = recorder.run.notes
    for asset in sorted(by_asset):
        engine = Engine({n: s for n, s in symbols.items() if s.settle_asset == asset}, trigger=spec.trigger(),
                        ranking=spec.allocation(), reservation_timeout_ms=reservation_timeout_ms,
                        dedup_window_ms=dedup_window_ms)
        for record in by_asset[asset]:
            if isinstance(record, Fill) and record.kind == ADL:
                notes["adl_fills_ignored"] += 1
                continue
            try:
                outcome = engine.apply(record)
            except Rejected as rejected:
                record, outcome = _resized(engine, record, rejected, notes)
                if outcome is None:
                    continue
            recorder(engine, record, outcome)
            for order in outcome.orders:
                _fill_at_once(engine, order)
    return recorder.run


def _resized(engine: Engine, record, rejected: Rejected, notes: Counter):
    """A recorded shortfall refused because this policy's earlier orders closed part of the
    bankrupt position: decided for what is left (``shortfalls_resized``), or dropped
    (``shortfalls_dropped``). Any other refusal is bad input the processor dead-letters too."""
    if not isinstance(record, LiquidationShortfall) or rejected.reason not in ("exceeds_position", "unknown_position"):
        notes["records_refused"] += 1
        return record, None
    position = engine.book.get(record.account_id, record.symbol)
    long = record.position_side == "LONG"
    if position is None or position.free == ZERO or (position.quantity > ZERO) != long:
        notes["shortfalls_dropped"] += 1
        return record, None
    with decimal.localcontext(EXACT):
        free = position.free
        amount = RATIO.divide(EXACT.multiply(record.shortfall, free), record.quantity).quantize(
            _WIRE, rounding=decimal.ROUND_CEILING, context=RATIO)
    resized = replace(record, quantity=free, shortfall=amount)
    try:
        outcome = engine.apply(resized)
    except Rejected:
        notes["shortfalls_dropped"] += 1
        return record, None
    notes["shortfalls_resized"] += 1
    return resized, outcome


def _fill_at_once(engine: Engine, order: AdlOrder) -> None:
    """The exchange executes ``order`` now: ADL fills of both sides at the bankruptcy price."""
    bankrupt_side = SELL if order.side == BUY else BUY
    for account, side in ((order.account_id, order.side), (order.bankrupt_account_id, bankrupt_side)):
        engine.apply(Fill(f"{order.order_id}/compare/{account}", account, order.symbol, side, order.quantity,
                          order.price, ZERO, ADL, order.order_id, engine.stream_time))


# -- the report ----------------------------------------------------------------------------------


def _ratio(numerator: Decimal, denominator: Decimal) -> float:
    return float(RATIO.divide(numerator, denominator))


def gini(values: Sequence[Decimal]) -> float | None:
    """Gini coefficient of non-negative amounts (None for none; 0 when all are 0):
    ``2 Σ i x_(i) / (n Σ x) - (n + 1) / n`` over the ascending order."""
    if not values:
        return None
    ordered = sorted(values)
    total = sum(ordered, ZERO)
    if total == ZERO:
        return 0.0
    n = len(ordered)
    weighted = sum((EXACT.multiply(i, x) for i, x in enumerate(ordered, 1)), ZERO)
    return float(RATIO.subtract(RATIO.divide(2 * weighted, n * total), RATIO.divide(n + 1, n)))


def report(run: PolicyRun) -> dict:
    """One policy's figures (:data:`REPORT_KEYS`): decimals exact, ratios floats, None when there is
    nothing to measure (no ADL; no account in profit)."""
    tally, decisions = run.tally, run.decisions
    with decimal.localcontext(EXACT):
        in_time = sorted(range(len(decisions)), key=lambda i: decisions[i].ts)  # stable: processing order
        first = next((n for n, i in enumerate(in_time) if decisions[i].orders > 0), None)
        later = [] if first is None else [decisions[i] for i in in_time[first + 1:]]
        if tally.unbounded:
            max_leverage = UNBOUNDED
        else:
            max_leverage = None if tally.max_leverage is None else float(tally.max_leverage)
        entry = {
            "policy": run.policy,
            "shortfalls": len(decisions),
            "fund_covered_shortfalls": sum(1 for d in decisions if d.outcome == FUND_COVERED),
            "adl_shortfalls": sum(1 for d in decisions if d.outcome != FUND_COVERED),
            "fund_paid": sum((d.fund_covered for d in decisions), ZERO),
            "orders": tally.orders,
            "adl_quantity": tally.adl_quantity,
            "adl_notional": tally.adl_notional,
            "unfilled_quantity": sum((d.unfilled_quantity for d in decisions), ZERO),
            "haircut_total": tally.haircut_total,
            "accounts_touched": len(tally.haircut_of),
            "positions_closed_fully": tally.closed_fully,
            "max_haircut_share_of_pnl": tally.max_share_of_pnl,
            "max_haircut_share_of_equity": tally.max_share_of_equity,
            "haircut_gini": gini([max(v, ZERO) for v in tally.haircut_of.values()]),
            "max_leverage_after": max_leverage,
            "later_shortfalls": len(later),
            "later_shortfall_total": sum((d.shortfall for d in later), ZERO),
        }
    assert tuple(entry) == REPORT_KEYS
    return entry


@dataclass
class Comparison:
    """The report of every policy (``entries``, in order), each one's shares of PnL per account
    (for the picture), and the runs themselves when kept."""

    mode: str
    inputs: dict
    entries: list[dict]
    shares_of_pnl: dict[str, list[float]]
    runs: list[PolicyRun] = field(default_factory=list)

    def document(self) -> dict:
        """``compare.json``: ``{"mode", "inputs", "policies": [one entry per policy]}``, JSON-ready."""
        return plain({"mode": self.mode, "inputs": self.inputs, "policies": self.entries})

    def json(self) -> str:
        return json.dumps(self.document(), indent=2) + "\n"


class _Collector:
    """Runs one policy after another, keeping each one's report (and the run, ``keep``)."""

    def __init__(self, keep: bool) -> None:
        self.keep = keep
        self.entries: list[dict] = []
        self.shares: dict[str, list[float]] = {}
        self.runs: list[PolicyRun] = []

    def add(self, run: PolicyRun) -> PolicyRun:
        self.entries.append(report(run))
        self.shares[run.policy] = sorted(run.tally.share_of_pnl.values(), reverse=True)
        if self.keep:
            self.runs.append(run)
        return run


def compare_scenario(scenario, symbols: Mapping[str, SymbolSpec] | None, specs: Sequence[PolicySpec],
                     progress=None, keep: bool = False) -> Comparison:
    """The simulator's crash once per policy (``progress(spec)`` before each)."""
    from .simulation.market import MarketSimulator, default_symbols

    symbols = dict(symbols or default_symbols())
    collector = _Collector(keep)
    for spec in specs:
        if progress:
            progress(spec)
        collector.add(run_scenario(scenario, symbols, spec, keep))
    fund_seed = MarketSimulator(scenario, symbols).fund_seed
    inputs = {
        "accounts": scenario.accounts, "seed": scenario.seed, "crash_depth": scenario.crash_depth,
        "rebound": scenario.rebound, "crash_steps": scenario.crash_steps, "start_ts": scenario.start_ts,
        "fund_seed": fund_seed, "symbols": sorted(symbols), **_policy_settings(specs),
    }
    return Comparison("scenario", inputs, collector.entries, collector.shares, collector.runs)


def compare_recorded(settings, specs: Sequence[PolicySpec], progress=None, config: str | None = None,
                     keep: bool = False) -> Comparison:
    """The recorded inputs of ``settings``' topics decided again under each policy."""
    from .runtime.recorded import read_recorded

    recorded = read_recorded(settings)
    collector, notes = _Collector(keep), {}
    for spec in specs:
        if progress:
            progress(spec)
        run = collector.add(run_records(recorded.by_asset, settings.symbols, spec,
                                        reservation_timeout_ms=settings.reservation_timeout_ms,
                                        dedup_window_ms=settings.dedup_window_ms, keep=keep))
        notes[run.policy] = dict(sorted(run.notes.items()))
    inputs = {
        "config": config, "topics": list(settings.topics.inputs()), "records": recorded.read,
        "left_out": dict(sorted(recorded.left_out.items())),
        "records_by_settle_asset": {a: len(r) for a, r in recorded.by_asset.items()},
        "recorded_policy": f"{settings.trigger_policy}/{settings.ranking_policy}",
        **_policy_settings(specs),
        "counterfactual": notes,
    }
    return Comparison("recorded", inputs, collector.entries, collector.shares, collector.runs)


def _policy_settings(specs: Sequence[PolicySpec]) -> dict:
    first = specs[0] if specs else PolicySpec("fund-exhausted", "pnl-leverage")
    return {"triggers": list(dict.fromkeys(s.trigger_name for s in specs)),
            "allocations": list(dict.fromkeys(s.allocation_name for s in specs)),
            "fund_floor": first.fund_floor, "drawdown_pct": first.drawdown_pct,
            "drawdown_window_ms": first.drawdown_window_ms, "haircut_cap": first.haircut_cap}
