"""The simulator alone: reproducible for a seed, and a crash with both fund-covered shortfalls and ADL."""

from decimal import Decimal as D

from adl_stream.simulation.market import MarketSimulator, Scenario
from adl_stream.wire import Codec
from tests.invariants import check_spec_invariants

codec = Codec()


def encoded(scenario: Scenario) -> list[bytes]:
    return [codec.encode(r) for r in MarketSimulator(scenario).records()]


def test_the_same_seed_gives_the_same_records_byte_for_byte_and_another_seed_does_not():
    first, again = encoded(Scenario(seed=11, accounts=300)), encoded(Scenario(seed=11, accounts=300))
    assert len(first) > 2_000
    assert first == again
    assert encoded(Scenario(seed=12, accounts=300)) != first


def test_a_crash_drains_the_fund_then_deleverages_and_every_decision_keeps_the_invariants():
    simulator = MarketSimulator(Scenario(seed=3, accounts=400))
    records = list(simulator.records())
    decisions = simulator.tape.decisions
    outcomes = {d.outcome for d in decisions}
    assert {"FUND_COVERED", "ADL"} <= outcomes
    first_adl = min(d.ts for d in decisions if d.outcome != "FUND_COVERED")
    assert any(d.outcome == "FUND_COVERED" and d.ts < first_adl for d in decisions)  # fund first
    assert all(b.ts > a.ts for a, b in zip(records, records[1:]) if type(a) is not type(b) or a.ts != b.ts)
    orders = [o for o in _engine_orders(records, simulator)]
    counts = check_spec_invariants(records, decisions, orders, {s: spec.fund_id for s, spec in simulator.symbols.items()})
    assert counts["adl"] > 10 and counts["orders"] >= counts["adl"]
    marks = simulator.tape.marks["BTCUSDT"]
    low = min(m for _, m in marks)
    assert low / marks[0][1] < D("0.75") < marks[-1][1] / marks[0][1]  # -30 % then a partial rebound


def _engine_orders(records, simulator):
    """The ADL orders, as the fills echoing them carry them (order id, account, side, qty, price)."""
    from adl_stream.engine import Engine

    engine = Engine(simulator.symbols)
    for record in records:
        yield from engine.apply(record).orders
