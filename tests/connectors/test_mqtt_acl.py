"""MQTT access control from the registry: the ACL's grants by property, then the files against the real
mosquitto binary: a device may publish only under its own topics and read only its own command topic."""

from __future__ import annotations

import csv
import json
import os
import signal
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from hypothesis import given, strategies as st
from paho.mqtt.enums import CallbackAPIVersion
from support.processes import collect, header, start_process, stop_process

from guardstream.catalog import TOPICS
from guardstream.connectors.acl import acl_file, covers, device_grants
from guardstream.connectors.mapping import COMMAND_TOPIC, DEFAULT_RULES, Rule
from guardstream.infra import mqtt_auth
from guardstream.infra.stack import free_port, mqtt_spec, tcp_accepts, wait_until

ids = st.from_regex(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,20}", fullmatch=True)


def shapes(device_id: str) -> list[str]:
    """Topics a device with this id publishes on, in every shape the default rules map (and, under
    its guard and sensor ids, anything deeper); a shape a rule adds later gets its grant from the rule."""
    return [f"device/{device_id}/telemetry", f"guard/{device_id}/gps", f"guard/{device_id}/location",
            f"sensor/{device_id}/door", f"alert/panic/{device_id}", f"alert/sos/{device_id}"]


@pytest.mark.parametrize(("topic_filter", "topic", "expected"), [
    ("a/+/c", "a/b/c", True), ("a/#", "a", True), ("a/#", "a/b/c", True), ("a/+", "a/b/c", False),
    ("a/b", "a/b/c", False), ("+/+", "a/b", True), ("a/+/c", "a/b/d", False),
])
def test_covers_follows_mqtt_wildcards(topic_filter, topic, expected):
    assert covers(topic_filter, topic) is expected


def test_a_device_gets_its_own_shapes_and_its_command_topic():
    grants = device_grants(DEFAULT_RULES, "g1")
    assert grants.publish == ("device/g1/telemetry", "device/g1/status", "device/g1/heartbeat", "guard/g1/#",
                              "sensor/g1/#", "alert/+/g1", "device/g1/online", "device/g1/offline", "alert/+/g1/#")
    assert grants.subscribe == ("device/g1/cmd",) and grants.left_out == ()


def test_a_rule_that_would_cover_the_command_topic_is_left_out_and_said():
    rules = DEFAULT_RULES + (Rule("device/{device_id}/{anything}", TOPICS.raw_device.name, "device_id", 1),)
    grants = device_grants(rules, "g1")
    assert grants.left_out == ("device/g1/+",) and "device/g1/+" not in grants.publish
    assert acl_file(rules, ["g1"], "svc").left_out == (("g1", "device/g1/+"),)


@given(ids, ids)
def test_no_grant_of_a_device_reaches_another_devices_topics_or_any_command_topic(a, b):
    grants = device_grants(DEFAULT_RULES, a)
    assert all(any(covers(g, t) for g in grants.publish) for t in shapes(a))
    assert not any(covers(g, COMMAND_TOPIC.format(device_id=d)) for g in grants.publish for d in (a, b))
    if a != b:
        assert not any(covers(g, t) for g in (*grants.publish, *grants.subscribe) for t in shapes(b))
        assert not any(covers(g, COMMAND_TOPIC.format(device_id=b)) for g in grants.subscribe)
    assert not any(covers(g, f"system/{a}/health") for g in grants.publish)


# -- against mosquitto ------------------------------------------------------------------------

REGISTRY = {"g1": {"enabled": True}, "g2": {"enabled": True}, "off": {"enabled": False},
            "AA:BB": {"enabled": True}}


class Client:
    """An MQTT 5 client that keeps the reason code of each QoS 1 PUBACK and every message it receives."""

    def __init__(self, port: int, user: str | None, password: str | None) -> None:
        self.acks: dict[int, str] = {}
        self.received: list[tuple[str, bytes]] = []
        self.connected = threading.Event()
        self.disconnected = threading.Event()
        self.reason: str | None = None
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"c-{user}", protocol=mqtt.MQTTv5)
        if user:
            self.client.username_pw_set(user, password)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda c, u, flags, reason, p: self.disconnected.set()
        self.client.on_publish = lambda c, u, mid, rc, p: self.acks.__setitem__(mid, str(rc))
        self.client.on_message = lambda c, u, m: self.received.append((m.topic, m.payload))
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_connect(self, client, userdata, flags, reason, properties) -> None:
        self.reason = str(reason)
        self.connected.set()

    def publish(self, topic: str, payload: bytes = b"{}") -> str:
        info = self.client.publish(topic, payload, qos=1)
        info.wait_for_publish(10)
        wait_until(lambda: info.mid in self.acks, 10, f"PUBACK of {topic}")
        return self.acks[info.mid]

    def subscribe(self, topic: str) -> str:
        granted: list[str] = []
        self.client.on_subscribe = lambda c, u, mid, codes, p: granted.extend(str(code) for code in codes)
        self.client.subscribe(topic, qos=1)
        wait_until(lambda: granted, 10, f"SUBACK of {topic}")
        return granted[0]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def broker(tmp_path: Path):
    auth = tmp_path / "auth"
    report = mqtt_auth.write_files(auth, REGISTRY, None, "svc", "svc-secret")
    with report.credentials.open() as handle:
        passwords = {row["username"]: row["password"] for row in csv.DictReader(handle)}
    port = free_port()
    spec, name = mqtt_spec(port, tmp_path / "mqtt", auth)
    assert name == "mosquitto"
    process = start_process(list(spec.argv), dict(spec.env), tmp_path / "mosquitto.log")
    wait_until(lambda: tcp_accepts("127.0.0.1", port), 30, "mosquitto")
    clients: list[Client] = []

    def connect(user: str | None, password: str | None = None) -> Client:
        client = Client(port, user, password if password is not None else passwords.get(user, "wrong"))
        clients.append(client)
        assert client.connected.wait(10)
        return client
    try:
        yield report, passwords, connect, process, port
    finally:
        for client in clients:
            client.close()
        stop_process(process)


def test_the_files_hold_the_enabled_devices_only(broker):
    report, passwords, *_ = broker
    assert sorted(passwords) == ["g1", "g2"]  # svc's password was given: it is not in the credentials file
    assert report.refused == [("AA:BB", "':' cannot be in a password file user name")]
    users = {line.split(":")[0] for line in report.passwd.read_text().splitlines()}
    assert users == {"svc", "g1", "g2"}
    assert oct(os.stat(report.passwd).st_mode & 0o777) == "0o600" and "user off" not in report.acl.read_text()


def test_a_device_is_refused_in_other_devices_topics_and_in_command_topics(broker):
    _, _, connect, _, _ = broker
    service, g1, g2 = connect("svc", "svc-secret"), connect("g1"), connect("g2")
    for topic in ("device/+/telemetry", "guard/+/gps", "alert/+/+", "sensor/+/+"):
        assert service.subscribe(topic) == "Granted QoS 1"
    assert g2.subscribe("device/g2/cmd") == "Granted QoS 1"
    assert g1.subscribe("device/g1/cmd") == "Granted QoS 1"
    # mosquitto grants these subscriptions, then delivers nothing the ACL does not let g1 read (below)
    g1.subscribe("device/g2/cmd")
    g1.subscribe("guard/+/gps")

    refused = ["device/g2/telemetry", "guard/g2/gps", "alert/panic/g2", "sensor/g2/door", "device/g2/cmd",
               "device/g1/cmd", "system/g1/health", "other/g1"]
    assert {topic: g1.publish(topic, b"forged") for topic in refused} == {t: "Not authorized" for t in refused}
    own = ["device/g1/telemetry", "guard/g1/gps", "sensor/g1/door", "alert/panic/g1"]
    assert {topic: g1.publish(topic, b"mine") for topic in own} == {t: "Success" for t in own}
    assert g1.publish("guard/g1/location") == "No matching subscribers"  # allowed; no rule maps it yet
    assert service.publish("device/g2/cmd", b"command") == "Success"
    assert service.publish("device/g1/cmd", b"end") == "Success"

    # each client's messages arrive in the order they were sent: once the last allowed one is in,
    # nothing forged (sent before it) and nothing of g2's (sent to g1's subscriptions before it) can come
    wait_until(lambda: len(service.received) == len(own) and g2.received and g1.received, 10, "the allowed ones")
    assert [t for t, _ in service.received] == own
    assert g2.received == [("device/g2/cmd", b"command")]
    assert g1.received == [("device/g1/cmd", b"end")]


def test_disabled_unknown_and_anonymous_clients_cannot_connect_and_a_reload_locks_a_device_out(broker, tmp_path):
    report, _, connect, process, port = broker
    assert connect("off", "anything").reason == "Not authorized"
    assert connect("stranger", "anything").reason == "Not authorized"
    assert connect(None).reason == "Not authorized"
    g1 = connect("g1")
    assert g1.reason == "Success" and g1.publish("guard/g1/gps") == "No matching subscribers"  # allowed

    again = mqtt_auth.write_files(report.acl.parent, {**REGISTRY, "g1": {"enabled": False}}, None, "svc")
    assert again.removed == ["g1"] and again.added == [] and again.credentials is None
    process.send_signal(signal.SIGHUP)  # mosquitto reads both files again
    # and, its user gone, drops the connected device at once
    assert g1.disconnected.wait(10), "g1 still connected after the reload"
    assert connect("g1").reason == "Not authorized"


@pytest.mark.slow
def test_the_bridge_runs_on_the_locked_broker_with_the_service_user(broker, applied, run_component, unique):
    _, _, connect, _, port = broker
    run_component(["bridge"], applied.replace(mqtt_url=f"mqtt://svc:svc-secret@127.0.0.1:{port}"),
                  GUARDSTREAM_BRIDGE_ID=f"b-{unique}", GUARDSTREAM_BRIDGE_SHARED_GROUP=f"g-{unique}")
    g1 = connect("g1")
    fix = json.dumps({"ts": 1795000000, "lat": 52.52, "lon": 13.4, "seq": unique}).encode()
    assert g1.publish("guard/g2/gps", fix) == "Not authorized"
    assert g1.publish("guard/g1/gps", fix) == "Success"
    mine = lambda r: unique.encode() in (r.value() or b"")  # noqa: E731
    [raw] = collect(applied, TOPICS.raw_guard.name, mine, 1)
    assert raw.key() == b"g1" and header(raw, "mqtt.topic") == b"guard/g1/gps"
