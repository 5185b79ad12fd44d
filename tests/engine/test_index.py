"""The ranking index against the plain reference (tests/engine/oracle.py), order by order."""

import warnings
from contextlib import contextmanager
from decimal import Decimal as D

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from adl_stream.engine import (
    BalanceUpdate,
    Engine,
    Fill,
    FundFlow,
    LiquidationShortfall,
    MarkPrice,
    Rejected,
    SymbolSpec,
)
from adl_stream.engine import index
from adl_stream.engine.index import LIMIT
from adl_stream.engine.state import restore, take_changes
from tests.engine import oracle

SYMBOLS = {
    "BTCUSDT": SymbolSpec("BTCUSDT", "USDT", "USDT"),
    "ETHUSDT": SymbolSpec("ETHUSDT", "USDT", "USDT"),
    "SOLUSDT": SymbolSpec("SOLUSDT", "USDT", "USDT-ALT"),
    "BTCUSDC": SymbolSpec("BTCUSDC", "USDC", "USDC"),
}
ACCOUNTS = [f"A{i}" for i in range(10)]
# Few distinct values, so that scores and notionals tie; one price far beyond the index's error bound.
QUANTITIES = [D("0.5"), D(1), D(2), D(3)]
PRICES = [D(80), D(90), D(100), D(110), D("100.5"), D(120)]
WALLETS = [D(-50), D(0), D("0.000001"), D(100), D(200), D(300), D(5000)]

fills = st.tuples(st.just("fill"), st.sampled_from(ACCOUNTS), st.sampled_from(sorted(SYMBOLS)),
                  st.booleans(), st.sampled_from(QUANTITIES), st.sampled_from(PRICES))
marks = st.tuples(st.just("mark"), st.sampled_from(sorted(SYMBOLS)), st.sampled_from(PRICES + [D(95), D(101)]))
balances = st.tuples(st.just("balance"), st.sampled_from(ACCOUNTS), st.sampled_from(["USDT", "USDC"]),
                     st.sampled_from(WALLETS))
shortfalls = st.tuples(st.just("shortfall"), st.integers(0, 99), st.integers(1, 100))
adl_fills = st.tuples(st.just("adl_fill"), st.integers(0, 50), st.booleans())
huge = st.tuples(st.just("fill"), st.sampled_from(ACCOUNTS), st.just("ETHUSDT"), st.booleans(),
                 st.just(D(1000)), st.just(D(10) ** 8 + 1))
operations = st.lists(st.one_of(fills, fills, fills, marks, balances, shortfalls, shortfalls, adl_fills, huge),
                      min_size=20, max_size=80)


def records_of(op, n: int, ts: int, engine: Engine, emitted: list) -> list:
    """The input records of one drawn operation, sized from ``engine``'s state (a shortfall takes
    part of a position that exists; an ADL fill fills an order that was emitted, on both sides)."""
    kind = op[0]
    if kind == "fill":
        _, account, symbol, buy, quantity, price = op
        return [Fill(f"f{n}", account, symbol, "BUY" if buy else "SELL", quantity, price, D(0), "TRADE", None, ts)]
    if kind == "mark":
        return [MarkPrice(op[1], op[2], ts)]
    if kind == "balance":
        return [BalanceUpdate(op[1], op[2], op[3], ts)]
    if kind == "shortfall":  # of the i-th position with free quantity, or of a named one
        if isinstance(op[1], int):
            held = sorted((p for p in engine.book if p.free > 0), key=lambda p: (p.symbol, p.account_id))
            if not held:
                return []
            position = held[op[1] % len(held)]
            account, symbol, pct = position.account_id, position.symbol, op[2]
        else:
            _, account, symbol, pct = op
            position = engine.book.get(account, symbol)
        quantity = min(position.free, max(D("0.1"), (position.free * pct / 100).quantize(D("0.1"))))
        side = "LONG" if position.quantity > 0 else "SHORT"
        return [LiquidationShortfall(f"e{n}", account, symbol, side, quantity, D(95), D(10), ts)]
    if kind == "adl_fill" and emitted:
        order = emitted[op[1] % len(emitted)]
        quantity = order.quantity if op[2] else (order.quantity / 2).quantize(D("0.01"))
        bankrupt_side = "SELL" if order.side == "BUY" else "BUY"
        return [Fill(f"a{n}{account}", account, order.symbol, side, quantity, order.price, D(0), "ADL",
                     order.order_id, ts)
                for account, side in ((order.account_id, order.side), (order.bankrupt_account_id, bankrupt_side))
                if quantity > 0]
    return []


def _apply(engine, record):
    try:
        outcome = engine.apply(record)
    except Rejected as rejected:
        return rejected.reason, None
    return (outcome.orders, outcome.decision, outcome.duplicate, outcome.stale), outcome


def _queues(engine):
    return {(symbol, side): [(c.position.account_id, c.score, c.notional) for c in engine.adl_queue(symbol, side)]
            for symbol in SYMBOLS for side in ("LONG", "SHORT")}


def _run(ops, indexed: Engine, reference: Engine, check_queues_every=7, start=0) -> int:
    """Apply the same records to both engines; every result and every queue must be equal. The
    number of decisions that emitted orders."""
    decided, emitted, ts = 0, [], max(indexed.stream_time, 1_000)
    for n, op in enumerate(ops, start=start):
        ts += 1
        for record in records_of(op, n, ts, indexed, emitted):
            got, outcome = _apply(indexed, record)
            assert got == _apply(reference, record)[0], record
            if outcome is not None and outcome.orders:
                decided += 1
                emitted.extend(outcome.orders)
        if n % check_queues_every == 0:
            assert _queues(indexed) == _queues(reference)
    assert _queues(indexed) == _queues(reference)
    return decided


def _engines():
    options = dict(reservation_timeout_ms=30)
    funded = [FundFlow(f"seed-{fund}", fund, "DEPOSIT", D(5), 0) for fund in ("USDT", "USDT-ALT", "USDC")]
    indexed, reference = Engine(SYMBOLS, **options), oracle.install(Engine(SYMBOLS, **options))
    for engine in (indexed, reference):
        for flow in funded:
            engine.apply(flow)
    return indexed, reference


@contextmanager
def first_k(k: int):
    """Select ``k`` positions first (the default is larger than these books' sides, which would
    always take the whole-side path; small values exercise the argpartition selection and its growth)."""
    saved, index.FIRST_K = index.FIRST_K, k
    try:
        yield
    finally:
        index.FIRST_K = saved


@given(operations, st.sampled_from([1, 2, index.FIRST_K]))
def test_every_decision_and_queue_equals_the_reference(ops, k):
    indexed, reference = _engines()
    with first_k(k):
        _run(ops, indexed, reference)


def test_the_reference_run_reaches_adl_with_ties_and_equity_below_zero():
    """The drawn markets above are not vacuous: a fixed one decides with ties and bankrupt winners."""
    ops = [("balance", "A0", "USDT", D(-50)), ("balance", "A1", "USDT", D(100)), ("balance", "A2", "USDT", D(100))]
    ops += [("fill", a, "BTCUSDT", False, D(1), D(100)) for a in ("A0", "A1", "A2", "A3")]
    ops += [("fill", "A9", "BTCUSDT", True, D(4), D(100)), ("mark", "BTCUSDT", D(90))]
    indexed, reference = _engines()
    _run(ops, indexed, reference)
    queue = indexed.adl_queue("BTCUSDT", "LONG")
    assert [c.position.account_id for c in queue] == ["A0", "A3", "A1", "A2"]  # A0: equity < 0; A3: no wallet
    assert queue[0].score == float("inf") and queue[2].score == queue[3].score
    assert _run([("shortfall", "A9", "BTCUSDT", 50)], indexed, reference, start=len(ops)) == 1
    assert [c.position.account_id for c in indexed.adl_queue("BTCUSDT", "LONG")] == ["A1", "A2"]


def test_a_position_beyond_the_error_bound_switches_the_asset_to_exact_equity():
    indexed, reference = _engines()
    ops = [("fill", "A1", "ETHUSDT", True, D(1000), D(10) ** 8 + 1), ("mark", "ETHUSDT", D(10) ** 8),
           ("fill", "A2", "BTCUSDT", False, D(1), D(100)), ("fill", "A3", "BTCUSDT", True, D(1), D(100)),
           ("mark", "BTCUSDT", D(90))]
    _run(ops, indexed, reference)
    assert 1000 * 1e8 >= LIMIT
    assert not oracle.tight(indexed, "USDT", ("BTCUSDT", True))
    assert indexed.index._tight(indexed.index._side("BTCUSDT", True)) is False
    assert indexed.index._tight(indexed.index._side("BTCUSDC", True)) is True
    assert oracle.tight(indexed, "USDC", ("BTCUSDC", True))


def test_a_wallet_beyond_int64_units_ranks_exactly_and_casts_nothing_invalid():
    """A balance that no int64 holds at the index column's scale (the balance times 2**16: 10**15
    USDT) is held as 0 in that column while its asset ranks by exact equity; once it is back within the bound the columns rank
    as the reference again (the equity's differences stayed consistent)."""
    indexed, reference = _engines()
    ops = [("fill", "A1", "BTCUSDT", True, D(1), D(100)), ("fill", "A2", "BTCUSDT", True, D(2), D(100)),
           ("fill", "A3", "BTCUSDT", False, D(3), D(100)), ("mark", "BTCUSDT", D(90)),
           ("balance", "A2", "USDT", D(10) ** 15)]
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # an invalid cast to int64 warns
        _run(ops, indexed, reference)
        assert indexed.index._tight(indexed.index._side("BTCUSDT", True)) is False
        _run([("balance", "A2", "USDT", D(50)), ("mark", "BTCUSDT", D(91))], indexed, reference, start=len(ops))
    assert indexed.index._tight(indexed.index._side("BTCUSDT", True)) is True
    assert oracle.tight(indexed, "USDT", ("BTCUSDT", True))


@given(operations, st.data())
def test_a_restored_engine_decides_the_rest_byte_identically(ops, data):
    """Restore from the taken changes at a cut, then both engines decide the rest alike, index in use."""
    original, twin = _engines()
    cut = data.draw(st.integers(0, len(ops)))
    _run(ops[:cut], original, twin)
    log = {}
    for key, value in take_changes(original):
        if value is None:
            log.pop(key, None)
        else:
            log[key] = value
    restored = Engine(SYMBOLS, reservation_timeout_ms=30)
    restore(restored, log)
    assert _queues(restored) == _queues(original)
    with first_k(data.draw(st.sampled_from([1, index.FIRST_K]))):
        _run(ops[cut:], original, restored, start=cut)


@given(st.data())
def test_the_selected_set_is_the_head_of_the_queue_with_every_tie(data):
    """``_top`` against its definition, on sides large enough for the sampled floor and with ties."""
    import numpy as np

    size = data.draw(st.sampled_from([3, 50, 700, 2500]))
    values = data.draw(st.lists(st.sampled_from([-1.5, 0.0, 0.25, 0.5, 2.0, float("inf"), float("-inf")]),
                                min_size=1, max_size=7))
    seed = data.draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    scores = rng.choice(np.array(values), size) if data.draw(st.booleans()) else rng.normal(size=size)
    notional = rng.choice(np.array([1.0, 2.0, 3.0]), size)
    k = data.draw(st.integers(1, min(size, 40)))
    got = set(index._top(scores, notional, k).tolist())
    order = sorted(range(size), key=lambda i: (-scores[i], -notional[i]))
    kth = (scores[order[k - 1]], notional[order[k - 1]])
    want = {i for i in range(size) if (scores[i], notional[i]) >= kth}
    assert got == want


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(-(2**63), 2**63 - 1) | st.integers(-(10**40), 10**40)
                | st.integers(1, 10**6).map(lambda m: m * 10**15) | st.integers(-(2**54), 2**54), max_size=40))
def test_the_bulk_floats_are_pythons_int_division_bit_for_bit(values):
    """A restore computes the index's floats in numpy where that is exact (a quantity that is
    exactly a float64, divided by 1e18, itself exact): the same bits as Python's correctly rounded
    ``int / int``, which :meth:`_Side.put` uses; beyond int64 the column goes through Python."""
    from adl_stream.engine.index import money_floats, quantity_floats
    from adl_stream.engine.numbers import MONEY_UNIT, QUANTITY_UNIT

    assert quantity_floats(values).tobytes() == np.array([v / QUANTITY_UNIT for v in values], np.float64).tobytes()
    assert money_floats(values).tobytes() == np.array([v / MONEY_UNIT for v in values], np.float64).tobytes()


def test_a_float_tie_is_ordered_by_the_exact_notional_then_the_account_id():
    """Quantities that differ below a float's precision score and weigh alike in float64: the queue
    orders them by their exact notional (|q| * mark), then by account id."""
    engine = Engine(SYMBOLS)
    one = D(1)
    quantities = {"B": one + D("1e-18"), "A": one + D("1e-18"), "C": one + D("2e-18"), "D": one, "E": D(2)}
    ts = 1
    for account, quantity in quantities.items():
        engine.apply(BalanceUpdate(account, "USDT", D(1000), ts))
        engine.apply(Fill(f"f{account}", account, "BTCUSDT", "BUY", quantity, D(100), D(0), "TRADE", None, ts + 1))
        ts += 2
    engine.apply(MarkPrice("BTCUSDT", D(110), ts))
    queue = engine.adl_queue("BTCUSDT", "SHORT")
    ordered = [c.position.account_id for c in queue]
    tied = [c for c in queue if c.position.account_id != "E"]
    assert len({c.score for c in tied}) == 1  # one float score for the four
    assert ordered.index("C") < ordered.index("A") < ordered.index("B") < ordered.index("D")
    assert [c.notional for c in tied] == sorted((c.notional for c in tied), reverse=True)
