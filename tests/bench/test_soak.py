"""The soak script's own arithmetic (bench/soak.py): the market passes it feeds and the p99 it prints."""

import subprocess
import sys
from itertools import islice

from adl_stream.engine import Engine, Fill, LiquidationShortfall
from adl_stream.simulation.market import default_symbols
from bench.soak import market, p99, passes


def test_p99_is_the_bucket_bound_of_the_minutes_observations_also_across_a_restart():
    before = {0.5: 10.0, 1.0: 10.0, float("inf"): 10.0}
    now = {0.5: 10.0, 1.0: 60.0, float("inf"): 110.0}  # 50 new under 1 s, 50 above it
    assert p99(now, before) == float("inf")
    now = {0.5: 10.0, 1.0: 109.0, float("inf"): 110.0}  # 99 of 100 new ones under 1 s
    assert p99(now, before) == 1.0
    restarted = {0.5: 3.0, 1.0: 4.0, float("inf"): 4.0}  # a new process: its counters count from 0
    assert p99(restarted, before) == 1.0
    assert p99(before, before) is None


def test_every_pass_has_new_ids_rising_event_times_and_is_decided_like_the_first():
    records = market(60)
    n = len(records)
    fed = [record for record, _ in islice(passes(records, 5_000, 50_000.0), 3 * n)]
    assert all(a.ts <= b.ts for a, b in zip(fed, fed[1:])) and fed[n].ts > fed[n - 1].ts
    ids = [r.fill_id for r in fed if isinstance(r, Fill)] + [r.event_id for r in fed if isinstance(r, LiquidationShortfall)]
    assert len(ids) == len(set(ids))
    engine = Engine(default_symbols())
    decided = []
    for k in range(3):  # every record accepted (apply raises Rejected otherwise), the same decisions
        outcomes = [engine.apply(record) for record in fed[k * n:(k + 1) * n]]
        decided.append([(o.decision.outcome, o.decision.adl_quantity) for o in outcomes if o.decision])
        assert not any(p.quantity for p in engine.book) and not len(engine.reservations)
    assert decided[0] and decided[0] == decided[1] == decided[2]


def test_the_soak_command_parses():
    result = subprocess.run([sys.executable, "-m", "bench.soak", "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "--minutes" in result.stdout
