"""The Faust engine's configuration and its start-up offset decision, without a broker
(the engine itself runs against tansu in test_worker.py, on both engines)."""

import os
import subprocess
import sys

import pytest

from guardstream.errors import ConfigError
from guardstream.kafka import session_timeouts
from guardstream.settings import Settings
from guardstream.streams.faust_engine import EXACTLY_ONCE_REFUSED, app_config, offsets_ahead

A, B = ("raw.guard", 0), ("raw.guard", 1)


@pytest.mark.parametrize("own, other, moved", [
    ({}, {A: 10}, {A: 10}),  # a new group starts where the batch engine stopped
    ({A: 10}, {A: 10}, {}),  # level: nothing to move
    ({A: 12}, {A: 10}, {}),  # the Faust engine ran last: its own offsets stand
    ({A: 5, B: 7}, {A: 9, B: 3}, {A: 9}),  # per partition
    ({A: -1001}, {A: -1001}, {}),  # neither group committed (librdkafka's OFFSET_INVALID)
])
def test_offsets_ahead(own, other, moved):
    assert offsets_ahead(own, other) == moved


def test_app_config_uses_the_embedded_session_timeouts(tmp_path):
    settings = Settings.from_env({"GUARDSTREAM_PROFILE": "embedded", "KAFKA_BOOTSTRAP_SERVERS": "h1:9092,h2:9093"})
    config = app_config(settings, str(tmp_path))
    session_ms, heartbeat_ms = session_timeouts(settings)
    assert (config["broker_session_timeout"], config["broker_heartbeat_interval"]) == (session_ms / 1000,
                                                                                       heartbeat_ms / 1000)
    assert config["broker"] == ["kafka://h1:9092", "kafka://h2:9093"]
    assert config["topic_allow_declare"] is False and config["web_enabled"] is False


def test_app_config_refuses_a_secured_broker(tmp_path):
    settings = Settings.from_env({"KAFKA_SECURITY_PROTOCOL": "ssl"})
    with pytest.raises(ConfigError) as refused:
        app_config(settings, str(tmp_path))
    assert refused.value.setting == "KAFKA_SECURITY_PROTOCOL"


def test_exactly_once_on_the_faust_engine_is_refused_in_one_line_naming_both_settings():
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("GUARDSTREAM_", "KAFKA_"))},
           "GUARDSTREAM_PROFILE": "embedded", "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
           "GUARDSTREAM_WORKER_ENGINE": "faust", "GUARDSTREAM_WORKER_EXACTLY_ONCE": "true"}
    refused = subprocess.run([sys.executable, "-m", "guardstream.cli", "worker"], env=env, capture_output=True,
                             text=True, timeout=60)
    assert refused.returncode == 2
    [line] = refused.stderr.splitlines()
    assert line == f"guardstream: bad setting GUARDSTREAM_WORKER_EXACTLY_ONCE: {EXACTLY_ONCE_REFUSED}"
    assert "GUARDSTREAM_WORKER_ENGINE=faust" in line and "GUARDSTREAM_WORKER_ENGINE=batch" in line
