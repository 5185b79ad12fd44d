"""The hand-computed policy and trigger cases (tests/policy_scenarios.py) on the engine, order by order."""

from decimal import Decimal as D

import pytest

from adl_stream.engine import Engine
from adl_stream.runtime.config import Settings
from tests import policy_scenarios as ps


@pytest.mark.parametrize("name", sorted(ps.CASES))
def test_case_order_by_order(name):
    case = ps.CASES[name]
    settings = Settings(**case.settings)
    engine = Engine(ps.SYMBOLS, trigger=settings.trigger(), ranking=settings.ranking())
    orders, decisions = [], {}
    for stage in case.stages:
        for record in stage:
            outcome = engine.apply(record)
            orders += outcome.orders
            if outcome.decision is not None:
                decisions[outcome.decision.event_id] = ps.decision_summary(outcome.decision)
                assert outcome.decision.policy == f"{settings.trigger_policy}/{settings.ranking_policy}"
    assert [ps.order_summary(o) for o in orders] == case.orders
    assert decisions == case.decisions


def test_the_haircut_is_rounded_to_the_wire_scale_half_even():
    """A product of two wire decimals has up to 36 places; the decision reports it at 18."""
    symbols = {"BTCUSDT": ps.SymbolSpec("BTCUSDT", "USDT", "USDT")}
    engine = Engine(symbols)
    for record in [*ps.book([("S1", 1, 100, 1000)])]:
        engine.apply(record)
    short = ps.LiquidationShortfall("E1", "B", "BTCUSDT", "LONG", D("0.000000000000000003"),
                                    D("90.5"), D(1), 2_000)  # 0.5 x 3e-18 = 1.5e-18 -> 2e-18
    decision = engine.apply(short).decision
    assert decision.haircut == D("0.000000000000000002")
