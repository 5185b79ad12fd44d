"""``adl-stream inspect``: the committed state of a group, read from its changelog.

Reads each changelog partition up to the group's committed offset exactly as a restore does
(:mod:`.runtime.changelog`), rebuilds every settle asset's engine, and reports positions, funds and
reservations per settle asset, and for a symbol its ADL queues: who would be deleveraged first
against a bankrupt long (the shorts) and against a bankrupt short (the longs), each position with
the ADL indicator light last published for it (SPEC §3.6; it is state). Read-only: it joins no
group and commits nothing.

Its report is plain data: decimals exact without trailing zeros (``600``, not
``600.000000000000000000``), stream time in ISO 8601 (and in epoch milliseconds, for programs).
"""

from __future__ import annotations

from confluent_kafka import Consumer, KafkaException, TopicPartition

from .engine import Engine
from .engine.numbers import ZERO
from .engine.state import restore
from .readable import iso_time, plain_decimal
from .runtime.changelog import changelog_topic, restore_task
from .runtime.config import Settings
from .runtime.kafka import StartupError, input_consumer_config, unreachable
from .runtime.topology import UNROUTED, Topology


def load_engines(settings: Settings) -> dict[str, Engine]:
    """The engine of every settle asset as the group last committed it."""
    topic = changelog_topic(settings.group_id)
    consumer = Consumer({**input_consumer_config(settings), "group.id": settings.group_id})
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if metadata is None or metadata.error is not None:
            raise StartupError(f"no changelog topic {topic!r}: has group_id {settings.group_id!r} run yet? "
                               "(check group_id / ADL_GROUP_ID)")
        committed = consumer.committed([TopicPartition(topic, p) for p in sorted(metadata.partitions)], timeout=30)
    except KafkaException as exc:
        raise unreachable(settings, exc) from None
    finally:
        consumer.close()
    topology = Topology(settings.symbols, len(committed))
    engines = {}
    for tp in committed:
        state = restore_task(input_consumer_config(settings), topic, tp.partition, tp.offset)
        for asset in topology.assets_of_task[tp.partition]:
            if asset == UNROUTED:
                continue
            engine = engines[asset] = Engine(topology.symbols_of(asset), ranking=settings.ranking())
            restore(engine, state.entities.get(asset, {}))
    return engines


def report(settings: Settings, symbol: str | None = None, top: int = 10) -> dict:
    """Plain data (decimals as strings) of the state, and of ``symbol``'s ADL queues if given."""
    engines = load_engines(settings)
    out: dict = {"group_id": settings.group_id, "settle_assets": {}}
    for asset, engine in sorted(engines.items()):
        out["settle_assets"][asset] = {
            "stream_time": iso_time(engine.stream_time) if engine.stream_time >= 0 else None,
            "stream_time_ms": engine.stream_time if engine.stream_time >= 0 else None,
            "positions": sum(1 for p in engine.book if p.quantity != ZERO),
            "reservations": len(engine.reservations),
            "funds": {fund: plain_decimal(balance) for fund, balance in sorted(engine.funds.balances().items())},
        }
    if symbol is not None:
        spec = settings.symbols.get(symbol)
        if spec is None:
            raise ValueError(f"symbol {symbol!r} is not declared in [symbols]")
        engine = engines[spec.settle_asset]
        mark = engine.mark(symbol)
        out["symbol"] = {"symbol": symbol, "mark": None if mark is None else plain_decimal(mark), "queues": {}}
        if mark is not None:
            for bankrupt in ("LONG", "SHORT"):
                out["symbol"]["queues"][f"against a bankrupt {bankrupt}"] = [
                    {"rank": rank, "light": abs(c.position.light) or None,  # as last published; None: not yet
                     "account_id": c.position.account_id, "quantity": plain_decimal(c.position.quantity),
                     "free": plain_decimal(c.position.free), "score": c.score, "notional": plain_decimal(c.notional)}
                    for rank, c in enumerate(engine.adl_queue(symbol, bankrupt, top), start=1)]
    return out
