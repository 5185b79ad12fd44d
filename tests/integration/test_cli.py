"""``adl-stream run`` as a user runs it: a subprocess with a TOML file and ADL_* variables."""

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import replace

import pytest

from adl_stream.embedded import free_port
from adl_stream.engine import ShortfallDecision
from adl_stream.wire import Codec
from tests import scenarios as sc
from tests.conftest import Feed, read_topic, wait_for, write_config

pytestmark = pytest.mark.integration


def http(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
    except OSError:
        return 0, ""


def test_run_subprocess_serves_probes_and_metrics_logs_json_and_stops_on_sigterm(settings, tmp_path):
    port = free_port()
    config = write_config(
        replace(settings, kafka={**settings.kafka, "sasl.password": "do-not-log-me", "security.protocol": "PLAINTEXT"}),
        tmp_path / "adl.toml",
    )
    env = {**os.environ, "ADL_BOOTSTRAP_SERVERS": settings.bootstrap_servers, "ADL_METRICS_PORT": str(port)}
    log = open(tmp_path / "stderr.log", "w+")
    process = subprocess.Popen([sys.executable, "-m", "adl_stream.cli", "run", "--config", config,
                                "--log-format", "json"], env=env, stderr=log, stdout=log)
    try:
        wait_for(lambda: http(port, "/healthz")[0] == 200, 30, "/healthz")
        wait_for(lambda: http(port, "/readyz")[0] == 200, 30, "/readyz")
        feed = Feed(settings)
        feed.send(*sc.SETUP, sc.E1)
        decisions = read_topic(settings, settings.topics.adl_decisions, 1)
        assert [Codec().decode(m.value(), ShortfallDecision).event_id for m in decisions] == ["E1"]
        wait_for(lambda: 'adl_insurance_fund_balance{fund_id="USDT"} 700.0' in http(port, "/metrics")[1], 10, "fund metric")
        metrics = http(port, "/metrics")[1]
        assert 'adl_shortfalls_total{outcome="FUND_COVERED",symbol="BTCUSDT"} 1.0' in metrics
        assert f'adl_events_processed_total{{topic="{settings.topics.fills}"}} 6.0' in metrics
        assert "adl_ready 1.0" in metrics
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
    log.seek(0)
    lines = [json.loads(line) for line in log if line.startswith("{")]
    events = {line["event"]: line for line in lines}
    assert events["shortfall_decided"]["event_id"] == "E1"
    assert events["shortfall_decided"]["outcome"] == "FUND_COVERED"
    assert events["stopped"]["exit_code"] == 0
    log.seek(0)
    assert "do-not-log-me" not in log.read()


def test_run_fails_at_start_naming_the_missing_topic(settings, tmp_path):
    config = tmp_path / "adl.toml"
    config.write_text('startup_timeout_s = 2\n[symbols.BTCUSDT]\nsettle_asset = "USDT"\n[topics]\nfills = "no-such-topic"\n')
    result = subprocess.run([sys.executable, "-m", "adl_stream.cli", "run", "--config", str(config),
                             "--bootstrap-servers", settings.bootstrap_servers, "--log-format", "json"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "'no-such-topic' (setting topics.fills / ADL_TOPIC_FILLS)" in result.stderr


def test_run_rejects_an_invalid_setting_before_connecting(tmp_path):
    result = subprocess.run([sys.executable, "-m", "adl_stream.cli", "run", "--metrics-port", "99999"],
                            capture_output=True, text=True, timeout=60, env={**os.environ, "ADL_CONFIG": ""})
    assert result.returncode == 2
    assert "metrics_port" in result.stderr and "flag --metrics-port" in result.stderr
