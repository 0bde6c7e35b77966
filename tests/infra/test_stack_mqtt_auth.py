"""`GUARDSTREAM_MQTT_AUTH=on guardstream up`: the local broker refuses anonymous clients, the pipeline runs
as the service user, and `guardstream mqtt acl --reload` lets a newly registered device in, to its own topics."""

from __future__ import annotations

import csv
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from guardstream.infra.stack import wait_until
from guardstream.records import device
from guardstream.schemas.codec import Codec
from guardstream.schemas.registry import FileRegistry
from guardstream.settings import Settings
from guardstream.streams import device_admin

pytestmark = pytest.mark.slow


def _client(port: int, user: str | None, password: str | None) -> tuple[mqtt.Client, dict]:
    seen: dict = {"acks": {}}
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"t-{user}", protocol=mqtt.MQTTv5)
    if user:
        client.username_pw_set(user, password)
    client.on_connect = lambda c, u, flags, reason, p: seen.__setitem__("connect", str(reason))
    client.on_publish = lambda c, u, mid, reason, p: seen["acks"].__setitem__(mid, str(reason))
    client.connect("127.0.0.1", port)
    client.loop_start()
    wait_until(lambda: "connect" in seen, 10, f"CONNACK for {user}")
    return client, seen


def _publish(client: mqtt.Client, seen: dict, topic: str) -> str:
    info = client.publish(topic, b'{"ts": 1795000000, "kind": "panic"}', qos=1)
    wait_until(lambda: info.mid in seen["acks"], 10, f"PUBACK of {topic}")
    return seen["acks"][info.mid]


def test_up_with_mqtt_auth_locks_the_broker_and_a_reload_admits_a_registered_device(tmp_path):
    env = {k: v for k, v in os.environ.items()
           if k not in ("KAFKA_BOOTSTRAP_SERVERS", "MQTT_URL", "DATABASE_URL") and not k.startswith("GUARDSTREAM_")}
    env |= {"GUARDSTREAM_STATE_DIR": str(tmp_path / "state"), "GUARDSTREAM_MQTT_AUTH": "on"}
    process = subprocess.Popen([sys.executable, "-m", "guardstream.cli", "up"], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, cwd=tmp_path, process_group=0)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True).start()
    clients: list[mqtt.Client] = []
    try:
        wait_until(lambda: any("guardstream is up;" in line for line in lines) or process.poll() is not None,
                   90, "guardstream up")
        output = "".join(lines)
        assert process.poll() is None, output
        assert "MQTT ACL: 0 device(s) from the registry" in output
        wait_until(lambda: re.search(r"bridge .*MQTT connected; subscribed", "".join(lines)), 30,
                   "the bridge connected as the service user")
        [kafka_port] = set(re.findall(r"kafka +127\.0\.0\.1:(\d+) \(tansu", output))
        [mqtt_port] = set(re.findall(r"mqtt://guardstream:\*\*\*@127\.0\.0\.1:(\d+)", output))
        port = int(mqtt_port)

        anonymous, seen = _client(port, None, None)
        clients.append(anonymous)
        assert seen["connect"] == "Not authorized"

        settings = Settings.from_env({"KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{kafka_port}"})
        device_admin.write(settings, Codec(FileRegistry.load()),
                           [device(device_id="g1", tenant="acme", kind="GUARD", updated_ms=1)])
        acl = subprocess.run([sys.executable, "-m", "guardstream.cli", "mqtt", "acl", "--reload"],
                             env={**env, "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{kafka_port}"}, cwd=tmp_path,
                             capture_output=True, text=True, timeout=60)
        assert acl.returncode == 0, acl.stdout + acl.stderr
        [credentials] = Path(tmp_path / "state" / "mqtt" / "auth").glob("credentials-*.csv")
        with credentials.open() as handle:
            [row] = list(csv.DictReader(handle))
        assert row["username"] == "g1"

        g1, seen = _client(port, "g1", row["password"])
        clients.append(g1)
        assert seen["connect"] == "Success"
        assert _publish(g1, seen, "alert/panic/g1") == "Success"  # the bridge, as the service user, takes it
        assert _publish(g1, seen, "alert/panic/g2") == "Not authorized"
    finally:
        for client in clients:
            client.loop_stop()
        if process.poll() is None:  # else the failure above says why it ended
            os.killpg(process.pid, signal.SIGINT)
        code = process.wait(60)
    assert code == 0, "".join(lines)
