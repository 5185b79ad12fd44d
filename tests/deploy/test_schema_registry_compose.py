"""docker-compose.yml's schema registry, wired to the processor and the simulator (checked
statically, like the rest of compose: the test machines have no Docker)."""

from urllib.parse import urlsplit

from adl_stream.runtime.config import load_settings
from tests.deploy.test_manifests import CONFIG, compose


def test_the_registry_service_is_wired_to_the_processor_and_the_simulator():
    services = compose()
    registry = services["schema-registry"]
    env = registry["environment"]
    listener = urlsplit(env["SCHEMA_REGISTRY_LISTENERS"])
    assert env["SCHEMA_REGISTRY_KAFKASTORE_BOOTSTRAP_SERVERS"].endswith(
        services["adl-stream"]["environment"]["ADL_BOOTSTRAP_SERVERS"])
    assert registry["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert f"{listener.port}:{listener.port}" in registry["ports"]
    assert f"http://localhost:{listener.port}/" in " ".join(registry["healthcheck"]["test"])
    assert env["SCHEMA_REGISTRY_SCHEMA_COMPATIBILITY_LEVEL"] == "full_transitive"
    for name in ("adl-stream", "simulator"):
        settings = load_settings(CONFIG, env={k: str(v) for k, v in services[name]["environment"].items()})
        url = urlsplit(settings.schema_registry_url)
        assert (url.scheme, url.hostname, url.port) == ("http", "schema-registry", listener.port), name
        assert settings.auto_register_schemas is True, name
    processor = services["adl-stream"]["depends_on"]
    assert processor["schema-registry"]["condition"] == "service_healthy"
    assert processor["topics"]["condition"] == "service_completed_successfully"
