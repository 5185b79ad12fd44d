from decimal import Decimal as D

import pytest

from adl_stream.runtime.config import ConfigError, load_settings, redacted
from adl_stream.runtime.kafka import consumer_config

BASE = """
bootstrap_servers = "file:9092"
group_id = "from-file"
metrics_port = 9000
[symbols.BTCUSDT]
settle_asset = "USDT"
lot_size = "0.001"
[symbols.ETHUSDT]
settle_asset = "USDT"
fund_id = "USDT-ALT"
[topics]
fills = "prod.fills"
[kafka]
"sasl.password" = "hunter2"
"""


@pytest.fixture
def config(tmp_path):
    def write(text=BASE):
        path = tmp_path / "adl.toml"
        path.write_text(text)
        return path
    return write


def test_file_then_environment_then_flags(config):
    env = {"ADL_GROUP_ID": "from-env", "ADL_METRICS_PORT": "9100", "ADL_TOPIC_MARK_PRICES": "prod.marks",
           "ADL_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "ADL_KAFKA_SASL_MECHANISM": "PLAIN",
           "ADL_KAFKA_SASL_USERNAME": "adl", "HOME": "/root"}
    s = load_settings(config(), env=env, flags={"metrics_port": 9200, "log_format": None})
    assert (s.bootstrap_servers, s.group_id, s.metrics_port) == ("file:9092", "from-env", 9200)
    assert (s.topics.fills, s.topics.mark_prices, s.topics.balances) == ("prod.fills", "prod.marks", "balances")
    assert s.symbols["BTCUSDT"].fund_id == "USDT" and s.symbols["BTCUSDT"].lot_size == D("0.001")
    assert s.symbols["ETHUSDT"].fund_id == "USDT-ALT"
    assert s.kafka == {"sasl.password": "hunter2", "security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN",
                       "sasl.username": "adl"}
    assert consumer_config(s)["security.protocol"] == "SASL_SSL"  # passes through to librdkafka


def test_config_path_from_adl_config(config):
    assert load_settings(None, env={"ADL_CONFIG": str(config())}).group_id == "from-file"


def test_secrets_stay_out_of_repr_and_logs(config):
    s = load_settings(config(), env={})
    assert "hunter2" not in repr(s)
    assert redacted(s.kafka) == {"sasl.password": "***"}


@pytest.mark.parametrize(
    "env, setting, words",
    [
        ({"ADL_METRICS_PORT": "nine"}, "metrics_port", "whole number"),
        ({"ADL_METRICS_PORT": "70000"}, "metrics_port", "0 to 65535"),
        ({"ADL_TRIGGER_POLICY": "yolo"}, "trigger_policy", "fund-exhausted, fund-floor"),
        ({"ADL_FUND_FLOOR": "-1"}, "fund_floor", ">= 0"),
        ({"ADL_FUND_FLOOR": "lots"}, "fund_floor", "decimal"),
        ({"ADL_BATCH_SIZE": "0"}, "batch_size", "> 0"),
        ({"ADL_BOOTSTRAP_SERVER": "x"}, "bootstrap_server", "unknown setting"),
        ({"ADL_TOPIC_FILS": "x"}, "topics.fils", "unknown topic"),
        ({"ADL_STATE_PARTITIONS": "-2"}, "state_partitions", ">= 0"),
        ({"ADL_BROKER_OUTAGE_S": "0"}, "broker_outage_s", "> 0"),
        ({"ADL_BROKER_OUTAGE_S": "a minute"}, "broker_outage_s", "whole number"),
        ({"ADL_STATE_REPLICATION_FACTOR": "0"}, "state_replication_factor", "-1 (the broker's default) or >= 1"),
    ],
)
def test_invalid_settings_name_the_setting_and_the_source(config, env, setting, words):
    with pytest.raises(ConfigError) as info:
        load_settings(config(), env=env)
    assert info.value.setting == setting
    assert words in str(info.value)
    assert "environment variable ADL_" in str(info.value)


@pytest.mark.parametrize(
    "text, setting, words",
    [
        ("fund_floor = 0.1\n" + BASE, "fund_floor", 'as a string ("0.1")'),
        (BASE.replace('settle_asset = "USDT"\nlot_size', 'lot_size'), "symbols.BTCUSDT.settle_asset", "missing"),
        (BASE.replace('lot_size = "0.001"', 'lot_size = "-1"'), "symbols.BTCUSDT.lot_size", "> 0"),
        (BASE.replace('[symbols.BTCUSDT]', 'grup_id = "x"\n[symbols.BTCUSDT]'), "grup_id", "unknown setting"),
        ("bootstrap_servers = 'x'\n", "symbols", "no symbol declared"),
        ("not toml ===", "config", "not valid TOML"),
        (BASE + '[symbols.ETHUSDC]\nsettle_asset = "USDC"\nfund_id = "USDT-ALT"\n', "symbols.ETHUSDC.fund_id",
         "a fund serves symbols of one settle asset"),
    ],
)
def test_invalid_files_name_the_setting(config, text, setting, words):
    with pytest.raises(ConfigError) as info:
        load_settings(config(text), env={})
    assert info.value.setting == setting
    assert words in str(info.value)


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_settings(tmp_path / "nope.toml", env={})


def test_without_a_settings_file_the_error_says_how_to_give_one():
    with pytest.raises(ConfigError) as info:
        load_settings(None, env={"ADL_BOOTSTRAP_SERVERS": "x:9092"})
    assert info.value.setting == "config"
    assert "--config FILE or ADL_CONFIG=FILE" in str(info.value) and "deploy/config/local.toml" in str(info.value)


@pytest.mark.parametrize("where", ["file", "environment"])
def test_fund_floor_trigger_without_a_floor_refuses_to_start(config, where):
    text, env = BASE, {}
    if where == "file":
        text = 'trigger_policy = "fund-floor"\n' + BASE
    else:
        env = {"ADL_TRIGGER_POLICY": "fund-floor"}
    with pytest.raises(ConfigError) as info:
        load_settings(config(text), env=env)
    assert info.value.setting == "fund_floor"
    assert 'trigger_policy = "fund-floor" needs fund_floor' in str(info.value)
    assert ("config file" if where == "file" else "environment variable ADL_TRIGGER_POLICY") in str(info.value)
    floor = load_settings(config(text), env={**env, "ADL_FUND_FLOOR": "250000"}).trigger()
    assert floor.floor == D(250000)


def test_kafka_properties_remember_where_they_were_set(config):
    s = load_settings(config(), env={"ADL_KAFKA_CLIENT_ID": "adl-1"})
    assert s.kafka_sources == {"sasl.password": f"config file {config()}, [kafka]",
                               "client.id": "environment variable ADL_KAFKA_CLIENT_ID"}
    with pytest.raises(ConfigError, match="unknown setting"):  # not a setting of its own
        load_settings(config("kafka_sources = 'x'\n" + BASE), env={})


def test_a_kafka_table_inside_kafka_is_refused_with_the_reason(config):
    with pytest.raises(ConfigError) as info:
        load_settings(config(BASE + '[kafka.consumer]\n"session.timeout.ms" = "6000"\n'), env={})
    assert info.value.setting == "kafka.consumer" and "goes to the clients (consumer, producer) that know it" in str(info.value)


def test_policy_settings_build_their_policies_and_refuse_what_is_incomplete(config):
    from adl_stream.engine import Drawdown
    from adl_stream.engine.allocation import MinMaxLeverage, PnlProRata

    with pytest.raises(ConfigError) as info:
        load_settings(config('trigger_policy = "drawdown"\n' + BASE), env={})
    assert info.value.setting == "drawdown_pct" and "needs drawdown_pct" in str(info.value)
    for bad in ('"0"', '"100"', '"-5"'):
        with pytest.raises(ConfigError) as info:
            load_settings(config(f'trigger_policy = "drawdown"\ndrawdown_pct = {bad}\n' + BASE), env={})
        assert info.value.setting == "drawdown_pct" and "above 0 and below 100" in str(info.value)
    settings = load_settings(config('trigger_policy = "drawdown"\ndrawdown_pct = "30"\n' + BASE), env={})
    assert settings.trigger() == Drawdown(D(30), 28_800_000)
    settings = load_settings(config('ranking_policy = "pnl-pro-rata"\nhaircut_cap = "0.5"\n' + BASE), env={})
    assert settings.ranking() == PnlProRata(D("0.5"))
    assert load_settings(config(BASE), env={"ADL_RANKING_POLICY": "min-max-leverage"}).ranking() == MinMaxLeverage()
    with pytest.raises(ConfigError) as info:
        load_settings(config('ranking_policy = "queue"\n' + BASE), env={})
    assert info.value.setting == "ranking_policy" and "pro-rata" in str(info.value)
    with pytest.raises(ConfigError) as info:
        load_settings(config('haircut_cap = "0"\n' + BASE), env={})
    assert info.value.setting == "haircut_cap"


def test_event_time_bounds_default_and_the_lateness_stays_within_the_dedup_window(config):
    s = load_settings(config(), env={})
    assert (s.max_event_skew_ms, s.max_event_lateness_ms, s.dedup_window_ms) == (60_000, 3_600_000, 3_600_000)
    s = load_settings(config(), env={"ADL_MAX_EVENT_SKEW_MS": "5000", "ADL_MAX_EVENT_LATENESS_MS": "600000"})
    assert (s.max_event_skew_ms, s.max_event_lateness_ms) == (5_000, 600_000)
    with pytest.raises(ConfigError, match="max_event_skew_ms.*ADL_MAX_EVENT_SKEW_MS.*> 0"):
        load_settings(config(), env={"ADL_MAX_EVENT_SKEW_MS": "0"})
    with pytest.raises(ConfigError, match="'max_event_lateness_ms'.*<= dedup_window_ms"):
        load_settings(config(), env={"ADL_MAX_EVENT_LATENESS_MS": "86400001"})
    with pytest.raises(ConfigError, match="'dedup_window_ms'.*flag --dedup-window-ms.*<= dedup_window_ms"):
        load_settings(config(), env={}, flags={"dedup_window_ms": 1_000})


def test_the_group_member_is_static_with_an_id_from_group_and_instance(config):
    s = load_settings(config(), env={"ADL_INSTANCE_ID": "adl-stream-2"})
    assert s.membership == "static"
    assert consumer_config(s)["group.instance.id"] == "from-file-adl-stream-2" == s.group_instance_id
    assert s.group_instance_id == s.transactional_id  # one stable name per instance
    from adl_stream.runtime.kafka import input_consumer_config, producer_config
    assert "group.instance.id" not in input_consumer_config(s)  # assigned partitions: no membership
    assert "group.instance.id" not in producer_config(s)
    dynamic = load_settings(config(), env={"ADL_MEMBERSHIP": "dynamic"})
    assert "group.instance.id" not in consumer_config(dynamic)
    with pytest.raises(ConfigError, match="'membership'.*ADL_MEMBERSHIP.*static, dynamic"):
        load_settings(config(), env={"ADL_MEMBERSHIP": "sticky"})


def test_broker_outage_s_defaults_to_a_minute_and_is_read_from_file_and_environment(config):
    assert load_settings(config(), env={}).broker_outage_s == 60
    assert load_settings(config("broker_outage_s = 120\n" + BASE), env={}).broker_outage_s == 120
    assert load_settings(config(), env={"ADL_BROKER_OUTAGE_S": "5"}).broker_outage_s == 5
