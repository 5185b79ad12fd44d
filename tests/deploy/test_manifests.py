"""docker-compose.yml and deploy/k8s reference only files, ports, commands and ``ADL_*`` settings
that exist (checked statically: the test machines have no Docker or Kubernetes)."""

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from adl_stream.cli import build_parser
from adl_stream.runtime.changelog import changelog_topic
from adl_stream.runtime.config import load_settings
from adl_stream.runtime.metrics import HealthServer, ProcessorMetrics
from adl_stream.simulation.market import default_symbols

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "deploy" / "config" / "adl-stream.toml"
K8S = ROOT / "deploy" / "k8s"
SETTINGS = load_settings(CONFIG, env={})
PROBES = {"/healthz", "/readyz"}


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]


def k8s(kind: str) -> dict:
    for path in K8S.glob("*.yaml"):
        document = yaml.safe_load(path.read_text())
        if document.get("kind") == kind:
            return document
    raise AssertionError(f"no {kind} in {K8S}")


def mounts(service: dict) -> dict[str, Path]:
    """Container path -> host path of a compose service's bind mounts."""
    out = {}
    for volume in service.get("volumes", []):
        host, container = volume.split(":")[:2]
        out[container] = ROOT / host
    return out


def check_command(args: list[str]) -> None:
    parsed = build_parser().parse_args(args)  # exits (fails the test) on an unknown flag
    if getattr(parsed, "config", None):
        assert parsed.config == "/etc/adl-stream/adl-stream.toml"


def test_the_deploy_settings_are_valid_and_match_the_simulator():
    assert SETTINGS.metrics_port == 9464 and SETTINGS.metrics_host == "0.0.0.0"
    assert dict(SETTINGS.symbols) == default_symbols()  # adl-stream simulate --config feeds it


def test_compose_files_ports_commands_and_settings_exist():
    services = compose()
    assert {"kafka", "topics", "adl-stream", "prometheus", "grafana"} <= set(services)
    for name, service in services.items():
        for container, host in mounts(service).items():
            assert host.exists(), f"{name}: {host} (mounted at {container}) does not exist"
        if service.get("build") == ".":
            assert (ROOT / "Dockerfile").exists()
            check_command(service["command"])
            env = {k: str(v) for k, v in service.get("environment", {}).items()}
            assert all(k.startswith("ADL_") for k in env), env
            load_settings(CONFIG, env=env)  # an unknown ADL_* setting raises ConfigError
            if "/etc/adl-stream/adl-stream.toml" in service["command"]:
                assert mounts(service)["/etc/adl-stream/adl-stream.toml"] == CONFIG
    processor = services["adl-stream"]
    assert processor["ports"] == [f"{SETTINGS.metrics_port}:{SETTINGS.metrics_port}"]
    assert f"http://127.0.0.1:{SETTINGS.metrics_port}/readyz" in " ".join(processor["healthcheck"]["test"])
    topics = (ROOT / "deploy" / "kafka" / "create-topics.sh").read_text()
    assert all(f" {topic} " in topics or f" {topic};" in topics for topic in (*SETTINGS.topics.inputs(), *SETTINGS.topics.outputs()))
    assert f"--topic {changelog_topic(SETTINGS.group_id)} " in topics and "cleanup.policy=compact" in topics
    # Prometheus scrapes the processor service; Grafana reads Prometheus and the dashboards
    prometheus = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    assert prometheus["scrape_configs"][0]["static_configs"][0]["targets"] == [f"adl-stream:{SETTINGS.metrics_port}"]
    assert mounts(services["prometheus"])["/etc/prometheus"] == ROOT / "deploy" / "prometheus"
    grafana = mounts(services["grafana"])
    datasource = yaml.safe_load((grafana["/etc/grafana/provisioning"] / "datasources" / "prometheus.yml").read_text())
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090" and "9090:9090" in services["prometheus"]["ports"]
    provider = yaml.safe_load((grafana["/etc/grafana/provisioning"] / "dashboards" / "adl-stream.yml").read_text())
    dashboards = grafana[provider["providers"][0]["options"]["path"]]
    uids = {json.loads(p.read_text())["uid"] for p in dashboards.glob("*.json")}
    assert uids == {"adl-stream"}
    for panel in json.loads((dashboards / "adl-stream.json").read_text())["panels"]:
        assert panel["datasource"]["uid"] == datasource["datasources"][0]["uid"]


def test_k8s_manifests_reference_what_exists():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert all((K8S / resource).exists() for resource in kustomization["resources"])
    configmap = k8s("ConfigMap")
    assert configmap["data"]["adl-stream.toml"] == CONFIG.read_text()
    statefulset = k8s("StatefulSet")
    pod = statefulset["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    check_command(container["args"])
    env = {e["name"]: e.get("value", "from-the-pod") for e in container["env"]}
    assert all(k.startswith("ADL_") for k in env)
    assert load_settings(CONFIG, env=env).instance_id == "from-the-pod"  # the pod name: stable per replica
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": SETTINGS.metrics_port}
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["path"] in PROBES and container[probe]["httpGet"]["port"] in ports
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    (mount,) = container["volumeMounts"]
    (volume,) = pod["volumes"]
    assert (mount["mountPath"], mount["name"], volume["configMap"]["name"]) == (
        "/etc/adl-stream", volume["name"], configmap["metadata"]["name"])
    labels = statefulset["spec"]["selector"]["matchLabels"]
    assert statefulset["spec"]["template"]["metadata"]["labels"] == labels
    service, monitor = k8s("Service"), k8s("PodMonitor")
    assert service["spec"]["selector"] == labels and service["spec"]["ports"][0]["targetPort"] in ports
    assert monitor["spec"]["selector"]["matchLabels"] == labels
    assert monitor["spec"]["podMetricsEndpoints"][0]["port"] in ports


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
def test_the_probed_paths_are_served(path):
    server = HealthServer(ProcessorMetrics(), "127.0.0.1", 0).start()
    try:
        server.set_ready(True)
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}{path}", timeout=5) as response:
            body = response.read().decode()
        assert response.status == 200
        assert body in ("ok", "ready") if path in PROBES else "adl_ready 1.0" in body
        server.set_ready(False)
        if path == "/readyz":
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(f"http://127.0.0.1:{server.port}{path}", timeout=5)
            assert refused.value.code == 503
    finally:
        server.stop()
