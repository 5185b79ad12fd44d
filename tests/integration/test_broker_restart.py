"""Broker restarts and outages on the real broker: Tansu on S3 storage (a local moto server), so its
records, transactions and group offsets survive a kill -9 (README "A broker restart")."""

import time
from dataclasses import replace

import pytest
import structlog

from adl_stream.embedded import EmbeddedBroker
from adl_stream.runtime import processor as processor_module
from adl_stream.runtime.processor import EXIT_FATAL
from tests.conftest import Feed, fresh_settings, metric, wait_for
from tests.integration.test_exactly_once import _check_outputs, _lights, _reference
from tests.market import generate

pytestmark = pytest.mark.integration

#: Most seconds from the broker's return to the processor committing again: a call into the
#: producer stuck past its timeout is given up after KAFKA_CALL_TIMEOUT_S + OVERRUN_S (15 s).
BACK_WITHIN_S = 30


def _committed(running) -> float:
    """Input records committed by the processor (its commit markers' offsets, from its metrics)."""
    return metric(running.processor, "adl_committed_input_offset", settle_asset="USDT")


def test_two_broker_kills_mid_stream_give_the_outputs_of_an_uninterrupted_run(s3_broker, start_processor):
    settings = replace(fresh_settings(s3_broker), batch_size=10, max_idle_ms=1000, indicator_interval_ms=5_000)
    market = generate(seed=11, trades=1500, ranking=settings.ranking(), indicator_interval_ms=5_000)
    assert len(market.decisions) >= 20 and len(market.orders) > 30 and len(market.indicators) > 50
    reference = _reference(market)
    total = len(market.records)
    Feed(settings).send(*market.records)

    with structlog.testing.capture_logs() as logs:
        running = start_processor(settings)
        back, positions = [], []
        for kill in (1, 2):  # at about 1/3 and 2/3 of the stream
            wait_for(lambda kill=kill: _committed(running) >= total * kill // 3, 60, f"a third of the stream ({kill})")
            positions.append(_committed(running))
            s3_broker.kill()
            time.sleep(3)
            s3_broker.restart()
            restarted = time.monotonic()
            wait_for(lambda at=positions[-1]: _committed(running) > at, BACK_WITHIN_S + 30, "a commit after the restart")
            back.append(time.monotonic() - restarted)
        wait_for(lambda: _committed(running) >= total, 60, "every record committed")
        finished = time.monotonic() - restarted
    print(f"records={total} committed at the kills={positions} seconds from each restart to the next commit="
          f"{[round(b, 1) for b in back]}, to the end={finished:.1f}; "
          f"batches abandoned={sum(1 for e in logs if e['event'] == 'batch_abandoned')}")
    assert running.thread.is_alive(), "the processor stopped"
    assert all(0 < p < total for p in positions), "a kill did not land mid-stream"
    assert max(back) <= BACK_WITHIN_S, f"progress resumed only after {max(back):.1f}s"

    # Nothing lost, nothing different; copies only of aborted transactions (Tansu shows them).
    _check_outputs(settings, reference)
    engine = running.processor.domain("USDT").engine
    assert engine.snapshot() == market.engine.snapshot()
    assert _lights(engine) == _lights(market.engine)
    assert running.close() == 0


def test_an_outage_longer_than_broker_outage_s_stops_with_an_error_naming_it(tmp_path, start_processor, monkeypatch):
    monkeypatch.setattr(processor_module, "NO_PROGRESS_LOG_EVERY_S", 1)
    with EmbeddedBroker(tmp_path / "tansu.log") as broker:
        settings = replace(fresh_settings(broker), batch_size=10, max_idle_ms=1000, broker_outage_s=4)
        market = generate(seed=5, trades=1500)
        Feed(settings).send(*market.records)
        with structlog.testing.capture_logs() as logs:
            running = start_processor(settings)
            wait_for(lambda: _committed(running) > 100, 60, "processing under way")
            broker.kill()
            killed = time.monotonic()
            stalled = []
            wait_for(lambda: stalled.append(metric(running.processor, "adl_seconds_since_progress"))
                     or not running.thread.is_alive(), 60, "the processor to stop")
            took = time.monotonic() - killed
    assert running.exit_code == EXIT_FATAL
    assert took < 4 + 2 * (4 + 5) + 5, f"stopped {took:.1f}s after the kill"
    assert max(stalled) >= 3  # the gauge rose while nothing was committed
    (fatal,) = [e for e in logs if e["event"] == "fatal"]
    assert "broker_outage_s = 4 (ADL_BROKER_OUTAGE_S)" in fatal["error"], fatal
    assert any(e["event"] == "batch_abandoned" for e in logs)
    waiting = [e for e in logs if e["event"] == "no_progress"]
    assert waiting and any("broker_outage_s = 4" in line for e in waiting for line in e["waiting_for"]), waiting
