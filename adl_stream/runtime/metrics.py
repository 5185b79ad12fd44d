"""Prometheus metrics of the processor and the HTTP endpoints on the metrics port:
``/metrics``, ``/healthz`` (the processing loop is alive) and ``/readyz`` (state restored and
partitions assigned)."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, make_wsgi_app

from .. import __version__
from ..engine import SymbolSpec
from ..engine.indicators import LIGHTS
from ..engine.records import LONG, OUTCOMES, SHORT

#: Latency buckets from half a millisecond to a minute (a backlog after a restart is minutes old).
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class ProcessorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.fund_balance = Gauge("adl_insurance_fund_balance", "Insurance fund balance, in its settle asset.", ["fund_id"], registry=r)
        self.fund_floor = Gauge("adl_insurance_fund_floor", "Fund balance at or below which shortfalls go to ADL (trigger policy; 0 for fund-exhausted).", ["fund_id"], registry=r)
        self.shortfalls = Counter("adl_shortfalls", "Shortfalls decided, by outcome (FUND_COVERED, ADL, ADL_PARTIAL).", ["symbol", "outcome"], registry=r)
        self.orders = Counter("adl_orders", "ADL orders emitted.", ["symbol"], registry=r)
        self.adl_quantity = Counter("adl_quantity", "Quantity closed by ADL orders, in contracts.", ["symbol"], registry=r)
        self.adl_notional = Counter("adl_notional", "Notional of ADL orders (quantity x bankruptcy price), in the settle asset.", ["symbol"], registry=r)
        self.haircut = Counter("adl_haircut", "What ADL orders cost their holders against the mark (decisions' haircuts above 0), in the settle asset.", ["symbol"], registry=r)
        self.haircut_negative = Counter("adl_haircut_negative", "Decisions' haircuts below 0 (orders at a better price than the mark for their holders), as a positive amount.", ["symbol"], registry=r)
        self.lights = Gauge("adl_indicator_positions", "Positions with free quantity per ADL indicator light (5: first in line) at the last indicator pass.", ["symbol", "side", "light"], registry=r)
        self.reservations_open = Gauge("adl_reservations_open", "ADL reservations waiting for their fill.", registry=r)
        self.event_to_output = Histogram("adl_event_to_output_seconds", "Event time of a shortfall to its decision and orders committed (wall clock).", ["symbol"], buckets=LATENCY_BUCKETS, registry=r)
        self.shortfall_processing = Histogram("adl_shortfall_processing_seconds", "Shortfall consumed to its decision and orders committed.", ["symbol"], buckets=LATENCY_BUCKETS, registry=r)
        self.consumer_lag = Gauge("adl_consumer_lag", "Records of an assigned input partition not yet consumed (librdkafka statistics).", ["topic", "partition"], registry=r)
        self.unfilled_quantity = Counter("adl_unfilled_quantity", "Shortfall quantity the opposite side could not absorb.", ["symbol"], registry=r)
        self.reservations_expired = Counter("adl_reservations_expired", "ADL reservations expired without their fill.", ["symbol"], registry=r)
        self.dead_letters = Counter("adl_dead_letters", "Input records sent to the dead-letter topic.", ["reason", "topic"], registry=r)
        self.events = Counter("adl_events_processed", "Input records processed (restore excluded).", ["topic"], registry=r)
        self.duplicates = Counter("adl_duplicate_events", "Input records ignored as repeated ids.", ["topic"], registry=r)
        self.restored = Counter("adl_restore_events", "Records read to rebuild state: changelog records at restore, input records below a replay's start.", ["topic"], registry=r)
        self.committed_offset = Gauge("adl_committed_input_offset", "Input offset committed (next to apply) by the engine of a settle asset.", ["settle_asset", "topic", "partition"], registry=r)
        self.ready = Gauge("adl_ready", "1 when state is restored and partitions are assigned.", registry=r)
        self.snapshot_records = Counter("adl_snapshot_records", "State snapshot records written to the changelog (each holds many entities).", ["topic"], registry=r)
        self.restore_duration = Gauge("adl_restore_duration_seconds", "Duration of the last restore of assigned tasks from the changelog.", registry=r)
        self.seconds_since_progress = Gauge("adl_seconds_since_progress", "Seconds since this instance last committed input, or last had none waiting: rises while input waits and nothing is committed (a stall; the log says what it waits for: no_progress).", registry=r)
        self.transactions = Counter("adl_transactions", "Kafka transactions, by result (committed, aborted).", ["result"], registry=r)
        Info("adl_build", "Build information.", registry=r).info({"version": __version__})

    def total(self, name: str, **labels: str) -> float:
        """Sum of the samples named ``name`` (e.g. ``adl_orders_total``) whose labels match ``labels``."""
        return sum(sample.value for family in self.registry.collect() for sample in family.samples
                   if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()))

    def start_series(self, symbols: Mapping[str, SymbolSpec], fund_floor: float) -> None:
        """Create the series of every symbol and fund at 0 (and each fund's floor): a counter whose
        series appears with its first increment hides that increment from rate() and increase()."""
        for symbol in symbols:
            for outcome in OUTCOMES:
                self.shortfalls.labels(symbol, outcome)
            for counter in (self.orders, self.adl_quantity, self.adl_notional, self.haircut, self.haircut_negative,
                            self.unfilled_quantity, self.reservations_expired):
                counter.labels(symbol)
        self.set_lights(symbols, {})
        for fund_id in sorted({spec.fund_id for spec in symbols.values()}):
            self.fund_floor.labels(fund_id).set(fund_floor)
            self.fund_balance.labels(fund_id)

    def set_lights(self, symbols, counts: Mapping[tuple[str, str, int], int]) -> None:
        """The lights gauge of ``symbols`` (every side and light) from ``counts``: positions per
        (symbol, side, light), as ``Indicators.counts`` holds them after a pass; absent = 0."""
        for symbol in symbols:
            for side in (LONG, SHORT):
                for light in LIGHTS:
                    self.lights.labels(symbol, side, str(light)).set(counts.get((symbol, side, light), 0))


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, *args) -> None:  # scrapes are not log events
        pass


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class HealthServer:
    """Serves the metrics and the probes in a daemon thread."""

    def __init__(self, metrics: ProcessorMetrics, host: str, port: int, liveness_s: float = 30.0) -> None:
        self.metrics = metrics
        self.liveness_s = liveness_s
        self.ready = False
        self.last_beat = time.monotonic()
        metrics_app = make_wsgi_app(metrics.registry)

        def app(environ, start_response):
            path = environ.get("PATH_INFO", "")
            if path == "/healthz":
                ok = time.monotonic() - self.last_beat < self.liveness_s
                return self._plain(start_response, ok, "ok" if ok else "processing loop stalled")
            if path == "/readyz":
                return self._plain(start_response, self.ready, "ready" if self.ready else "restoring or unassigned")
            return metrics_app(environ, start_response)

        self._server = make_server(host, port, app, server_class=_ThreadingServer, handler_class=_QuietHandler)
        self.port = self._server.server_port
        self._thread = threading.Thread(target=self._server.serve_forever, name="adl-metrics", daemon=True)

    @staticmethod
    def _plain(start_response, ok: bool, text: str):
        start_response("200 OK" if ok else "503 Service Unavailable", [("Content-Type", "text/plain")])
        return [text.encode()]

    def beat(self) -> None:
        self.last_beat = time.monotonic()

    def set_ready(self, ready: bool) -> None:
        self.ready = ready
        self.metrics.ready.set(1 if ready else 0)

    def start(self) -> "HealthServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
