"""``adl-stream run`` as a user runs it: a subprocess with a TOML file and ADL_* variables."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import replace

import pytest

from adl_stream.embedded import free_port
from adl_stream.engine import BalanceUpdate, ShortfallDecision
from adl_stream.wire import Codec
from tests import scenarios as sc
from tests.conftest import Feed, read_topic, running_command, wait_for, write_config

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
    log = tmp_path / "stderr.log"
    with running_command([*ADL_STREAM, "run", "--config", config, "--log-format", "json"], log, env=env):
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
    lines = json_lines(log.read_text())  # every line is JSON: librdkafka's too, nothing raw
    events = {line["event"]: line for line in lines}
    # session.timeout.ms and heartbeat.interval.ms went to the consumers only: no producer warned
    assert not [line for line in lines if line["event"] == "librdkafka" and line["facility"] == "CONFWARN"]
    assert events["shortfall_decided"]["event_id"] == "E1"
    assert events["shortfall_decided"]["outcome"] == "FUND_COVERED"
    assert events["stopped"]["exit_code"] == 0
    assert "do-not-log-me" not in log.read_text()


ADL_STREAM = [sys.executable, "-m", "adl_stream.cli"]


def adl_stream(*args, env=None, timeout=60) -> subprocess.CompletedProcess:
    return subprocess.run([*ADL_STREAM, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "ADL_CONFIG": "", **(env or {})})


def json_lines(text: str) -> list[dict]:
    """Every line of ``text`` as JSON (fails on a raw one)."""
    return [json.loads(line) for line in text.splitlines()]


def test_run_fails_at_start_naming_the_missing_topic_after_saying_what_it_waits_for(settings, tmp_path):
    config = tmp_path / "adl.toml"
    config.write_text('startup_timeout_s = 2\n[symbols.BTCUSDT]\nsettle_asset = "USDT"\n[topics]\nfills = "no-such-topic"\n')
    result = adl_stream("run", "--config", str(config), "--bootstrap-servers", settings.bootstrap_servers,
                        "--log-format", "json")
    assert result.returncode == 2
    assert "'no-such-topic' (setting topics.fills / ADL_TOPIC_FILLS)" in result.stderr
    waits = [line for line in json_lines(result.stderr) if line["event"] == "waiting_for_topics"]
    assert waits and all(w["missing"][0] == "no-such-topic" and w["settings"][0] == "topics.fills / ADL_TOPIC_FILLS"
                         and len(w["missing"]) == len(w["settings"]) for w in waits)


def test_an_unreachable_broker_gives_one_warning_per_retry_and_nothing_raw(tmp_path):
    config = tmp_path / "adl.toml"
    config.write_text('startup_timeout_s = 5\n[symbols.BTCUSDT]\nsettle_asset = "USDT"\n')
    nowhere = f"127.0.0.1:{free_port()}"  # nothing listens there
    result = adl_stream("run", "--config", str(config), "--bootstrap-servers", nowhere, "--log-format", "json")
    assert result.returncode == 2
    lines = json_lines(result.stderr)
    retries = [line for line in lines if line["event"] == "kafka_unreachable"]
    assert retries and [r["attempt"] for r in retries] == list(range(1, len(retries) + 1))
    assert all(r["bootstrap_servers"] == nowhere and "bootstrap_servers" in r["hint"] for r in retries)
    assert [line["event"] for line in lines] == ["starting", *["kafka_unreachable"] * len(retries), "startup_failed"]
    assert f"cannot reach the Kafka cluster at '{nowhere}' within 5s" in lines[-1]["error"]


@pytest.mark.parametrize("kafka, env, named, source", [
    ('"sesion.timeout.ms" = "6000"', {}, "sesion.timeout.ms", "config file"),
    ("", {"ADL_KAFKA_LINGER_MS": "soon"}, "linger.ms", "environment variable ADL_KAFKA_LINGER_MS"),
    ('"security.protocol" = "SASL_SSL"', {}, "security.protocol", "config file"),
])
@pytest.mark.parametrize("command", ["run", "simulate", "inspect", "topics"])
def test_a_kafka_property_librdkafka_refuses_stops_with_exit_2_naming_it(tmp_path, command, kafka, env, named, source):
    config = tmp_path / "adl.toml"
    config.write_text(f'[symbols.BTCUSDT]\nsettle_asset = "USDT"\n[kafka]\n{kafka}\n')
    result = adl_stream(command, "--config", str(config), env=env)
    assert result.returncode == 2, result.stderr
    first = result.stderr.splitlines()[0]
    assert first.startswith(f"adl-stream {command}: invalid setting 'kafka.\"{named}\"' (from {source}")
    assert "librdkafka refuses it" in first and "Traceback" not in result.stderr


def test_run_without_a_settings_file_says_how_to_give_one():
    result = adl_stream("run")
    assert result.returncode == 2
    assert "no settings file given" in result.stderr and "--config FILE or ADL_CONFIG=FILE" in result.stderr


def test_fund_floor_without_a_floor_refuses_to_start_naming_the_setting(tmp_path):
    config = tmp_path / "adl.toml"
    config.write_text('trigger_policy = "fund-floor"\n[symbols.BTCUSDT]\nsettle_asset = "USDT"\n')
    result = adl_stream("run", "--config", str(config))
    assert result.returncode == 2
    assert "invalid setting 'fund_floor'" in result.stderr and 'fund_floor = "250000"' in result.stderr


def test_topics_creates_what_is_missing_once_and_says_what_differs(broker, tmp_path):
    from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, ResourceType

    prefix = f"t{uuid.uuid4().hex[:8]}."
    config = tmp_path / "adl.toml"
    names = ("fills", "mark_prices", "balances", "insurance_fund", "liquidation_shortfalls", "adl_orders",
             "adl_decisions", "adl_dlq", "adl_indicators")
    config.write_text(f'group_id = "{prefix}g"\n[symbols.BTCUSDT]\nsettle_asset = "USDT"\n[topics]\n'
                      + "".join(f'{name} = "{prefix}{name}"\n' for name in names))
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(f"{prefix}fills", 2)])[f"{prefix}fills"].result(10)  # an input already there
    first = adl_stream("topics", "--config", str(config), "--bootstrap-servers", broker.bootstrap)
    assert first.returncode == 0, first.stderr
    created = [line.split()[1] for line in first.stdout.splitlines() if line.strip().startswith("created")]
    assert created == [f"{prefix}{name}" for name in names[1:]] + [f"{prefix}g-changelog"]
    metadata = admin.list_topics(timeout=10).topics
    assert {len(metadata[f"{prefix}{name}"].partitions) for name in names} == {2}  # as the input there
    for topic in (f"{prefix}adl_indicators", f"{prefix}g-changelog"):
        resource = ConfigResource(ResourceType.TOPIC, topic)
        assert admin.describe_configs([resource])[resource].result(10)["cleanup.policy"].value == "compact"
    again = adl_stream("topics", "--config", str(config), "--bootstrap-servers", broker.bootstrap)
    assert again.returncode == 0 and "created" not in again.stdout and "Every topic is as the settings need" in again.stdout
    differs = adl_stream("topics", "--config", str(config), "--bootstrap-servers", broker.bootstrap, "--partitions", "4")
    assert differs.returncode == 2 and "created" not in differs.stdout
    assert f"DIFFERS  {prefix}fills" in differs.stdout and "has 2 partitions, not 4 (--partitions)" in differs.stdout


def test_topics_says_when_a_compacted_topic_is_not(settings, tmp_path):
    # The fixture created every topic, adl-indicators with the broker's default policy (delete).
    config = write_config(settings, tmp_path / "adl.toml")
    result = adl_stream("topics", "--config", config)
    assert result.returncode == 2
    assert f"DIFFERS  {settings.topics.adl_indicators}" in result.stdout and "cleanup.policy=delete, needs compact" in result.stdout
    assert settings.topics.adl_indicators in result.stderr.splitlines()[-1]


def test_broker_on_a_taken_port_says_so(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = adl_stream("broker", "--port", str(taken.getsockname()[1]), "--log-file", str(tmp_path / "b.log"))
    assert result.returncode == 1 and "is taken (another broker?)" in result.stderr


def test_simulate_starts_event_times_now_and_prefixes_every_id(settings, tmp_path):
    config = write_config(settings, tmp_path / "adl.toml")
    before = int(time.time() * 1000)
    result = adl_stream("simulate", "--config", config, "--accounts", "20", "--id-prefix", "run2-", timeout=120)
    assert result.returncode == 0, result.stderr
    balances = read_topic(settings, settings.topics.balances, 20, settle=0.2)
    stamps = sorted(m.timestamp()[1] for m in balances)
    assert before <= stamps[0] <= int(time.time() * 1000)  # event time (the Kafka timestamp) starts now
    codec = Codec()
    accounts = {codec.decode(m.value(), BalanceUpdate).account_id for m in balances}
    assert accounts and all(a.startswith("run2-") for a in accounts)
    assert "ids prefixed 'run2-'" in result.stderr


def test_run_rejects_an_invalid_setting_before_connecting(tmp_path):
    result = subprocess.run([sys.executable, "-m", "adl_stream.cli", "run", "--metrics-port", "99999"],
                            capture_output=True, text=True, timeout=60, env={**os.environ, "ADL_CONFIG": ""})
    assert result.returncode == 2
    assert "metrics_port" in result.stderr and "flag --metrics-port" in result.stderr


def test_run_says_it_waits_for_the_group_while_it_forms(settings, tmp_path):
    # librdkafka's default group timings: on Tansu the group takes 20+ s to form.
    config = write_config(replace(settings, kafka={}), tmp_path / "adl.toml")
    log = tmp_path / "stderr.log"
    with running_command([*ADL_STREAM, "run", "--config", config, "--metrics-port", "0", "--log-format", "json"],
                         log) as process:
        wait_for(lambda: "waiting_for_tasks" in log.read_text() or process.poll() is not None, 20,
                 "a waiting_for_tasks line")
    events = json_lines(log.read_text())
    names = [line["event"] for line in events]
    assert names.index("joining_group") < names.index("waiting_for_tasks")
    waiting = events[names.index("waiting_for_tasks")]
    assert waiting["waited_s"] >= 5 and "session.timeout.ms = 6000" in waiting["hint"]
