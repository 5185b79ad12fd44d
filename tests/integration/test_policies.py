"""The hand-computed policy and trigger cases (tests/policy_scenarios.py) through the real broker,
each policy chosen by its settings, order by order."""

from dataclasses import replace

import pytest

from adl_stream.engine import AdlOrder, ShortfallDecision
from adl_stream.wire import Codec
from tests import policy_scenarios as ps
from tests.conftest import Feed, read_topic

pytestmark = pytest.mark.integration
codec = Codec()


@pytest.mark.parametrize("name", sorted(ps.CASES))
def test_case_through_the_broker(name, settings, start_processor):
    case = ps.CASES[name]
    running = start_processor(replace(settings, symbols=ps.SYMBOLS, **case.settings))
    feed, handled = Feed(settings), 0
    for stage in case.stages:  # a stage once the one before is applied: the order is the case's
        feed.send(*stage)
        handled += len(stage)
        running.wait_handled(handled)
    orders = [codec.decode(m.value(), AdlOrder) for m in read_topic(settings, settings.topics.adl_orders,
                                                                     len(case.orders))]
    assert [ps.order_summary(o) for o in orders] == case.orders
    decisions = [codec.decode(m.value(), ShortfallDecision)
                 for m in read_topic(settings, settings.topics.adl_decisions, len(case.decisions))]
    assert {d.event_id: ps.decision_summary(d) for d in decisions} == case.decisions
    policy = f"{running.processor.settings.trigger_policy}/{running.processor.settings.ranking_policy}"
    assert {d.policy for d in decisions} == {policy}
    assert running.close() == 0
