"""Reconciliation: ``adl-stream compare --from-topics`` with the processor's own policy decides the
recorded topics exactly as the processor did, order by order, through the real broker."""

import json
from dataclasses import replace
from decimal import Decimal as D

import pytest

from adl_stream.cli import main
from adl_stream.compare import PolicySpec, compare_recorded
from adl_stream.demo import _unique
from adl_stream.engine import AdlOrder, ShortfallDecision
from adl_stream.runtime.config import load_settings
from adl_stream.runtime.kafka import read_to_end
from adl_stream.simulation.market import MarketSimulator, Scenario, default_symbols
from adl_stream.simulation.publish import Publisher
from adl_stream.wire import Codec
from tests.conftest import wait_for

pytestmark = pytest.mark.integration
codec = Codec()


def write_settings(settings, path) -> str:
    """The TOML of ``settings`` with each symbol's lot and tick (the policies spread on the lots)."""
    lines = [f"bootstrap_servers = {settings.bootstrap_servers!r}", f"group_id = {settings.group_id!r}",
             f"ranking_policy = {settings.ranking_policy!r}", f"trigger_policy = {settings.trigger_policy!r}"]
    for name, spec in settings.symbols.items():
        lines += [f"[symbols.{name}]", f"settle_asset = {spec.settle_asset!r}", f"fund_id = {spec.fund_id!r}",
                  f'lot_size = "{spec.lot_size}"', f'tick_size = "{spec.tick_size}"']
    lines += ["[topics]", *(f"{k} = {v!r}" for k, v in settings.topics.__dict__.items())]
    lines += ["[kafka]", *(f'"{k}" = {v!r}' for k, v in settings.kafka.items())]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_compare_from_topics_decides_as_the_processor_did(settings, start_processor, tmp_path):
    settings = replace(settings, symbols=default_symbols(), ranking_policy="pro-rata", max_idle_ms=2000)
    simulator = MarketSimulator(Scenario(seed=7, accounts=150), settings.symbols, trigger=settings.trigger(),
                                ranking=settings.ranking())
    records = list(simulator.records())
    # Published before the processor starts, as the demo does: the merge then sees every partition.
    Publisher({"bootstrap.servers": settings.bootstrap_servers}, settings.topics).send_all(records)
    running = start_processor(settings)
    wait_for(lambda: running.handled() >= len(records), 120, "every record handled")
    assert running.close() == 0
    decisions = _unique(codec.decode(m.value(), ShortfallDecision)
                        for m in read_to_end(settings, settings.topics.adl_decisions))
    orders = _unique(codec.decode(m.value(), AdlOrder) for m in read_to_end(settings, settings.topics.adl_orders))
    assert len(decisions) == len(simulator.tape.decisions) and len(orders) == simulator.tape.orders > 20

    config = write_settings(settings, tmp_path / "adl.toml")
    loaded = load_settings(config)
    (run,) = compare_recorded(loaded, [PolicySpec("fund-exhausted", "pro-rata")], keep=True).runs
    assert sorted(run.decisions, key=lambda d: d.event_id) == sorted(decisions, key=lambda d: d.event_id)
    assert sorted(run.orders, key=lambda o: o.order_id) == sorted(orders, key=lambda o: o.order_id)
    assert dict(run.notes) == {"adl_fills_ignored": 2 * len(orders)}

    # The command over the same topics: its report counts what the processor wrote.
    assert main(["compare", "--config", config, "--from-topics", "--triggers", "fund-exhausted",
                 "--policies", "pro-rata,pnl-leverage", "--output", str(tmp_path / "out")]) == 0
    document = json.loads((tmp_path / "out" / "compare.json").read_text())
    assert document["mode"] == "recorded" and document["inputs"]["records"] == len(records)
    assert document["inputs"]["recorded_policy"] == "fund-exhausted/pro-rata"
    mine, other = document["policies"]
    assert mine["policy"] == "fund-exhausted/pro-rata"
    assert (mine["shortfalls"], mine["orders"]) == (len(decisions), len(orders))
    assert D(mine["adl_notional"]) == sum(o.quantity * o.price for o in orders)
    assert D(mine["haircut_total"]) == sum(d.haircut for d in decisions)
    assert D(mine["fund_paid"]) == sum(d.fund_covered for d in decisions)
    assert other["policy"] == "fund-exhausted/pnl-leverage" and other["orders"] < mine["orders"]
