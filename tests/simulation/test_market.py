"""The simulator alone: reproducible for a seed, and a crash with both fund-covered shortfalls and ADL."""

from decimal import Decimal as D

from adl_stream.engine import SymbolSpec
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


def test_prices_and_quantities_lie_on_each_symbols_tick_and_lot_grid():
    # The README's example symbol (tick 0.1, lot 0.001) and coarser grids; the simulator's own
    # engine rejects (raises) any record off them, as the processor would dead-letter it.
    symbols = {"BTCUSDT": SymbolSpec("BTCUSDT", "USDT", "USDT", D("0.001"), D("0.1")),
               "ETHUSDT": SymbolSpec("ETHUSDT", "USDT", "USDT", D("0.05"), D("0.25")),
               "SOLUSDT": SymbolSpec("SOLUSDT", "USDT", "USDT-ALT", None, None)}
    simulator = MarketSimulator(Scenario(seed=4, accounts=300), symbols)
    records = list(simulator.records())
    assert simulator.tape.decisions and simulator.tape.orders
    for record in records:
        spec = symbols.get(getattr(record, "symbol", None))
        if spec is None or spec.tick_size is None:
            continue
        price = getattr(record, "price", None) or getattr(record, "mark_price", None) or record.bankruptcy_price
        assert price % spec.tick_size == 0, record
        quantity = getattr(record, "quantity", None)
        assert quantity is None or quantity % spec.lot_size == 0, record


def test_start_ts_and_id_prefix_move_event_times_and_ids():
    plain = list(MarketSimulator(Scenario(seed=5, accounts=100)).records())
    moved = list(MarketSimulator(Scenario(seed=5, accounts=100, start_ts=1_000_000, id_prefix="run2-")).records())
    assert len(moved) == len(plain) and moved[0].ts == 1_000_001 and plain[0].ts > 1_000_001
    shift = plain[0].ts - moved[0].ts
    assert [r.ts for r in moved] == [r.ts - shift for r in plain]  # the same market, later or earlier
    ids = [value for record in moved for name in ("fill_id", "event_id", "flow_id", "account_id", "adl_order_id")
           if (value := getattr(record, name, None)) is not None]
    assert ids and all(value.startswith("run2-") for value in ids)
    assert not {getattr(r, "account_id", None) for r in moved} & {getattr(r, "account_id", None) for r in plain} - {None}


def test_leverages_set_how_deep_the_books_positions_are_and_how_many_go_bankrupt():
    def shortfalls(scenario: Scenario) -> int:
        return sum(type(r).__name__ == "LiquidationShortfall" for r in MarketSimulator(scenario).records())

    assert Scenario().leverages == (2, 3, 3, 5, 5, 5, 10, 10, 10, 10, 20, 20, 25, 50)  # the mix of every earlier run
    default = shortfalls(Scenario(seed=3, accounts=400))
    assert default > 50
    # at 2x a 30 % fall takes 60 % of a wallet: only traders who kept adding go bankrupt
    only_2x = shortfalls(Scenario(seed=3, accounts=400, leverages=(2,)))
    assert 0 < only_2x < default / 5
    assert only_2x < shortfalls(Scenario(seed=3, accounts=400, leverages=(2, 2, 3, 3, 5, 10))) < default
