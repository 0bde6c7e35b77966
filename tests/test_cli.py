import os
import socket
import subprocess
import sys

import pytest


def _run(args, **env):
    base = {k: v for k, v in os.environ.items() if not k.startswith("GUARDSTREAM_")}
    return subprocess.run([sys.executable, "-m", "guardstream.cli", *args], env={**base, **env},
                          capture_output=True, text=True, timeout=60)


def test_a_bad_setting_is_one_line_naming_the_variable_and_exit_2():
    result = _run(["topics", "list"], KAFKA_BOOTSTRAP_SERVERS="nowhere")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == ["guardstream: bad setting KAFKA_BOOTSTRAP_SERVERS: 'nowhere' is not host:port"]


def test_an_unknown_setting_stops_start_up():
    result = _run(["settings"], GUARDSTREAM_PROFLE="embedded")
    assert result.returncode == 2
    assert "GUARDSTREAM_PROFLE: unknown setting (did you mean GUARDSTREAM_PROFILE?)" in result.stderr


def test_settings_table_hides_secrets():
    result = _run(["settings"], KAFKA_SASL_PASSWORD="hunter2")
    assert result.returncode == 0
    assert "KAFKA_SASL_PASSWORD" in result.stdout and "hunter2" not in result.stdout


def test_settings_table_hides_the_passwords_in_urls():
    result = _run(["settings"], DATABASE_URL="postgresql://gs:pg-pass-71@db:5432/guardstream",
                  MQTT_URL="mqtts://bridge:mq-pass-72@mqtt.example:8883")
    assert result.returncode == 0
    assert "pg-pass-71" not in result.stdout and "mq-pass-72" not in result.stdout
    assert "postgresql://gs:***@db:5432/guardstream" in result.stdout
    assert "mqtts://bridge:***@mqtt.example:8883" in result.stdout


def test_topics_apply_and_list_against_the_broker(settings):
    env = {"KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers, "GUARDSTREAM_REPLICATION_FACTOR": "1",
           "GUARDSTREAM_PROFILE": "embedded", "GUARDSTREAM_PARTITIONS_MAX": str(settings.partitions_max)}
    first = _run(["topics", "apply"], **env)
    assert first.returncode == 0, first.stderr
    second = _run(["topics", "apply"], **env)
    assert second.returncode == 0
    assert second.stdout.strip() == "topics: nothing changed; the cluster matches the catalog"
    listing = _run(["topics", "list"], **env)
    assert listing.returncode == 0
    assert "events.critical" in listing.stdout and "missing" not in listing.stdout


def test_unreachable_kafka_is_one_clear_line():
    result = _run(["topics", "apply"], KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1")
    assert result.returncode == 1
    assert result.stderr.startswith("guardstream: unavailable: Kafka unreachable")


@pytest.mark.parametrize("component, setting", [("bridge", "GUARDSTREAM_METRICS_PORT"),
                                                ("gateway", "GUARDSTREAM_GATEWAY_PORT")])
def test_a_component_on_a_taken_port_stops_with_one_line_naming_the_setting(component, setting, applied, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        ports = {"GUARDSTREAM_METRICS_PORT": port if setting == "GUARDSTREAM_METRICS_PORT" else "0",
                 "GUARDSTREAM_GATEWAY_PORT": port}
        result = _run([component], **{**applied.as_env(), "GUARDSTREAM_JWT_SECRET": "s",
                                      "GUARDSTREAM_STATE_DIR": str(tmp_path), **ports})
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    refusal = [line for line in result.stderr.splitlines() if line.startswith("guardstream: ")]
    assert refusal == [f"guardstream: bad setting {setting}: 127.0.0.1:{port} is already in use (another "
                       "component or program listens there): give each process a port of its own, or 0 for any "
                       "free one"]


def test_every_command_is_in_the_readmes_command_table():
    from pathlib import Path

    from guardstream.cli import build_parser
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    table = readme.split("## Commands", 1)[1].split("\n## ", 1)[0]
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    missing = [name for name in sub.choices if f"`guardstream {name}" not in table]
    assert not missing, f"commands missing from the README's Commands table: {missing}"
