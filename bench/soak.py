"""``python -m bench.soak``: a steady market through one processor for half an hour, killed in the middle.

Not part of ``make test`` or ``make bench`` (it takes ``--minutes``, 30 by default). On an embedded
broker it:

1. measures the processor's throughput on a burst (or takes ``--rate``) and feeds a market at half
   of it: one simulated crash after another over the same traders, each pass with new ids and
   ending where it began (:func:`market`), so the state stays the same size and every pass is
   decided as the simulator predicts (but for the few records merged late, below). Each pass keeps the market's
   own event times, shifted after the previous pass: event time runs far faster than the wall
   clock, and the de-duplication window (10 minutes of event time here, 24 h by default) fills
   within seconds and then turns over;
2. every minute prints the processor's resident memory (it should be flat once the window has
   filled), its input lag (librdkafka's, and the records sent but not yet committed: divided by
   the rate, the time a record waits before it is read), the records it handled a second, and the
   p99 of the latencies of that minute's shortfalls from consumed to decision and orders committed
   (``adl_shortfall_processing_seconds``, at the resolution of the histogram's buckets);
3. at half time kills the processor with SIGKILL and starts another (exactly-once: it fences the
   dead one's transactions and restores from the changelog), and reports how long it took to be
   ready and to catch up.
"""

from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing
import os
import signal
import tempfile
import threading
import time
import urllib.request
import uuid
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console

from adl_stream.embedded import EmbeddedBroker, free_port
from adl_stream.engine import Fill, FundFlow, LiquidationShortfall, MarkPrice
from adl_stream.runtime.config import Settings
from adl_stream.runtime.kafka import create_missing_topics
from adl_stream.runtime.logs import LIBRDKAFKA_LOG, configure_logging
from adl_stream.simulation.market import MarketSimulator, Scenario
from adl_stream.simulation.publish import Publisher

from .pipeline import PARTITIONS, settings_for
from .report import table

#: The soak's de-duplication window and lateness bound: short, so that a half-hour run reaches the
#: steady state a day-long window reaches in production.
DEDUP_WINDOW_MS, LATENESS_MS = 600_000, 60_000


def _run_processor(settings: Settings) -> None:  # the processor's process (spawned)
    from adl_stream.runtime.processor import Processor

    configure_logging("json", "error")  # the soak prints what matters: dead letters are counted
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    raise SystemExit(Processor(settings).run(stop))


class Instance:
    """The processor in its own process, and what its /metrics and /proc say."""

    def __init__(self, settings: Settings) -> None:
        self.port = settings.metrics_port
        self.process = multiprocessing.get_context("spawn").Process(target=_run_processor, args=(settings,))
        self.process.start()
        self.started = time.monotonic()

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=1) as response:
                return response.status == 200
        except OSError:
            return False

    def wait_ready(self, timeout_s: float = 120) -> float:
        while not self.ready():
            if not self.process.is_alive() or time.monotonic() - self.started > timeout_s:
                raise RuntimeError(f"the processor did not become ready (exit code {self.process.exitcode})")
            time.sleep(0.1)
        return time.monotonic() - self.started

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def metrics(self) -> dict[str, list]:
        """Samples by metric name: [(labels, value), ...] (histograms by their sample names)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as response:
            text = response.read().decode()
        samples: dict[str, list] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                samples.setdefault(sample.name, []).append((sample.labels, sample.value))
        return samples

    def kill(self) -> None:
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.join()

    def stop(self) -> int:
        self.process.terminate()
        self.process.join(60)
        return self.process.exitcode


def _total(samples: dict, name: str) -> float:
    return sum(value for _, value in samples.get(name, ()))


def _committed(samples: dict) -> int:
    """Input records committed: per input partition the largest committed offset of any settle
    asset (inputs are written without transactions, so offsets count records)."""
    by_partition: dict[tuple, float] = {}
    for labels, value in samples.get("adl_committed_input_offset", ()):
        key = (labels["topic"], labels["partition"])
        by_partition[key] = max(by_partition.get(key, 0.0), value)
    return int(sum(by_partition.values()))


def _buckets(samples: dict, name: str) -> dict[float, float]:
    """Cumulative counts by upper bound, summed over labels."""
    out: dict[float, float] = {}
    for labels, value in samples.get(f"{name}_bucket", ()):
        bound = float(labels["le"])
        out[bound] = out.get(bound, 0.0) + value
    return out


def p99(now: dict[float, float], before: dict[float, float]) -> float | None:
    """The bucket bound under which 99% of the observations between two scrapes fall (None: none);
    a counter that went back (a new process) counts from 0."""
    delta = {bound: count - before.get(bound, 0.0) if count >= before.get(bound, 0.0) else count
             for bound, count in now.items()}
    total = delta.get(float("inf"), 0.0)
    if not total:
        return None
    return next(bound for bound, count in sorted(delta.items()) if count >= 0.99 * total)


def market(accounts: int) -> list:
    """One pass of the soak's market: the simulated crash, then records that bring the state back to
    where the pass began, so that every pass is decided exactly like the first (and like the
    simulator predicts): marks 30, 60 and 90 s of event time later (the ADL reservations left open
    expire), fills that close every position at the last marks, and withdrawals of what the funds
    hold. Checked on the simulator's own engine, which has applied all of it."""
    simulator = MarketSimulator(Scenario(seed=1, accounts=accounts))
    records = list(simulator.records())
    engine, ts = simulator.engine, records[-1].ts
    marks = {r.symbol: r for r in records if isinstance(r, MarkPrice)}
    end = [replace(mark, ts=ts + 30_000 * step) for step in (1, 2, 3) for mark in marks.values()]
    ts += 90_001
    end += [Fill(f"close-{p.account_id}-{p.symbol}", p.account_id, p.symbol, "SELL" if p.quantity > 0 else "BUY",
                 abs(p.quantity), marks[p.symbol].mark_price, Decimal(0), "TRADE", None, ts)
            for p in sorted(engine.book, key=lambda p: (p.symbol, p.account_id)) if p.quantity]
    end += [FundFlow(f"withdraw-{fund_id}", fund_id, "WITHDRAWAL", balance, ts + 1)
            for fund_id, balance in sorted(engine.funds.balances().items()) if balance > 0]
    for record in end:
        engine.apply(record)
    if any(p.quantity for p in engine.book) or len(engine.reservations) or any(engine.funds.balances().values()):
        raise RuntimeError("the soak's market does not return to its start (a bug of bench/soak.py)")
    return records + end


def passes(records: list, start_ts: int, rate: float, first: int = 1):
    """The market again and again from event time ``start_ts``, pass ``k`` (from ``first``) with ids
    ending ``~k``, each pass's event times its own shifted to follow the previous pass: (record,
    when to send it on the wall clock at ``rate`` records per second from now)."""
    t0, span = records[0].ts, records[-1].ts - records[0].ts + 1
    started, n = time.time(), 0
    for k in range(first, 10**9):
        suffix, shift = f"~{k}", start_ts + (k - first) * span - t0
        for record in records:
            ts = record.ts + shift
            if isinstance(record, Fill):
                order = record.adl_order_id
                if order is not None:  # <shortfall event id>:<n>, as the engine names orders
                    event, _, number = order.rpartition(":")
                    order = f"{event}{suffix}:{number}"
                record = replace(record, fill_id=record.fill_id + suffix, adl_order_id=order, ts=ts)
            elif isinstance(record, LiquidationShortfall):
                record = replace(record, event_id=record.event_id + suffix, ts=ts)
            elif isinstance(record, FundFlow):
                record = replace(record, flow_id=record.flow_id + suffix, ts=ts)
            else:
                record = replace(record, ts=ts)
            yield record, started + n / rate
            n += 1


class Feed(threading.Thread):
    """Publishes :func:`passes` on time (in slices of 50 ms) until stopped."""

    def __init__(self, settings: Settings, records: list, rate: float, start_ts: int) -> None:
        super().__init__(daemon=True)
        self.publisher = Publisher({"bootstrap.servers": settings.bootstrap_servers, "logger": LIBRDKAFKA_LOG},
                                   settings.topics)
        self.records, self.rate, self.start_ts = records, rate, start_ts
        self.halt = threading.Event()
        self.behind_s = 0.0  # how late the last slice went out (the feed's own lag)

    def run(self) -> None:
        for record, when in passes(self.records, self.start_ts, self.rate):
            wait = when - time.time()
            if wait > 0.05:
                self.publisher.producer.poll(0)
                if self.halt.wait(wait):
                    break
            self.behind_s = max(0.0, -wait)
            self.publisher.send(record)
        self.publisher.flush()


def calibrate(settings: Settings, records: list, instance: Instance, start_ts: int,
              size: int = 100_000) -> tuple[float, int]:
    """Records per second the processor handles from a burst of whole passes of the market (ids of
    their own), at least ``size`` records, from the first sent to the last handled; and the event
    time after the burst."""
    rounds = -(-size // len(records))
    count = rounds * len(records)
    burst = [record for record, _ in itertools.islice(passes(records, start_ts, 1e6, first=10**6), count)]
    before = _handled(instance.metrics())
    started, deadline = time.monotonic(), time.monotonic() + 600
    Publisher({"bootstrap.servers": settings.bootstrap_servers, "linger.ms": 20, "logger": LIBRDKAFKA_LOG},
              settings.topics).send_all(burst)
    while time.monotonic() < deadline:
        handled = _handled(instance.metrics()) - before
        if handled >= len(burst):
            return len(burst) / (time.monotonic() - started), start_ts + rounds * (records[-1].ts - records[0].ts + 1)
        time.sleep(0.1)
    raise RuntimeError(f"the processor handled {handled:,.0f} of the {len(burst):,} records of the burst in 10 min")


def _handled(samples: dict) -> float:
    """Input records applied or dead-lettered."""
    return _total(samples, "adl_events_processed_total") + _total(samples, "adl_dead_letters_total")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30, help="how long to feed (default 30)")
    parser.add_argument("--rate", type=float, help="records per second (default: half the measured throughput)")
    parser.add_argument("--accounts", type=int, default=2_000, help="traders of the simulated market (default 2000)")
    parser.add_argument("--no-crash", action="store_true", help="do not kill the processor at half time")
    parser.add_argument("--json", default="soak-results.json", help="where to write the figures")
    args = parser.parse_args(argv)
    console = Console()
    configure_logging("console", "warning")
    records = market(args.accounts)
    start_ts = int(time.time() * 1000)
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker(Path(tmp) / "tansu.log") as broker:
        settings = replace(settings_for(broker, f"soak{uuid.uuid4().hex[:6]}."), metrics_port=free_port(),
                           dedup_window_ms=DEDUP_WINDOW_MS, max_event_lateness_ms=LATENESS_MS)
        create_missing_topics(settings, [*settings.topics.inputs(), *settings.topics.outputs()], PARTITIONS)
        instance = Instance(settings)
        console.print(f"processor ready in {instance.wait_ready():.1f} s (pid {instance.process.pid})")
        measured = None
        if args.rate is None:
            measured, start_ts = calibrate(settings, records, instance, start_ts)
            console.print(f"measured throughput: {measured:,.0f} records/s on a burst of the market")
        rate = args.rate or measured / 2
        console.print(f"feeding {args.minutes:g} min at {rate:,.0f} records/s (market of {len(records):,} "
                      f"records, {args.accounts:,} traders, again and again)")
        feed = Feed(settings, records, rate, start_ts)
        feed.start()
        rows, crash = [], None
        previous = instance.metrics()
        sent_before = _committed(previous)  # the burst's
        started = time.monotonic()
        for minute in range(1, int(args.minutes) + 1):
            while time.monotonic() - started < minute * 60:
                if (crash is None and not args.no_crash and time.monotonic() - started >= args.minutes * 30):
                    instance.kill()
                    killed = time.monotonic()
                    instance = Instance(settings)
                    ready_s = instance.wait_ready()
                    while sent_before + feed.publisher.sent - _committed(instance.metrics()) > rate:
                        time.sleep(0.2)  # more than a second of input behind
                    crash = {"minute": round((killed - started) / 60, 1), "ready_s": round(ready_s, 1),
                             "caught_up_s": round(time.monotonic() - killed, 1)}
                    console.print(f"killed (SIGKILL) at minute {crash['minute']}: the new processor was ready "
                                  f"after {crash['ready_s']} s and caught up after {crash['caught_up_s']} s")
                time.sleep(0.5)
            samples = instance.metrics()
            handled = _handled(samples) - _handled(previous)
            row = {"min": minute, "rss_mb": round(instance.rss_mb(), 1),
                   "lag": int(_total(samples, "adl_consumer_lag")),
                   "behind": sent_before + feed.publisher.sent - _committed(samples),
                   "rec/s": int((handled if handled >= 0 else _handled(samples)) / 60),
                   "decisions": int(_total(samples, "adl_shortfalls_total")),
                   "dlq": int(_total(samples, "adl_dead_letters_total")),
                   "feed_late_s": round(feed.behind_s, 2)}
            name = "adl_shortfall_processing_seconds"
            row["p99_s"] = p99(_buckets(samples, name), _buckets(previous, name))
            previous = samples
            rows.append(row)
            console.print(" ".join(f"{k}={v}" for k, v in row.items()))
        feed.halt.set()
        feed.join(60)
        dead_letters = {f"{labels['reason']} ({labels['topic'].rsplit('.', 1)[-1]})": int(value)
                        for labels, value in instance.metrics().get("adl_dead_letters_total", ()) if value}
        code = instance.stop()
    table(console, f"Soak: {args.minutes:g} min at {rate:,.0f} records/s", rows)
    if dead_letters:
        # Event time runs hundreds of times faster than the wall clock here, so a partition fetched
        # a few hundred ms after another is a minute late in event time: a few records are merged
        # late, dead-lettered as late_event or no longer fit (fund_overdraft, unknown_position).
        console.print(f"dead letters since the restart, by reason: {dead_letters}")
    results = {"rate": rate, "measured_throughput": measured, "minutes": rows, "crash": crash,
               "dead_letters": dead_letters, "exit_code": code}
    Path(args.json).write_text(json.dumps(results, indent=2))
    console.print(f"figures in {args.json}; processor exit code {code}")
    return 0 if code == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
