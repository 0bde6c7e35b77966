import pytest

from guardstream.errors import ConfigError
from guardstream.settings import Secret, Settings, masked_url, settings_vars


def test_defaults_need_no_environment():
    settings = Settings.from_env({})
    assert settings.profile == "production"
    assert settings.kafka_bootstrap_servers == "127.0.0.1:9092"
    assert settings.schema_registry_url is None
    assert not settings.embedded


def test_conventional_names_are_read():
    settings = Settings.from_env({
        "KAFKA_BOOTSTRAP_SERVERS": "k1:9092, k2:9093",
        "DATABASE_URL": "postgresql://u:p@db.example:5433/gs",
        "MQTT_URL": "mqtts://user:pw@mqtt.example:8883",
        "SCHEMA_REGISTRY_URL": "https://registry.example",
        "GUARDSTREAM_PROFILE": "Embedded",
    })
    assert settings.kafka_bootstrap_servers == "k1:9092,k2:9093"
    assert settings.mqtt_url.startswith("mqtts://")
    assert settings.embedded


@pytest.mark.parametrize("variable, value, words", [
    ("KAFKA_BOOTSTRAP_SERVERS", "localhost", "not host:port"),
    ("KAFKA_BOOTSTRAP_SERVERS", "host:99999", "not host:port"),
    ("DATABASE_URL", "mysql://db/x", "scheme must be one of"),
    ("DATABASE_URL", "postgresql://db:notaport/x", "bad port"),
    ("MQTT_URL", "http://broker", "scheme must be one of"),
    ("MQTT_URL", "mqtt://", "no host"),
    ("SCHEMA_REGISTRY_URL", "registry:8081", "scheme must be one of"),
    ("GUARDSTREAM_PROFILE", "staging", "must be one of embedded, production"),
    ("GUARDSTREAM_METRICS_PORT", "70000", "between 0 and 65535"),
    ("GUARDSTREAM_METRICS_PORT", "nine", "invalid literal"),
    ("GUARDSTREAM_REPLICATION_FACTOR", "0", "between 1 and 16"),
    ("GUARDSTREAM_PARTITIONS_MAX", "0", "between 1 and 10000"),
    ("KAFKA_SECURITY_PROTOCOL", "tls", "must be one of"),
])
def test_a_bad_value_names_its_variable(variable, value, words):
    with pytest.raises(ConfigError) as info:
        Settings.from_env({variable: value})
    assert info.value.setting == variable
    assert str(info.value).startswith(f"{variable}: ")
    assert words in str(info.value)
    assert "\n" not in str(info.value)


def test_unknown_guardstream_variable_is_refused_with_a_suggestion():
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"GUARDSTREAM_METRIC_PORT": "9000"})
    assert info.value.setting == "GUARDSTREAM_METRIC_PORT"
    assert "did you mean GUARDSTREAM_METRICS_PORT" in str(info.value)


def test_other_variables_are_ignored():
    assert Settings.from_env({"PATH": "/bin", "KAFKA_HEAP_OPTS": "-Xmx1g"}).profile == "production"


@pytest.mark.parametrize("env, variable", [
    ({"KAFKA_SECURITY_PROTOCOL": "sasl_ssl"}, "KAFKA_SASL_MECHANISM"),
    ({"KAFKA_SECURITY_PROTOCOL": "sasl_ssl", "KAFKA_SASL_MECHANISM": "plain"}, "KAFKA_SASL_USERNAME"),
    ({"MQTT_CLIENT_CERT": "/c.pem"}, "MQTT_CLIENT_KEY"),
])
def test_settings_that_only_work_together(env, variable):
    with pytest.raises(ConfigError) as info:
        Settings.from_env(env)
    assert info.value.setting == variable


def test_secrets_never_show_in_repr_but_reach_the_child_environment():
    settings = Settings.from_env({"KAFKA_SECURITY_PROTOCOL": "sasl_ssl", "KAFKA_SASL_MECHANISM": "scram-sha-512",
                                  "KAFKA_SASL_USERNAME": "gs", "KAFKA_SASL_PASSWORD": "hunter2"})
    assert "hunter2" not in repr(settings)
    assert isinstance(settings.kafka_sasl_password, Secret)
    env = settings.as_env()
    assert env["KAFKA_SASL_PASSWORD"] == "hunter2"
    assert Settings.from_env(env) == settings


def test_every_variable_is_documented_and_unique():
    names = [v.env for v in settings_vars()]
    assert len(names) == len(set(names))
    assert all(v.doc for v in settings_vars())


def test_kafka_security_reaches_every_client_config():
    from guardstream.kafka import admin_config, consumer_config, producer_config
    settings = Settings.from_env({"KAFKA_SECURITY_PROTOCOL": "sasl_ssl", "KAFKA_SASL_MECHANISM": "plain",
                                  "KAFKA_SASL_USERNAME": "gs", "KAFKA_SASL_PASSWORD": "pw",
                                  "KAFKA_SSL_CA_LOCATION": "/ca.pem"})
    for config in (admin_config(settings), producer_config(settings, "p"), consumer_config(settings, "c", "g")):
        assert config["security.protocol"] == "sasl_ssl"
        assert config["sasl.mechanism"] == "PLAIN"
        assert config["sasl.password"] == "pw"
        assert config["ssl.ca.location"] == "/ca.pem"


def test_embedded_profile_shortens_group_session_timeout():
    from guardstream.kafka import consumer_config
    embedded = consumer_config(Settings.from_env({"GUARDSTREAM_PROFILE": "embedded"}), "c", "g")
    production = consumer_config(Settings.from_env({}), "c", "g")
    assert embedded["session.timeout.ms"] < production["session.timeout.ms"]
    assert embedded["enable.auto.commit"] is False


def test_readme_documents_every_variable():
    from pathlib import Path
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert [v.env for v in settings_vars() if f"| `{v.env}` |" not in readme] == []


@pytest.mark.parametrize("url, shown", [
    ("mqtt://bridge:s3cret@mqtt.example:8883", "mqtt://bridge:***@mqtt.example:8883"),
    ("mqtts://:only-a-password@h:8883", "mqtts://:***@h:8883"),
    ("postgresql://u:p%40ss@db/g?sslmode=require", "postgresql://u:***@db/g?sslmode=require"),
    ("postgresql:///g?host=/run/pg&password=pw&user=u", "postgresql:///g?host=/run/pg&password=***&user=u"),
    ("postgresql://postgres@127.0.0.1:5432/guardstream", "postgresql://postgres@127.0.0.1:5432/guardstream"),
    ("mqtt://127.0.0.1:1883", "mqtt://127.0.0.1:1883"),
    ("https://reg:key@registry.example/path#frag", "https://reg:***@registry.example/path#frag"),
])
def test_masked_url_shows_everything_but_the_password(url, shown):
    assert masked_url(url) == shown


@pytest.mark.parametrize(("env", "policy"), [
    ({}, "dead_letter"),
    ({"GUARDSTREAM_PROFILE": "embedded"}, "default_tenant"),
    ({"GUARDSTREAM_PROFILE": "embedded", "GUARDSTREAM_UNKNOWN_DEVICES": "dead_letter"}, "dead_letter"),
    ({"GUARDSTREAM_UNKNOWN_DEVICES": "Default_Tenant"}, "default_tenant"),
])
def test_unknown_devices_are_dead_letters_in_production_and_keep_the_old_tenant_rule_embedded(env, policy):
    assert Settings.from_env(env).unknown_device_policy == policy


def test_a_bad_unknown_devices_rule_names_its_variable():
    with pytest.raises(ConfigError, match="GUARDSTREAM_UNKNOWN_DEVICES: must be one of dead_letter, default_tenant"):
        Settings.from_env({"GUARDSTREAM_UNKNOWN_DEVICES": "accept"})
