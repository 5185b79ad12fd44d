"""ADL indicator lights through the real broker (SPEC §3.6): a small hand-computed book, its lights
on `adl-indicators` record by record (read_committed), the gauge, `inspect` and a dry-run replay.

BTCUSDT, mark 90, `indicator_interval_ms` 10 s, pnl-leverage: `pnl_pct = upnl / (|q| * entry)`,
`eff_lev = notional / equity`, `score = pnl_pct * eff_lev` if `pnl_pct > 0` else `pnl_pct / eff_lev`;
equity <= 0 first. A position ranked `r` of `n` gets `light = 5 - floor(5 * (r - 1) / n)`.

| account | side  | qty | entry | wallet | upnl | equity | pnl_pct   | notional | eff lev  | score     |
|---------|-------|-----|-------|--------|------|--------|-----------|----------|----------|-----------|
| Z       | short | 1   | 100   | -20    | 10   | -10    | 0.1       | 90       | -        | first     |
| P       | short | 2   | 100   | 20     | 20   | 40     | 0.1       | 180      | 4.5      | 0.45      |
| Q       | short | 1   | 100   | 20     | 10   | 30     | 0.1       | 90       | 3        | 0.3       |
| T       | short | 3   | 100   | 970    | 30   | 1000   | 0.1       | 270      | 0.27     | 0.027     |
| R       | short | 1   | 80    | 100    | -10  | 90     | -0.125    | 90       | 1        | -0.125    |
| L2      | long  | 3   | 95    | 100    | -15  | 85     | -0.052632 | 270      | 3.176471 | -0.016569 |
| L1      | long  | 5   | 100   | 1000   | -50  | 950    | -0.1      | 450      | 0.473684 | -0.211111 |

1. Pass at 10 s: shorts Z, P, Q, T, R (n = 5) get lights 5, 4, 3, 2, 1; longs L2, L1 (n = 2) 5, 3.
2. Q buys its short back at 12 s. Pass at 20 s: Q's tombstone; Z, P, T, R (n = 4) get 5, 4, 3, 2:
   records for T (2 -> 3) and R (1 -> 2) only.
3. Pass at 30 s: nothing changed, no record.
"""

import json
import subprocess
import sys
from dataclasses import asdict, replace
from decimal import Decimal as D

import pytest
from confluent_kafka import TIMESTAMP_CREATE_TIME

from adl_stream.cli import _print_state
from adl_stream.engine import AdlIndicator, BalanceUpdate, Fill, MarkPrice
from adl_stream.wire import Codec
from tests.conftest import Feed, metric, read_topic, wait_for, write_config
from tests.integration.test_processor import run_scenario

pytestmark = pytest.mark.integration
CODEC = Codec()
INTERVAL = 10_000
INF = float("inf")


def fill(n, account, side, quantity, price, ts):
    return Fill(f"i{n}", account, "BTCUSDT", side, D(quantity), D(price), D(0), "TRADE", None, ts)


BOOK = [BalanceUpdate(a, "USDT", D(w), 1_000) for a, w in
        (("Z", -20), ("P", 20), ("Q", 20), ("T", 970), ("R", 100), ("L1", 1000), ("L2", 100))]
BOOK += [fill(i, a, side, q, p, 2_000) for i, (a, side, q, p) in enumerate(
    (("Z", "SELL", 1, 100), ("P", "SELL", 2, 100), ("Q", "SELL", 1, 100), ("T", "SELL", 3, 100),
     ("R", "SELL", 1, 80), ("L1", "BUY", 5, 100), ("L2", "BUY", 3, 95)))]
BOOK += [MarkPrice("BTCUSDT", D(90), 3_000)]
#: Sent one after the other (so that event time orders them).
STAGES = [BOOK, [MarkPrice("BTCUSDT", D(90), 10_000)], [fill(9, "Q", "BUY", 1, 90, 12_000)],
          [MarkPrice("BTCUSDT", D(90), 20_000)], [MarkPrice("BTCUSDT", D(90), 30_000)]]

#: Per account, its records in order: (side, light, rank, positions, score, ts), None a tombstone at 20 s.
EXPECTED = {
    "Z": [("SHORT", 5, 1, 5, INF, 10_000)],
    "P": [("SHORT", 4, 2, 5, 0.45, 10_000)],
    "Q": [("SHORT", 3, 3, 5, 0.3, 10_000), None],
    "T": [("SHORT", 2, 4, 5, 0.027, 10_000), ("SHORT", 3, 3, 4, 0.027, 20_000)],
    "R": [("SHORT", 1, 5, 5, -0.125, 10_000), ("SHORT", 2, 4, 4, -0.125, 20_000)],
    "L2": [("LONG", 5, 1, 2, -15 / 285 / (270 / 85), 10_000)],
    "L1": [("LONG", 3, 2, 2, -0.1 / (450 / 950), 10_000)],
}
RECORDS = sum(len(records) for records in EXPECTED.values())


def check_per_account(records: dict[str, list]) -> None:
    """``records``: account -> its records in order, each a dict of the AdlIndicator's fields or None."""
    assert set(records) == set(EXPECTED)
    for account, expected in EXPECTED.items():
        got = records[account]
        assert [r is None for r in got] == [e is None for e in expected], account
        for record, want in zip(got, expected):
            if want is not None:
                side, light, rank, positions, score, ts = want
                assert (record["symbol"], record["account_id"]) == ("BTCUSDT", account)
                assert (record["side"], record["light"], record["rank"], record["positions"], record["ts"]) == (
                    side, light, rank, positions, ts), account
                assert record["score"] == pytest.approx(score, rel=1e-9), account


def test_lights_of_a_hand_computed_book_record_by_record(settings, start_processor, tmp_path, capsys):
    settings = replace(settings, indicator_interval_ms=INTERVAL)
    running = start_processor(settings)
    run_scenario(Feed(settings), running, STAGES)

    messages = read_topic(settings, settings.topics.adl_indicators, RECORDS, settle=1.0)
    assert len(messages) == RECORDS  # the pass at 30 s changed nothing: no record
    by_account: dict[str, list] = {}
    for message in messages:  # a key's records are in one partition, in the order produced
        symbol, account = message.key().decode().split(":")
        assert symbol == "BTCUSDT"
        record = None if message.value() is None else asdict(CODEC.decode(message.value(), AdlIndicator))
        by_account.setdefault(account, []).append(record)
        assert message.timestamp() == (TIMESTAMP_CREATE_TIME, record["ts"] if record else 20_000)  # the pass
    check_per_account(by_account)

    # The gauge: positions per light at the last pass (Z, P, T, R; L2, L1).
    p = running.processor
    expected = {("SHORT", "5"): 1, ("SHORT", "4"): 1, ("SHORT", "3"): 1, ("SHORT", "2"): 1, ("LONG", "5"): 1,
                ("LONG", "3"): 1}

    def lights(side: str, light: str) -> float:
        return metric(p, "adl_indicator_positions", symbol="BTCUSDT", side=side, light=light)

    wait_for(lambda: all(lights(*key) == count for key, count in expected.items()), 5, "the gauge at the last pass")
    assert sum(lights(side, str(light)) for side in ("LONG", "SHORT") for light in range(1, 6)) == 6
    assert metric(p, "adl_indicator_positions", symbol="ETHUSDT") == 0  # no mark, no pass: its series at 0
    assert running.close() == 0

    # inspect: each queued position's light as last published, in the JSON and in the tables.
    config = write_config(settings, tmp_path / "adl.toml", indicator_interval_ms=INTERVAL)
    state = json.loads(subprocess.run(
        [sys.executable, "-m", "adl_stream.cli", "inspect", "--config", config, "--symbol", "BTCUSDT", "--json"],
        capture_output=True, text=True, timeout=60, check=True).stdout)
    queues = state["symbol"]["queues"]
    assert [(r["account_id"], r["light"]) for r in queues["against a bankrupt LONG"]] == [
        ("Z", 5), ("P", 4), ("T", 3), ("R", 2)]
    assert [(r["account_id"], r["light"]) for r in queues["against a bankrupt SHORT"]] == [("L2", 5), ("L1", 3)]
    capsys.readouterr()
    _print_state(settings, state)
    lines = capsys.readouterr().out.splitlines()
    header = next([c.strip() for c in line.strip("┃").split("┃")] for line in lines if "light" in line)
    rows = [dict(zip(header, (c.strip() for c in line.strip("│").split("│")))) for line in lines
            if line.startswith("│") and line.count("│") == len(header) + 1]
    assert [(row["account"], row["light"]) for row in rows] == [
        ("Z", "5"), ("P", "4"), ("T", "3"), ("R", "2"), ("L2", "5"), ("L1", "3")]

    # A dry-run replay of everything publishes the same lights (from event time 0: every record is live).
    result = subprocess.run(
        [sys.executable, "-m", "adl_stream.cli", "replay", "--config", config, "--dry-run", "--from-timestamp", "0",
         "--metrics-port", "0", "--log-format", "json"], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    replayed: dict[str, list] = {}
    for line in map(json.loads, result.stdout.splitlines()):
        if line["topic"] == settings.topics.adl_indicators:
            account = line["account_id"] if line["record"] else line["key"].split(":")[1]
            replayed.setdefault(account, []).append(line if line["record"] else None)
            assert line["record"] or line == {"topic": line["topic"], "key": "BTCUSDT:Q", "record": None, "ts": 20_000}
    check_per_account(replayed)
