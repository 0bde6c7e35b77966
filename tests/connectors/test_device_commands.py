import json
import queue
import time

import paho.mqtt.client as mqtt
from confluent_kafka import Producer
from paho.mqtt.enums import CallbackAPIVersion

from guardstream.catalog import TOPICS
from guardstream.connectors.device_commands import Expired, Publish, decide
from guardstream.refusal import Refused
from guardstream.connectors.mqtt import endpoint
from guardstream.schemas.codec import Codec
from guardstream.schemas.registry import FileRegistry
from support.processes import collect, header

NOW = 1_795_000_000_000


def _command(device="d-1", expires=None, **extra):
    return {"command_id": "c-1", "tenant": "acme", "device_id": device, "command": "locate",
            "arguments": {"precision": "high"}, "qos": 1, "issued_ms": NOW - 1000, "expires_ms": expires, **extra}


def test_decide_publishes_to_the_device_topic():
    out = decide(_command(expires=NOW + 1), NOW)
    assert isinstance(out, Publish)
    assert out.topic == "device/d-1/cmd" and out.qos == 1
    assert json.loads(out.payload) == {"command_id": "c-1", "command": "locate", "arguments": {"precision": "high"},
                                       "issued_ms": NOW - 1000, "expires_ms": NOW + 1}


def test_decide_never_sends_an_expired_command():
    assert isinstance(decide(_command(expires=NOW), NOW), Expired)
    assert isinstance(decide(_command(expires=None), NOW), Publish)


def test_commands_reach_a_subscribed_device_and_expired_ones_do_not(applied, run_component, unique):
    received: queue.Queue = queue.Queue()
    ep = endpoint(applied)
    device = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"dev-{unique}")
    device.on_message = lambda c, u, m: received.put((m.topic, json.loads(m.payload)))
    device.connect(ep.host, ep.port)
    device.subscribe("device/+/cmd", qos=1)
    device.loop_start()

    run_component(["commands"], applied)
    codec = Codec(FileRegistry.load())
    producer = Producer({"bootstrap.servers": applied.kafka_bootstrap_servers})
    now = time.time_ns() // 1_000_000
    live = _command(device=f"live-{unique}", command_id=f"c-live-{unique}", issued_ms=now, expires_ms=now + 600_000)
    stale = _command(device=f"stale-{unique}", command_id=f"c-stale-{unique}", issued_ms=now - 60_000,
                     expires_ms=now - 1)
    for command in (live, stale):
        producer.produce(TOPICS.commands_device.name, codec.encode("guardstream.DeviceCommand", command),
                         command["device_id"].encode())
    producer.produce(TOPICS.commands_device.name, b"not avro", f"junk-{unique}".encode())
    producer.flush(10)

    topic, payload = received.get(timeout=60)
    assert topic == f"device/live-{unique}/cmd" and payload["command_id"] == f"c-live-{unique}"
    mine = lambda r: unique.encode() in (r.key() or b"")  # noqa: E731
    outcomes = {codec.decode(r.value())[1]["command_id"]: codec.decode(r.value())[1]["outcome"]
                for r in collect(applied, TOPICS.commands_outcomes.name, mine, 2)}
    assert outcomes == {f"c-live-{unique}": "SENT", f"c-stale-{unique}": "EXPIRED"}
    [dead] = collect(applied, TOPICS.dlq_bridge.name, mine, 1)
    assert header(dead, "__connect.errors.stage") == b"commands"
    assert header(dead, "__connect.errors.exception.class.name") == b"not_avro"
    assert received.empty(), "an expired command was sent"
    device.loop_stop()


def test_decide_refuses_a_device_id_that_is_not_one_topic_segment():
    for bad in ("a+b", "#", "a/b", "a\x00b", "", "tab\there", "x" * 257):
        out = decide(_command(device=bad, expires=NOW + 1), NOW)
        assert isinstance(out, Refused) and out.reason == "bad_device_id", bad
    for good in ("d-1", "radio:7", "ünïcode", "$x", "x" * 256):
        assert isinstance(decide(_command(device=good, expires=NOW + 1), NOW), Publish), good


def test_a_command_for_a_bad_device_id_fails_and_the_next_one_is_sent(applied, run_component, unique):
    received: queue.Queue = queue.Queue()
    ep = endpoint(applied)
    device = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"dev-{unique}")
    device.on_message = lambda c, u, m: received.put((m.topic, json.loads(m.payload)))
    device.connect(ep.host, ep.port)
    device.subscribe("device/#", qos=1)
    device.loop_start()

    relay = run_component(["commands"], applied)
    codec = Codec(FileRegistry.load())
    producer = Producer({"bootstrap.servers": applied.kafka_bootstrap_servers})
    now = time.time_ns() // 1_000_000
    bad = _command(device=f"a+b{unique}", command_id=f"c-bad-{unique}", issued_ms=now, expires_ms=now + 600_000)
    good = _command(device=f"ok-{unique}", command_id=f"c-ok-{unique}", issued_ms=now, expires_ms=now + 600_000)
    for command in (bad, good):
        producer.produce(TOPICS.commands_device.name, codec.encode("guardstream.DeviceCommand", command),
                         command["device_id"].encode())
    producer.flush(10)

    topic, payload = received.get(timeout=60)
    assert topic == f"device/ok-{unique}/cmd" and payload["command_id"] == f"c-ok-{unique}"
    mine = lambda r: unique.encode() in (r.key() or b"")  # noqa: E731
    outcomes = {o["command_id"]: o for o in (codec.decode(r.value())[1]
                                             for r in collect(applied, TOPICS.commands_outcomes.name, mine, 2))}
    assert outcomes[f"c-ok-{unique}"]["outcome"] == "SENT"
    assert outcomes[f"c-bad-{unique}"]["outcome"] == "FAILED"
    assert outcomes[f"c-bad-{unique}"]["detail"].startswith("bad_device_id: device_id holds '+'")
    assert relay.process.poll() is None and relay.readyz()
    device.loop_stop()
