"""The wire settings (writer_schemas, schema_registry_url, [schema_registry], auto_register_schemas):
loaded, checked at start (exit code 2 naming the file and field, or the property), secrets masked."""

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from adl_stream.engine import Fill
from adl_stream.runtime.config import ConfigError, load_settings, redacted_registry
from adl_stream.runtime.kafka import StartupError
from adl_stream.runtime.serdes import INPUTS, codec_for
from adl_stream.wire.registry import RegistryCodec
from tests import scenarios as sc
from tests.wire.evolution import EvolvedCodec, fill_v2, incompatible_fill, write_avsc

ROOT = Path(__file__).resolve().parents[2]
LOCAL = ROOT / "deploy" / "config" / "local.toml"


def config(tmp_path, top: str, tables: str = "") -> Path:
    """local.toml with top-level settings before it and tables after it."""
    path = tmp_path / "adl.toml"
    path.write_text(top + "\n" + LOCAL.read_text() + "\n" + tables + "\n")
    return path


def test_writer_schemas_from_the_file_or_the_environment_and_the_evolved_fill_decodes(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    write_avsc(a, "fill-v2.avsc", fill_v2())
    write_avsc(b, "fill-v2-copy.avsc", fill_v2())
    settings = load_settings(config(tmp_path, f'writer_schemas = ["{a}"]'), env={})
    assert settings.writer_schemas == (str(a),)
    settings = load_settings(LOCAL, env={"ADL_WRITER_SCHEMAS": f"{a}{os.pathsep}{b}"})
    assert settings.writer_schemas == (str(a), str(b))
    assert codec_for(settings).decode(EvolvedCodec().encode(sc.SETUP[5]), Fill) == sc.SETUP[5]


@pytest.mark.parametrize("value, words", [("/nonexistent/dir", "no such directory"), ("{empty}", "no Avro schema")])
def test_a_writer_schemas_directory_missing_or_empty_is_refused(tmp_path, value, words):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=words) as refused:
        load_settings(LOCAL, env={"ADL_WRITER_SCHEMAS": value.format(empty=tmp_path / "empty")})
    assert refused.value.setting == "writer_schemas"


def test_an_incompatible_writer_schema_refuses_to_start_naming_file_and_field(tmp_path):
    path = write_avsc(tmp_path / "exchange", "Fill.avsc", incompatible_fill())
    settings = load_settings(LOCAL, env={"ADL_WRITER_SCHEMAS": str(tmp_path / "exchange")})
    with pytest.raises(ConfigError) as refused:
        codec_for(settings)
    assert refused.value.setting == "writer_schemas"
    assert str(path) in str(refused.value) and "Fill.quantity" in str(refused.value)


def test_adl_stream_run_with_an_incompatible_writer_schema_exits_2_naming_file_and_field(tmp_path):
    path = write_avsc(tmp_path / "exchange", "Fill.avsc", incompatible_fill())
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ADL_WRITER_SCHEMAS": str(tmp_path / "exchange"),
           "ADL_BOOTSTRAP_SERVERS": "127.0.0.1:1"}  # refused before anything connects
    done = subprocess.run([sys.executable, "-c", "from adl_stream.cli import main; raise SystemExit(main())",
                           "run", "--config", str(LOCAL)], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "writer_schemas" in done.stderr and str(path) in done.stderr and "Fill.quantity" in done.stderr
    assert "Traceback" not in done.stderr


def test_registry_settings_pass_through_to_the_client_and_secrets_never_show(tmp_path):
    url = f"mock://{uuid.uuid4().hex}"
    path = config(tmp_path, f'schema_registry_url = "{url}"\nauto_register_schemas = true',
                  '[schema_registry]\n"basic.auth.user.info" = "adl:s3cret-in-file"\n"max.retries" = 2')
    settings = load_settings(path, env={"ADL_SCHEMA_REGISTRY_TIMEOUT": "7", "ADL_SCHEMA_REGISTRY_SSL_KEY_PASSWORD": "pw-env"})
    assert settings.schema_registry == {"basic.auth.user.info": "adl:s3cret-in-file", "max.retries": 2, "timeout": 7,
                                        "ssl.key.password": "pw-env"}
    assert settings.schema_registry_url == url and settings.auto_register_schemas is True
    assert "s3cret" not in repr(settings) and url not in repr(settings)
    masked = redacted_registry("https://adl:pw@registry:8081", settings.schema_registry)
    assert masked["url"] == "https://***@registry:8081" and "pw" not in str(masked) and "s3cret" not in str(masked)
    assert masked["max.retries"] == 2
    del settings.schema_registry["ssl.key.password"]  # the mock client refuses a key without a certificate
    with capture_logs() as logs:
        codec = codec_for(settings)
    assert isinstance(codec, RegistryCodec) and "s3cret" not in str(logs) and url in str(logs)
    assert isinstance(codec_for(settings, INPUTS), RegistryCodec)


def test_a_registry_property_the_client_refuses_is_named_with_where_it_was_set(tmp_path):
    settings = load_settings(LOCAL, env={"ADL_SCHEMA_REGISTRY_URL": f"mock://{uuid.uuid4().hex}",
                                         "ADL_SCHEMA_REGISTRY_BASIC_AUTH_USR_INFO": "a:b"})
    with pytest.raises(ConfigError) as refused:
        codec_for(settings)
    assert refused.value.setting == "schema_registry.basic.auth.usr.info"
    assert "ADL_SCHEMA_REGISTRY_BASIC_AUTH_USR_INFO" in str(refused.value)
    with pytest.raises(ConfigError, match="without schema_registry_url"):
        load_settings(LOCAL, env={"ADL_SCHEMA_REGISTRY_TIMEOUT": "5"})
    with pytest.raises(ConfigError, match="expected true or false"):
        load_settings(LOCAL, env={"ADL_AUTO_REGISTER_SCHEMAS": "yes"})


def test_unregistered_output_schemas_without_auto_registration_stop_the_start(tmp_path):
    settings = load_settings(LOCAL, env={"ADL_SCHEMA_REGISTRY_URL": f"mock://{uuid.uuid4().hex}"})
    with pytest.raises(StartupError, match="not registered under subject 'adl-orders-value'"):
        codec_for(settings)
