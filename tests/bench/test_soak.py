"""The soak script's own arithmetic (bench/soak.py): the market passes it feeds and the p99 it prints."""

import subprocess
import sys
from itertools import islice
from decimal import Decimal as D

from adl_stream.engine import Engine, Fill, LiquidationShortfall, Rejected
from bench.soak import closing_fills, p99, passes
from tests.market import generate, symbols_of


def test_p99_is_the_bucket_bound_of_the_minutes_observations_also_across_a_restart():
    before = {0.5: 10.0, 1.0: 10.0, float("inf"): 10.0}
    now = {0.5: 10.0, 1.0: 60.0, float("inf"): 110.0}  # 50 new under 1 s, 50 above it
    assert p99(now, before) == float("inf")
    now = {0.5: 10.0, 1.0: 109.0, float("inf"): 110.0}  # 99 of 100 new ones under 1 s
    assert p99(now, before) == 1.0
    restarted = {0.5: 3.0, 1.0: 4.0, float("inf"): 4.0}  # a new process: its counters count from 0
    assert p99(restarted, before) == 1.0
    assert p99(before, before) is None


def test_every_pass_has_new_ids_event_times_on_the_clock_and_starts_from_flat_books():
    market = generate(seed=5, accounts=30, trades=300, shortfalls=10)
    records = market.records + closing_fills(market.records)
    rate, n = 20_000.0, len(records)
    fed = [record for record, _ in islice(passes(records, 5_000, rate), 3 * n)]
    assert [r.ts for r in fed] == [5_000 + i for i in range(3 * n)]  # strictly rising: no ties to reorder
    ids = [r.fill_id for r in fed if isinstance(r, Fill)] + [r.event_id for r in fed if isinstance(r, LiquidationShortfall)]
    assert len(ids) == len(set(ids))
    engine = Engine(symbols_of("USDT"))
    rejected = 0
    for record in fed:
        try:
            engine.apply(record)
        except Rejected:
            rejected += 1
    assert rejected == 0  # the engine's own ADL is the simulator's here: every pass fits
    assert all(p.quantity == D(0) for p in engine.book)


def test_the_soak_command_parses():
    result = subprocess.run([sys.executable, "-m", "bench.soak", "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "--minutes" in result.stdout
