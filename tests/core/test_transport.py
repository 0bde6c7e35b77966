"""Production runs encrypted: which links are refused, the escape, and the refusal at a component's start."""

import logging
import os
import subprocess
import sys

import pytest

from guardstream.errors import ConfigError
from guardstream.settings import Settings
from guardstream.transport import GATEWAY, KAFKA, MQTT, plaintext_links, require_encryption

ENCRYPTED = {"KAFKA_SECURITY_PROTOCOL": "ssl", "MQTT_URL": "mqtts://mqtt.example:8883",
             "GUARDSTREAM_GATEWAY_TLS_CERT": "/etc/gs/cert.pem", "GUARDSTREAM_GATEWAY_TLS_KEY": "/etc/gs/key.pem"}


def _settings(**env):
    return Settings.from_env({**ENCRYPTED, **env})


@pytest.mark.parametrize("env, uses, refused", [
    ({}, (KAFKA, MQTT, GATEWAY), []),
    ({"KAFKA_SECURITY_PROTOCOL": "plaintext"}, (KAFKA,), ["KAFKA_SECURITY_PROTOCOL"]),
    ({"KAFKA_SECURITY_PROTOCOL": "sasl_plaintext", "KAFKA_SASL_MECHANISM": "plain", "KAFKA_SASL_USERNAME": "u",
      "KAFKA_SASL_PASSWORD": "p"}, (KAFKA,), ["KAFKA_SECURITY_PROTOCOL"]),
    ({"KAFKA_SECURITY_PROTOCOL": "sasl_ssl", "KAFKA_SASL_MECHANISM": "plain", "KAFKA_SASL_USERNAME": "u",
      "KAFKA_SASL_PASSWORD": "p"}, (KAFKA,), []),
    ({"MQTT_URL": "mqtt://mqtt.example:1883"}, (KAFKA, MQTT), ["MQTT_URL"]),
    ({"MQTT_URL": "tcp://mqtt.example:1883"}, (MQTT,), ["MQTT_URL"]),
    ({"MQTT_URL": "ssl://mqtt.example:8883"}, (MQTT,), []),
    ({"MQTT_URL": "mqtt://mqtt.example:1883"}, (KAFKA,), []),  # the worker makes no MQTT connection
    ({"GUARDSTREAM_GATEWAY_TLS_CERT": "", "GUARDSTREAM_GATEWAY_TLS_KEY": ""}, (GATEWAY,),
     ["GUARDSTREAM_GATEWAY_TLS_CERT"]),
    ({"GUARDSTREAM_GATEWAY_TLS_CERT": "", "GUARDSTREAM_GATEWAY_TLS_KEY": "", "GUARDSTREAM_GATEWAY_TLS_PROXY": "1"},
     (GATEWAY,), []),
    ({"KAFKA_SECURITY_PROTOCOL": "plaintext", "MQTT_URL": "mqtt://m:1883", "GUARDSTREAM_PROFILE": "embedded"},
     (KAFKA, MQTT, GATEWAY), []),
])
def test_plaintext_links_on_the_production_profile(env, uses, refused):
    assert [setting for setting, _ in plaintext_links(_settings(**env), uses)] == refused


def test_a_refusal_names_the_setting_and_the_escape():
    with pytest.raises(ConfigError) as caught:
        require_encryption(_settings(MQTT_URL="mqtt://m:1883"), (KAFKA, MQTT))
    assert caught.value.setting == "MQTT_URL"
    assert "GUARDSTREAM_ALLOW_PLAINTEXT=1" in caught.value.detail


def test_the_escape_runs_in_clear_and_logs_each_link(caplog):
    settings = _settings(MQTT_URL="mqtt://m:1883", KAFKA_SECURITY_PROTOCOL="plaintext", GUARDSTREAM_ALLOW_PLAINTEXT="1")
    with caplog.at_level(logging.WARNING, logger="guardstream.transport"):
        require_encryption(settings, (KAFKA, MQTT))
    assert [r.getMessage().rsplit(" ", 1)[-1] for r in caplog.records] == ["(KAFKA_SECURITY_PROTOCOL)",
                                                                           "(MQTT_URL)"]
    assert all("GUARDSTREAM_ALLOW_PLAINTEXT=1: running in clear" in r.getMessage() for r in caplog.records)


def _component(command, **env):
    base = {k: v for k, v in os.environ.items() if not k.startswith("GUARDSTREAM_")
            and k not in ("KAFKA_BOOTSTRAP_SERVERS", "MQTT_URL", "DATABASE_URL")}
    return subprocess.run([sys.executable, "-m", "guardstream.cli", command], env={**base, **env},
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("command, env, setting", [
    ("worker", {}, "KAFKA_SECURITY_PROTOCOL"),
    ("sink", {}, "KAFKA_SECURITY_PROTOCOL"),
    ("lag-exporter", {}, "KAFKA_SECURITY_PROTOCOL"),
    ("notifier", {}, "KAFKA_SECURITY_PROTOCOL"),
    ("bridge", {"KAFKA_SECURITY_PROTOCOL": "ssl"}, "MQTT_URL"),
    ("commands", {"KAFKA_SECURITY_PROTOCOL": "ssl"}, "MQTT_URL"),
    ("gateway", {"KAFKA_SECURITY_PROTOCOL": "ssl"}, "GUARDSTREAM_GATEWAY_TLS_CERT"),
])
def test_each_component_refuses_to_start_in_clear_in_one_line(command, env, setting, tmp_path):
    result = _component(command, GUARDSTREAM_STATE_DIR=str(tmp_path), **env)
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"guardstream: bad setting {setting}: ") and "GUARDSTREAM_ALLOW_PLAINTEXT=1" in line
