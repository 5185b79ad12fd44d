"""Property tests of the SPEC §4 invariants the engine owns."""

import decimal
from decimal import Decimal as D

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adl_stream.engine import (
    BalanceUpdate,
    Engine,
    Fill,
    FundFloor,
    FundFlow,
    LiquidationShortfall,
    MarkPrice,
    Rejected,
)
from adl_stream.engine.numbers import EXACT
from adl_stream.engine.positions import Position
from tests import scenarios as sc

settings.register_profile("ci", max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci")

# Wire-scale decimals (scale 18 at most), kept to realistic magnitudes.
quantities = st.decimals(min_value=D("0.001"), max_value=D(1000), places=3)
prices = st.decimals(min_value=D("0.01"), max_value=D(100000), places=2)
accounts = st.sampled_from([f"A{i}" for i in range(8)])


@given(st.lists(st.tuples(st.booleans(), quantities, prices), min_size=1, max_size=40))
def test_position_pnl_is_conserved_exactly(fills):
    """Realized PnL minus the cost left open equals the cash the fills moved, to the last digit."""
    position, realized, cash, net = Position("A", "X"), D(0), D(0), D(0)
    with decimal.localcontext(EXACT):  # the engine's context (Engine.apply sets it)
        for buy, qty, price in fills:
            signed = qty if buy else -qty
            realized += position.apply_fill(signed, price)
            cash -= signed * price
            net += signed
    assert position.quantity == net
    assert realized - position.cost == cash
    assert position.quantity == 0 or (position.cost > 0) == (position.quantity > 0)


@st.composite
def markets(draw):
    """Positions from random fills, wallets, a mark, a fund, then shortfalls and ADL fills."""
    records, ts = [], 1_000
    for account in [f"A{i}" for i in range(8)]:
        records.append(BalanceUpdate(account, "USDT", draw(st.decimals(-100, 10000, places=2)), ts))
    records.append(FundFlow("fund0", "USDT", "DEPOSIT", draw(st.decimals(0, 5000, places=2)), ts))
    for i in range(draw(st.integers(4, 30))):
        ts += 1
        records.append(sc.Fill(f"f{i}", draw(accounts), "BTCUSDT", draw(st.sampled_from(["BUY", "SELL"])),
                               draw(quantities), draw(prices), D(0), "TRADE", None, ts))
    records.append(MarkPrice("BTCUSDT", draw(prices), ts))
    events = draw(st.lists(st.tuples(accounts, st.booleans(), st.integers(1, 100), prices,
                                     st.decimals(0, 3000, places=2), st.booleans()), max_size=12))
    return records, events


def _run_market(engine, records, events):
    """Apply the market, then each shortfall (sized from the state) and, at random, its ADL fills."""
    for record in records:
        try:
            engine.apply(record)
        except Rejected:
            pass
    ts = engine.stream_time
    results = []
    for n, (account, flow_in, pct, bankruptcy, amount, fill_orders) in enumerate(events):
        ts += 10
        if flow_in:
            engine.apply(FundFlow(f"in{n}", "USDT", "FEE_INCOME", amount / 2 + D("0.01"), ts))
        position = engine.book.get(account, "BTCUSDT")
        if position is None or position.free == 0:
            continue
        qty = max(D("0.001"), (position.free * pct / 100).quantize(D("0.001")))
        side = "LONG" if position.quantity > 0 else "SHORT"
        frees = {p.account_id: p.free for p in engine.book.in_symbol("BTCUSDT")}
        fund_before = engine.funds.balance("USDT")
        outcome = engine.apply(LiquidationShortfall(f"E{n}", account, "BTCUSDT", side, qty, bankruptcy, amount, ts))
        results.append((qty, frees, fund_before, outcome))
        if fill_orders:
            for k, order in enumerate(outcome.orders):
                for who, closing in ((order.account_id, order.side), (account, "SELL" if order.side == "BUY" else "BUY")):
                    engine.apply(Fill(f"adl{n}-{k}-{who}", who, "BTCUSDT", closing, order.quantity,
                                      order.price, D(0), "ADL", order.order_id, ts))
    return results


@given(markets())
def test_shortfall_invariants(market):
    records, events = market
    engine = Engine(sc.SYMBOLS)
    inflows = covered = D(0)
    for qty, frees, fund_before, outcome in _run_market(engine, records, events):
        decision = outcome.decision
        assert sum((o.quantity for o in outcome.orders), D(0)) == decision.adl_quantity
        if decision.outcome == "FUND_COVERED":
            assert decision.fund_covered == outcome.decision.shortfall
            assert not outcome.orders and decision.adl_quantity == decision.unfilled_quantity == 0
            covered += decision.fund_covered
        else:  # ADL: conservation of quantity
            assert decision.adl_quantity + decision.unfilled_quantity == qty
            assert decision.fund_covered == 0 and decision.fund_balance_after == fund_before
            assert decision.outcome == ("ADL_PARTIAL" if decision.unfilled_quantity else "ADL")
        taken: dict[str, D] = {}
        for order in outcome.orders:
            assert order.quantity > 0
            taken[order.account_id] = taken.get(order.account_id, D(0)) + order.quantity
        for account, quantity in taken.items():
            assert quantity <= frees[account], "counterparty closed beyond its free quantity"
        assert decision.fund_balance_after >= 0
        assert [o.rank for o in outcome.orders] == list(range(1, len(outcome.orders) + 1))
    for position in engine.book:
        assert 0 <= position.reserved <= abs(position.quantity) or position.reserved == 0
    flows = [r for r in records if isinstance(r, FundFlow)]
    inflows = sum((f.amount for f in flows), D(0))
    fee_income = sum((ev[4] / 2 + D("0.01") for ev in events if ev[1]), D(0))
    assert engine.funds.balance("USDT") == inflows + fee_income - covered
    assert engine.funds.balance("USDT") >= 0


@given(markets(), st.decimals(0, 2000, places=2))
def test_fund_never_negative_under_the_floor_policy(market, floor):
    records, events = market
    engine = Engine(sc.SYMBOLS, trigger=FundFloor(floor))
    for *_, outcome in _run_market(engine, records, events):
        if outcome.decision.outcome == "FUND_COVERED":
            assert outcome.decision.fund_balance_after >= floor
    assert engine.funds.balance("USDT") >= 0


@given(markets(), st.data())
def test_a_repeated_record_has_no_second_effect(market, data):
    records, events = market
    once, twice = Engine(sc.SYMBOLS), Engine(sc.SYMBOLS)
    _run_market(once, records, events)
    repeat = data.draw(st.sets(st.integers(0, len(records) - 1)))
    doubled = [r for i, r in enumerate(records) for _ in range(2 if i in repeat else 1)]
    _run_market(twice, doubled, events)
    assert twice.snapshot() == once.snapshot()
