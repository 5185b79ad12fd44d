"""deploy/prometheus and the Grafana dashboard against promtool and a real Prometheus server
scraping a processor fed through the real broker (Debian's ``prometheus`` package: ``make test``
installs it)."""

import json
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from adl_stream.embedded import free_port
from adl_stream.runtime.metrics import ProcessorMetrics
from tests import scenarios as sc
from tests.conftest import Feed, wait_for
from tests.integration.test_processor import STAGES, run_scenario

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
PROMETHEUS = DEPLOY / "prometheus"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "adl-stream.json"
#: Grafana's range variable, as Grafana would substitute it for a 1 s scrape interval.
RATE_INTERVAL = "30s"


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found: install Debian's prometheus package (make test does: "
                    "apt-get install prometheus)")
    return path


def dashboard_exprs() -> list[tuple[str, str]]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [(p["title"], t["expr"].replace("$__rate_interval", RATE_INTERVAL)) for p in panels for t in p["targets"]]


def alert_rules() -> list[dict]:
    return [rule for group in yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"] for rule in group["rules"]]


def exported_names() -> set[str]:
    """Every sample name the processor's registry can expose, whether or not it has samples yet."""
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"], "info": ["_info"], "gauge": [""]}
    return {family.name + suffix for family in ProcessorMetrics().registry.collect() for suffix in suffixes[family.type]}


def metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\b(adl_[a-z_]+)\b", expr))


@pytest.mark.parametrize("args", [
    ["check", "config", "prometheus.yml"],
    ["check", "rules", "alerts.yml"],
    ["test", "rules", "alerts_test.yml"],  # the fund-floor and ADL alerts fire on synthetic series
])
def test_promtool_accepts_the_config_and_rules(args):
    result = subprocess.run([tool("promtool"), *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_dashboard_and_alerts_use_only_metrics_the_processor_exports():
    exported = exported_names()
    assert {"adl_insurance_fund_balance", "adl_shortfall_processing_seconds_bucket", "adl_consumer_lag"} <= exported
    used = {name for _, expr in dashboard_exprs() for name in metric_names(expr)}
    used |= {name for rule in alert_rules() for name in metric_names(rule["expr"])}
    assert used - exported == set()
    # and the dashboard shows every family but the build info's help text
    families = {re.sub(r"(_total|_bucket|_sum|_count)$", "", name) for name in exported}
    shown = {re.sub(r"(_total|_bucket|_sum|_count)$", "", name) for name in used}
    assert families - shown == set()


@pytest.fixture
def prometheus(tmp_path):
    """Start Prometheus with deploy/'s config (its scrape target replaced); yield a query function."""
    servers = []

    def start(target: str):
        config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
        config["global"].update(scrape_interval="1s", evaluation_interval="1s")
        config["rule_files"] = [str(PROMETHEUS / name) for name in config["rule_files"]]
        (job,) = config["scrape_configs"]
        job["static_configs"] = [{"targets": [target]}]
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        address = f"127.0.0.1:{free_port()}"
        log = open(tmp_path / "prometheus.log", "wb")
        servers.append(subprocess.Popen(
            [tool("prometheus"), f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'data'}",
             f"--web.listen-address={address}"], stdout=log, stderr=subprocess.STDOUT))

        def api(path: str, **params):
            url = f"http://{address}/api/v1/{path}?{urllib.parse.urlencode(params)}"
            with urllib.request.urlopen(url, timeout=5) as response:
                body = json.load(response)
            assert body["status"] == "success", body
            return body["data"]

        def ready():
            try:
                return bool(api("query", query='up{job="adl-stream"} == 1')["result"])
            except OSError:
                return False

        wait_for(ready, 30, f"Prometheus scraping {target} (log: {tmp_path / 'prometheus.log'})")
        return api

    yield start
    for server in servers:
        server.terminate()
        server.wait(10)


@pytest.mark.integration
def test_prometheus_scrapes_the_processor_and_every_panel_and_alert_evaluates(settings, start_processor, prometheus):
    running = start_processor(replace(settings, kafka={**settings.kafka, "statistics.interval.ms": "500"}))
    api = prometheus(f"127.0.0.1:{running.processor.health.port}")
    feed = Feed(settings)
    feed.send(*sc.SETUP)  # series first, so that rates and increases see the crash below
    running.wait_handled(len(sc.SETUP))
    time.sleep(2.5)
    # Stage by stage, as the topics would race each other in one burst (and E2 be refused, not repeated).
    run_scenario(feed, running, STAGES[1:], handled=len(sc.SETUP))
    # 60 s past E4 (8 s): as far ahead as max_event_skew_ms allows, past E3's reservations (66 s).
    feed.send(sc.MarkPrice("BTCUSDT", sc.D(91), 68_000))  # expires E3's reservations
    feed.send_raw(settings.topics.fills, "BTCUSDT", b"not avro")  # one dead letter
    running.wait_handled(len(sc.STREAM) + 2)
    time.sleep(3)

    for title, expr in dashboard_exprs():
        result = api("query", query=expr)["result"]  # a bad expression fails the query itself
        if "adl_restore_events_total" not in expr:  # the one series a run without restart lacks
            # A rate needs two scrapes of a series born late in the run: on a loaded machine the
            # server's 1 s scrapes can lag, so wait for them (a panel that never has data still fails).
            deadline = time.monotonic() + 15
            while not result and time.monotonic() < deadline:
                time.sleep(0.5)
                result = api("query", query=expr)["result"]
            assert result, f"panel {title!r}: {expr} returned no data"

    def evaluated():
        rules = [r for g in api("rules")["groups"] for r in g["rules"]]
        return len(rules) == len(alert_rules()) and all(r["lastEvaluation"] > "2000" for r in rules) and rules

    wait_for(evaluated, 10, "every rule evaluated")
    for rule in evaluated():
        assert rule["health"] == "ok", (rule["name"], rule.get("lastError"))
    alerts = {(a["labels"]["alertname"], a["labels"].get("symbol") or a["labels"].get("fund_id"))
              for a in api("alerts")["alerts"]}  # firing or pending
    assert {("AdlExecuted", "BTCUSDT"), ("AdlUnfilledQuantity", "BTCUSDT"), ("AdlReservationsExpiring", "BTCUSDT"),
            ("AdlInsuranceFundAtFloor", "USDT-ALT")} <= alerts  # ETHUSDT's fund was never funded
    assert ("AdlInsuranceFundAtFloor", "USDT") not in alerts  # it holds 600
    assert not {name for name, _ in alerts} & {"AdlProcessorDown", "AdlProcessorNotReady", "AdlConsumerLagHigh"}
    assert running.close() == 0
