"""Every example of the README (and of docs/) works as written: the TOML loads, every command
parses, and the commands of "What runs today" run against a broker with the README's settings.

"Run it locally" has its own test, which runs its commands end to end
(tests/integration/test_local_run.py). Not run here: `adl-stream simulate --config adl.toml`
(10,000 traders, a minute on two cores; the simulator's grids and options are tested in
tests/simulation), `make demo` / `make test` / `make bench` (checked with `make -n`), and the
docker-compose and Kubernetes commands (checked statically in tests/deploy).
"""

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from adl_stream.cli import build_parser
from adl_stream.embedded import EmbeddedBroker
from adl_stream.runtime.config import load_settings
from adl_stream.runtime.kafka_properties import CONSUMER, client_properties
from tests.conftest import running_command, wait_for

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^ *```{language}\n(.*?)^ *```", text, re.S | re.M)


def commands(text: str) -> list[str]:
    """The commands a document shows: the lines of its sh blocks and its inline `adl-stream ...`
    and `make ...` spans."""
    lines = [line.strip() for block in blocks(text, "sh") for line in block.splitlines() if line.strip()]
    return lines + re.findall(r"`((?:adl-stream|make) [^`]*)`", text)


def section(text: str, title: str) -> str:
    return text.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def words(command: str) -> list[str]:
    """The command's words, without a comment or an output redirection."""
    args = shlex.split(command, comments=True)
    return args[:args.index(">")] if ">" in args else args


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: p.name)
def test_every_toml_example_loads_and_librdkafka_takes_its_kafka_properties(document, tmp_path):
    examples = blocks(document.read_text(), "toml")
    assert examples
    for i, example in enumerate(examples):
        path = tmp_path / f"example-{i}.toml"
        path.write_text(example)
        # As the README says, the SASL password comes from the environment.
        settings = load_settings(path, env={"ADL_KAFKA_SASL_PASSWORD": "from-the-environment"})
        assert settings.symbols
        client_properties(settings, CONSUMER)  # raises ConfigError for a property librdkafka refuses


def test_the_settings_files_of_deploy_load():
    for path in sorted((ROOT / "deploy" / "config").glob("*.toml")):
        client_properties(load_settings(path, env={}), CONSUMER)


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: p.name)
def test_every_command_shown_parses(document, capsys):
    shown = commands(document.read_text())
    (action,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    subcommands = set(action.choices)
    for command in shown:
        args = words(command)
        assert args[0] in ("adl-stream", "make"), f"{document.name} shows {command!r}: teach this test to check it"
        if args[0] == "make":
            result = subprocess.run(["make", "-n", *args[1:]], cwd=ROOT, capture_output=True, text=True, timeout=60)
            assert result.returncode == 0, f"{command}: {result.stderr}"
            continue
        if len(args) == 2 and not args[1].startswith("-"):  # `adl-stream replay` names a command
            assert args[1] in subcommands, command
            continue
        try:
            build_parser().parse_args(args[1:])
        except SystemExit as exit_:  # --help and --version exit 0; an unknown flag exits 2
            assert exit_.code == 0, f"{document.name}: {command!r} does not parse: {capsys.readouterr().err}"


@pytest.fixture(scope="module")
def own_broker(tmp_path_factory):
    """A broker of this module's own: the README's topic names are the defaults."""
    with EmbeddedBroker(tmp_path_factory.mktemp("tansu") / "tansu.log") as broker:
        yield broker


def test_what_runs_today_runs_as_written_with_the_readme_settings(own_broker, tmp_path):
    today = section((ROOT / "README.md").read_text(), "What runs today")
    (tmp_path / "adl.toml").write_text(blocks(today, "toml")[0])
    shown = [c for c in dict.fromkeys(commands(today)) if "--config adl.toml" in c and " simulate " not in c]
    assert {words(c)[1] for c in shown} == {"run", "topics", "replay", "inspect"}
    base = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "ADL_CONFIG": "", "ADL_BOOTSTRAP_SERVERS": own_broker.bootstrap}

    # As written the SASL example lacks its password (it comes from the environment): exit code 2.
    refused = subprocess.run("adl-stream run --config adl.toml", shell=True, cwd=tmp_path, env=base,
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2
    assert "invalid setting 'kafka.\"sasl." in refused.stderr and "(from config file adl.toml, [kafka])" in refused.stderr
    assert "sasl.username and sasl.password must be set" in refused.stderr

    # With the password, on this broker without SASL, the consumer-group settings of Tansu, any metrics port:
    env = {**base, "ADL_KAFKA_SASL_PASSWORD": "secret", "ADL_KAFKA_SECURITY_PROTOCOL": "PLAINTEXT",
           "ADL_KAFKA_SESSION_TIMEOUT_MS": "6000", "ADL_KAFKA_HEARTBEAT_INTERVAL_MS": "500", "ADL_METRICS_PORT": "0"}
    order = {"topics": 0, "run": 1, "replay": 2, "inspect": 3}
    for command in sorted(shown, key=lambda c: order[words(c)[1]]):
        if words(command)[1] == "run":  # until stopped: ready, then SIGTERM
            log = tmp_path / "run.log"
            with running_command(words(command), log, cwd=tmp_path, env=env) as process:
                wait_for(lambda: "tasks_assigned" in log.read_text() or process.poll() is not None, 30,
                         "the processor's tasks")
            continue
        result = subprocess.run(command, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, f"{command}\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
        if "--json" in command:
            assert set(json.loads(result.stdout)["settle_assets"]) == {"USDT"}
    assert (tmp_path / "decisions.jsonl").exists()
