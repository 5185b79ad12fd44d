"""Writes engine records to the input topics, keyed as SPEC §2 says, with Kafka timestamp = ``ts``
(so ``offsets_for_times`` and ``replay --from-timestamp`` find event times)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from confluent_kafka import Producer

from ..engine import BalanceUpdate, Fill, FundFlow, InputRecord, LiquidationShortfall, MarkPrice
from ..runtime.config import Topics
from ..wire import Codec


def topic_and_key(record: InputRecord, topics: Topics) -> tuple[str, str]:
    """The input topic of ``record`` and its key: symbol, or account_id (balances), or fund_id."""
    if isinstance(record, Fill):
        return topics.fills, record.symbol
    if isinstance(record, MarkPrice):
        return topics.mark_prices, record.symbol
    if isinstance(record, BalanceUpdate):
        return topics.balances, record.account_id
    if isinstance(record, FundFlow):
        return topics.insurance_fund, record.fund_id
    if isinstance(record, LiquidationShortfall):
        return topics.liquidation_shortfalls, record.symbol
    raise TypeError(f"not an input record: {type(record).__name__}")


class Publisher:
    """An idempotent producer of input records, optionally paced at ``rate`` records per second."""

    def __init__(self, config: dict, topics: Topics, rate: float | None = None, codec: Codec | None = None) -> None:
        self.topics = topics
        self.codec = codec or Codec()
        self.producer = Producer({"linger.ms": 5, "enable.idempotence": True, **config})
        self._interval = 1 / rate if rate else 0.0
        self._errors: list = []
        self.sent = 0

    def _on_delivery(self, error, _message) -> None:
        if error is not None:
            self._errors.append(error)

    def send(self, record: InputRecord) -> None:
        topic, key = topic_and_key(record, self.topics)
        value = self.codec.encode(record)
        while True:
            try:
                self.producer.produce(topic, value, key, timestamp=record.ts, on_delivery=self._on_delivery)
                break
            except BufferError:  # local queue full: let deliveries drain
                self.producer.poll(0.05)
        self.sent += 1
        if self._interval:
            time.sleep(self._interval)
        elif self.sent % 10_000 == 0:
            self.producer.poll(0)

    def send_all(self, records: Iterable[InputRecord], progress: Callable[[int], None] | None = None) -> int:
        for record in records:
            self.send(record)
            if progress is not None and self.sent % 1_000 == 0:
                progress(self.sent)
        self.flush()
        if progress is not None:
            progress(self.sent)
        return self.sent

    def flush(self, timeout_s: float = 60) -> None:
        remaining = self.producer.flush(timeout_s)
        if remaining or self._errors:
            first = self._errors[0] if self._errors else f"{remaining} not acknowledged in {timeout_s}s"
            raise RuntimeError(f"publishing failed: {first}")
