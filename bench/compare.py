"""Time of ``adl-stream compare`` (scenario mode): the simulator's crash decided once per policy.

Each policy runs the whole crash (the simulator, the engine beside it, the exchange filling that
policy's orders) and the report is computed from it, as ``adl-stream compare`` does. The cost is
the ADL orders: a queue policy closes a few positions per shortfall, a spreading one touches the
whole opposite side (about n² orders for n accounts), and every order is two fills through the
engine.
"""

from __future__ import annotations

import time

from adl_stream.compare import ALLOCATIONS, TRIGGERS, policy_specs, report, run_scenario
from adl_stream.simulation.market import MarketSimulator, Scenario


def run(accounts: int, triggers=TRIGGERS, allocations=ALLOCATIONS) -> list[dict]:
    scenario = Scenario(accounts=accounts)
    floor = MarketSimulator(scenario).fund_seed / 2  # adl-stream compare's default
    rows = []
    for spec in policy_specs(triggers, allocations, fund_floor=floor):
        started = time.perf_counter()
        entry = report(run_scenario(scenario, None, spec, keep=False))
        rows.append({"policy": spec.name, "accounts": accounts, "shortfalls": entry["shortfalls"],
                     "orders": entry["orders"], "seconds": round(time.perf_counter() - started, 2)})
    rows.append({"policy": "all", "accounts": accounts, "shortfalls": sum(r["shortfalls"] for r in rows),
                 "orders": sum(r["orders"] for r in rows), "seconds": round(sum(r["seconds"] for r in rows), 2)})
    return rows
