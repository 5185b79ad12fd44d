"""ADL indicator lights (SPEC §3.6) on the engine: ranks, lights, changes only, tombstones, restore."""

from decimal import Decimal as D

from adl_stream.engine import AdlIndicator, BalanceUpdate, Engine, Fill, IndicatorCleared, MarkPrice, SymbolSpec
from adl_stream.engine.indicators import lights
from adl_stream.engine.state import restore, take_changes

SYMBOLS = {"BTCUSDT": SymbolSpec("BTCUSDT", "USDT", "USDT")}
INTERVAL = 1_000


def fill(n, account, side, quantity, price, ts):
    return Fill(f"f{n}", account, "BTCUSDT", side, D(quantity), D(price), D(0), "TRADE", None, ts)


def book(engine):
    """Five shorts of different leverage (S0 with equity < 0) against one long, then a mark."""
    records = [BalanceUpdate(a, "USDT", D(w), 100) for a, w in
               (("S0", -500), ("S1", 100), ("S2", 200), ("S3", 400), ("S4", 800), ("L", 10_000))]
    records += [fill(i, f"S{i}", "SELL", 1, 100, 101) for i in range(5)]
    records += [fill(9, "L", "BUY", 5, 100, 101), MarkPrice("BTCUSDT", D(90), 200)]
    for record in records:
        engine.apply(record)


def test_lights_by_rank_and_only_changes_then_a_tombstone():
    assert lights(5).tolist() == [5, 4, 3, 2, 1]
    assert lights(1).tolist() == [5] and lights(2).tolist() == [5, 3] and lights(10).tolist()[::2] == [5, 4, 3, 2, 1]
    engine = Engine(SYMBOLS, indicator_interval_ms=INTERVAL)
    book(engine)
    first = engine.apply(MarkPrice("BTCUSDT", D(90), INTERVAL)).indicators  # stream time crosses 1000
    shorts = [r for r in first if r.side == "SHORT"]
    # Equity -500+10 < 0 ranks first; then higher leverage first (smaller wallet, same upnl of 10).
    assert [(r.account_id, r.light, r.rank, r.positions) for r in shorts] == [
        ("S0", 5, 1, 5), ("S1", 4, 2, 5), ("S2", 3, 3, 5), ("S3", 2, 4, 5), ("S4", 1, 5, 5)]
    assert shorts[0].score == float("inf") and all(r.ts == INTERVAL for r in first)
    assert [(r.account_id, r.side, r.light) for r in first if r.side == "LONG"] == [("L", "LONG", 5)]
    assert engine.indicators.counts[("BTCUSDT", "SHORT", 3)] == 1
    # Nothing changed: no record at the next crossing.
    assert list(engine.apply(MarkPrice("BTCUSDT", D(90), 2 * INTERVAL)).indicators) == []
    # S1 closes (buys back 1 from L): a tombstone; S2..S4 move up one light each.
    engine.apply(fill(20, "S1", "BUY", 1, 90, 2 * INTERVAL + 1))
    engine.apply(fill(21, "L", "SELL", 1, 90, 2 * INTERVAL + 1))
    later = engine.apply(MarkPrice("BTCUSDT", D(90), 3 * INTERVAL)).indicators
    assert IndicatorCleared("BTCUSDT", "S1", 3 * INTERVAL) in later
    moved = {r.account_id: r.light for r in later if isinstance(r, AdlIndicator)}
    assert moved == {"S2": 4, "S3": 3, "S4": 2}  # four shorts now: lights 5, 4, 3, 2 (S0 keeps its 5)
    assert len(later) == 4


def test_off_by_default_and_restored_lights_publish_only_changes():
    quiet = Engine(SYMBOLS)
    book(quiet)
    assert list(quiet.apply(MarkPrice("BTCUSDT", D(90), INTERVAL)).indicators) == []

    original = Engine(SYMBOLS, indicator_interval_ms=INTERVAL)
    book(original)
    original.apply(MarkPrice("BTCUSDT", D(90), INTERVAL))
    original.apply(fill(20, "S1", "BUY", 1, 90, INTERVAL + 1))  # closes S1: its tombstone is due
    restored = Engine(SYMBOLS, indicator_interval_ms=INTERVAL)
    restore(restored, {k: v for k, v in take_changes(original) if v is not None})
    nxt = MarkPrice("BTCUSDT", D(91), 2 * INTERVAL)
    published = restored.apply(nxt).indicators
    assert published == original.apply(nxt).indicators
    assert IndicatorCleared("BTCUSDT", "S1", 2 * INTERVAL) in published  # the tombstone survived the restore
    assert sum(isinstance(r, AdlIndicator) for r in published) == 3  # S2..S4 moved up; the rest kept theirs


def test_a_record_refused_after_its_time_crossed_an_interval_still_hands_over_the_lights():
    """Stream time moves (and the pass runs) before a shortfall's position is checked: the refusal
    carries that outcome, so the lights now in state are published all the same."""
    from adl_stream.engine import LiquidationShortfall, Rejected

    engine = Engine(SYMBOLS, indicator_interval_ms=INTERVAL)
    book(engine)
    unknown = LiquidationShortfall("e1", "NOBODY", "BTCUSDT", "LONG", D(1), D(95), D(1), INTERVAL)
    try:
        engine.apply(unknown)
    except Rejected as rejected:
        assert rejected.reason == "unknown_position"
        published = rejected.outcome.indicators
    else:
        raise AssertionError("the shortfall of an unknown position was accepted")
    assert len(published) == 6 and {p.account_id for p in published} == {"S0", "S1", "S2", "S3", "S4", "L"}
    assert list(engine.apply(MarkPrice("BTCUSDT", D(90), 2 * INTERVAL)).indicators) == []  # nothing left unpublished
    try:  # a refusal that moved no time carries nothing
        engine.apply(LiquidationShortfall("e2", "NOBODY", "BTCUSDT", "LONG", D(1), D(95), D(1), 2 * INTERVAL))
    except Rejected as rejected:
        assert rejected.outcome is None


def test_the_changelog_gathers_each_light_as_its_value_lit_unlit_or_gone():
    """``state.gather`` reads light keys its own way (no look-up per key through ``value_of``); it
    must give what ``value_of`` gives: the light, 0 for a tombstone due, gone after it."""
    from adl_stream.engine.state import Entities, gather, value_of

    engine = Engine(SYMBOLS, indicator_interval_ms=INTERVAL)
    book(engine)
    engine.apply(MarkPrice("BTCUSDT", D(90), INTERVAL))
    engine.apply(fill(20, "S1", "BUY", 1, 90, INTERVAL + 1))  # S1 closes: its tombstone is due
    engine.apply(fill(21, "L", "SELL", 1, 90, INTERVAL + 1))
    keys = [("l", "BTCUSDT", account) for account in ("S0", "S1", "S2", "L", "NOBODY")]

    def agrees_with_value_of(gathered: Entities) -> bool:
        values = {key: value_of(engine, key) for key in keys}
        return (gathered.lights == {key[1:]: value for key, value in values.items() if value is not None}
                and gathered.gone == [key for key, value in values.items() if value is None])

    gathered = gather(engine, keys)
    assert agrees_with_value_of(gathered)
    assert gathered.lights == {("BTCUSDT", "S0"): -5, ("BTCUSDT", "S1"): 0, ("BTCUSDT", "S2"): -3, ("BTCUSDT", "L"): 5}
    assert gathered.gone == [("l", "BTCUSDT", "NOBODY")]
    engine.apply(MarkPrice("BTCUSDT", D(90), 2 * INTERVAL))  # the tombstone went out: S1's light is gone
    assert gather(engine, keys[1:2]).gone == [keys[1]] and agrees_with_value_of(gather(engine, keys))
