"""README "Run it locally, without Docker": its commands exactly as written, in order, from a
directory where ``deploy/`` is the repository's (so ``decisions.jsonl`` lands in the test's own
directory), with the virtual environment's ``adl-stream`` first on the PATH (as activating it
does). The commands whose comment says "until Ctrl-C" are started in the background (they have
no shell syntax) and stopped with Ctrl-C (SIGINT) at the end; the others run in a shell."""

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest

from adl_stream.engine import ShortfallDecision
from adl_stream.readable import plain
from adl_stream.runtime.config import load_settings
from adl_stream.runtime.kafka import read_to_end
from adl_stream.wire import Codec
from tests.conftest import wait_for
from tests.integration.test_cli import http

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
SECTION = "## Run it locally, without Docker"


def readme_commands() -> list[str]:
    section = (ROOT / "README.md").read_text().split(SECTION, 1)[1].split("\n## ", 1)[0]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip()]


def free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_the_readme_commands_run_as_written(tmp_path):
    commands = readme_commands()
    assert [shlex.split(c)[1] for c in commands] == ["broker", "topics", "run", "simulate", "inspect", "replay"]
    settings = load_settings(ROOT / "deploy" / "config" / "local.toml", env={})
    port = int(settings.bootstrap_servers.rsplit(":", 1)[1])
    assert free(port) and free(settings.metrics_port), "the README's ports (9092, 9464) must be free for this test"
    (tmp_path / "deploy").symlink_to(ROOT / "deploy")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", "COLUMNS": "100"}
    env.pop("ADL_CONFIG", None)
    background: dict[str, subprocess.Popen] = {}
    logs: dict[str, object] = {}
    outputs: dict[str, subprocess.CompletedProcess] = {}
    try:
        for command in commands:
            name = shlex.split(command)[1]
            if "until Ctrl-C" in command:
                log = logs[name] = open(tmp_path / f"{name}.log", "w+")
                process = background[name] = subprocess.Popen(  # no shell: Ctrl-C reaches adl-stream itself
                    shlex.split(command, comments=True), cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
                    start_new_session=True)
                ready = {"broker": lambda: f"at {settings.bootstrap_servers}" in _read(log),
                         "run": lambda: http(settings.metrics_port, "/readyz")[0] == 200}[name]
                wait_for(lambda: ready() or process.poll() is not None, 30, f"adl-stream {name}")
                assert process.poll() is None, _read(log)
                continue
            outputs[name] = result = subprocess.run(command, shell=True, cwd=tmp_path, env=env, capture_output=True,
                                                    text=True, timeout=120)
            assert result.returncode == 0, f"{command}\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
            if name == "simulate":  # the user waits for the processor to catch up: every record committed
                published = int(re.search(r"published (\d+) records", result.stderr).group(1))
                committed = lambda: _metric(settings.metrics_port, "adl_committed_input_offset{", 'settle_asset="USDT"')  # noqa: E731
                wait_for(lambda: committed() >= published or background["run"].poll() is not None, 60,
                         f"{published} records committed")
                assert background["run"].poll() is None, _read(logs["run"])[-3000:]
        funds = {fund: _metric(settings.metrics_port, "adl_insurance_fund_balance{", f'fund_id="{fund}"')
                 for fund in {spec.fund_id for spec in settings.symbols.values()}}
        codec = Codec()
        decisions = [codec.decode(m.value(), ShortfallDecision) for m in read_to_end(settings, settings.topics.adl_decisions)]
        for process in reversed(background.values()):
            os.killpg(process.pid, signal.SIGINT)  # Ctrl-C in its terminal
            assert process.wait(30) == 0
    finally:
        for process in background.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)

    broker_says = _read(logs["broker"])
    assert f'bootstrap_servers = "{settings.bootstrap_servers}"' in broker_says
    for name, value in settings.kafka.items():  # the group settings it prints are local.toml's
        assert f'"{name}" = "{value}"' in broker_says

    created = {line.split()[1] for line in outputs["topics"].stdout.splitlines() if line.strip().startswith("created")}
    assert created == {*vars(settings.topics).values(), f"{settings.group_id}-changelog"}

    predicted = int(re.search(r"(\d+) shortfalls", outputs["simulate"].stderr).group(1))
    lines = [json.loads(line) for line in _read(logs["run"]).splitlines()]  # JSON only, librdkafka's too
    assert len([line for line in lines if line["event"] == "shortfall_decided"]) == len(decisions) == predicted > 0
    assert not [line for line in lines if line["event"] in ("dead_letter", "librdkafka")]

    shown = outputs["inspect"].stdout
    assert all(len(line) <= 100 for line in shown.splitlines()) and "…" not in shown
    for title in ("State committed by group adl-stream", "Insurance funds", "BTCUSDT ADL queue against a bankrupt LONG",
                  "BTCUSDT ADL queue against a bankrupt SHORT"):
        assert title in shown
    assert re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", shown)  # stream time, ISO 8601
    for fund, balance in funds.items():  # the committed balances, exact and without trailing zeros
        row = re.search(rf"│ {re.escape(fund)} +│ USDT +│ +([\d.]+) │", shown)
        assert row and float(row.group(1)) == balance and not re.search(r"\.\d*0$", row.group(1))

    replayed = [json.loads(line) for line in (tmp_path / "decisions.jsonl").read_text().splitlines()]
    again = [{k: v for k, v in line.items() if k not in ("topic", "record")} for line in replayed
             if line["record"] == "ShortfallDecision"]
    key = lambda d: d["event_id"]  # noqa: E731
    assert sorted(again, key=key) == sorted((plain(asdict(d)) for d in decisions), key=key)


def _read(log) -> str:
    log.flush()
    log.seek(0)
    return log.read()


def _metric(port: int, prefix: str, label: str) -> float:
    """Sum of the processor's samples whose line starts with ``prefix`` and holds ``label``."""
    status, body = http(port, "/metrics")
    lines = [line for line in body.splitlines() if line.startswith(prefix) and label in line] if status == 200 else []
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines)
