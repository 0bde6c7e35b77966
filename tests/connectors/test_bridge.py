"""The bridge as a real process between a real MQTT broker and tansu."""

import json
import signal
import threading
import time

import pytest

from guardstream.catalog import TOPICS
from guardstream.infra.stack import wait_until
from guardstream.schemas.codec import Codec
from guardstream.schemas.registry import FileRegistry

from support.processes import collect, header, publisher


def _bridge_env(unique: str, **extra: str) -> dict[str, str]:
    return {"GUARDSTREAM_BRIDGE_ID": f"b-{unique}", "GUARDSTREAM_BRIDGE_SHARED_GROUP": f"g-{unique}", **extra}


def test_forwards_raw_payloads_with_headers_and_refuses_bad_ones(applied, run_component, unique):
    run_component(["bridge"], applied, **_bridge_env(unique, GUARDSTREAM_BRIDGE_MAX_PAYLOAD_BYTES="1000"))
    pub = publisher(applied, f"pub-{unique}")
    gps = json.dumps({"ts": 1795000000, "lat": 52.52, "lon": 13.4}).encode()
    pub.publish(f"guard/g-{unique}/gps", gps, qos=1).wait_for_publish(10)
    pub.publish(f"alert/panic/d-{unique}", b'{"kind": "panic"}', qos=2).wait_for_publish(10)
    pub.publish(f"device/d-{unique}/telemetry", b"x" * 5000, qos=1).wait_for_publish(10)
    pub.publish(f"sensor/bad id {unique}/door", b"{}", qos=1).wait_for_publish(10)
    pub.publish(f"system/c-{unique}/health", b'{"status": "OK"}', qos=0).wait_for_publish(10)

    mine = lambda r: unique.encode() in (header(r, "mqtt.topic") or b"")  # noqa: E731
    [raw] = collect(applied, TOPICS.raw_guard.name, mine, 1)
    assert raw.value() == gps and raw.key() == f"g-{unique}".encode()
    assert header(raw, "bridge.id") == f"b-{unique}".encode() and len(header(raw, "msg.id")) == 32
    [alert] = collect(applied, TOPICS.raw_alert.name, mine, 1)
    assert header(alert, "mqtt.qos") == b"1"  # subscribed at QoS 1: see connectors/mapping.py
    assert collect(applied, TOPICS.raw_system.name, mine, 1)

    dead = collect(applied, TOPICS.dlq_bridge.name, mine, 2)
    reasons = {header(r, "__connect.errors.exception.class.name") for r in dead}
    assert reasons == {b"oversize", b"bad_topic_id"}
    codec = Codec(FileRegistry.load())
    letters = {codec.decode(r.value())[1]["reason"]: codec.decode(r.value())[1] for r in dead}
    assert letters["oversize"]["payload"] == b"x" * 5000
    assert letters["oversize"]["stage"] == "bridge"
    assert not collect(applied, TOPICS.raw_device.name, mine, 1, timeout_s=2)
    pub.loop_stop()


def test_per_device_order_is_kept(applied, run_component, unique):
    run_component(["bridge"], applied, **_bridge_env(unique))
    pub = publisher(applied, f"pub-{unique}")
    devices = [f"d{i}-{unique}" for i in range(5)]
    for seq in range(200):
        for device in devices:
            pub.publish(f"device/{device}/telemetry", json.dumps({"seq": seq}).encode(), qos=1)
    records = collect(applied, TOPICS.raw_device.name, lambda r: unique.encode() in r.key(), 1000)
    per_device: dict[bytes, list[int]] = {}
    for record in records:
        per_device.setdefault(record.key(), []).append(json.loads(record.value())["seq"])
    assert {k: v == sorted(v) for k, v in per_device.items()} == {d.encode(): True for d in devices}
    pub.loop_stop()


def _publish_all(pub, unique: str, count: int, done: threading.Event, per_second: int | None = None) -> None:
    started = time.monotonic()
    for i in range(count):
        pub.publish(f"device/k{i % 50}-{unique}/telemetry", json.dumps({"seq": i}).encode(), qos=1)
        if per_second and i % 100 == 0:
            lag = i / per_second - (time.monotonic() - started)
            if lag > 0:
                done.wait(lag)  # pacing the load, not synchronising
    done.set()


def _seq(record) -> int:
    return json.loads(record.value())["seq"]


def _seqs(records) -> list[int]:
    return [_seq(r) for r in records]


@pytest.mark.slow
def test_kill_9_mid_stream_loses_nothing(applied, run_component, unique):
    count = 20_000
    env = _bridge_env(unique)
    bridge = run_component(["bridge"], applied, **env)
    pub = publisher(applied, f"pub-{unique}")
    done = threading.Event()
    threading.Thread(target=_publish_all, args=(pub, unique, count, done, 8000), daemon=True).start()
    wait_until(lambda: bridge.metric("guardstream_bridge_forwarded_total") >= 4000, 60, "4000 forwarded")
    bridge.process.send_signal(signal.SIGKILL)
    bridge.process.wait()
    run_component(["bridge"], applied, **env)
    assert done.wait(120), "publisher did not finish"
    records = collect(applied, TOPICS.raw_device.name, lambda r: unique.encode() in r.key(), count,
                      timeout_s=120, distinct=_seq)
    seqs = _seqs(records)
    missing = set(range(count)) - set(seqs)
    assert not missing, f"{len(missing)} of {count} missing, e.g. {sorted(missing)[:5]}"
    # at-least-once: duplicates are allowed and carry the same msg.id
    by_seq: dict[int, set[bytes]] = {}
    for record, seq in zip(records, seqs):
        by_seq.setdefault(seq, set()).add(header(record, "msg.id"))
    assert all(len(ids) == 1 for ids in by_seq.values())
    pub.loop_stop()


@pytest.mark.slow
def test_kafka_paused_under_load_loses_nothing_and_memory_stays_bounded(own_kafka, run_component, unique):
    # a broker of the test's own, so it can be paused without stopping others
    settings, kafka = own_kafka.settings, own_kafka.process
    count, window = 15_000, 500
    bridge = run_component(["bridge"], settings, **_bridge_env(unique, GUARDSTREAM_BRIDGE_MAX_INFLIGHT=str(window)))
    pub = publisher(settings, f"pub-{unique}")
    done = threading.Event()
    threading.Thread(target=_publish_all, args=(pub, unique, count, done, 2000), daemon=True).start()
    wait_until(lambda: bridge.metric("guardstream_bridge_forwarded_total") >= 2000, 60, "2000 forwarded")
    rss_before = bridge.rss_bytes()
    kafka.send_signal(signal.SIGSTOP)
    paused_until = time.monotonic() + 10
    peak_inflight, peak_rss = 0.0, rss_before
    while time.monotonic() < paused_until:
        peak_inflight = max(peak_inflight, bridge.metric("guardstream_bridge_inflight_messages"))
        peak_rss = max(peak_rss, bridge.rss_bytes())
        done.wait(0.5)  # sampling interval while Kafka is paused
    forwarded_during_pause = bridge.metric("guardstream_bridge_forwarded_total")
    kafka.send_signal(signal.SIGCONT)
    assert peak_inflight <= window
    assert peak_rss - rss_before < 64 * 2**20, f"RSS grew by {(peak_rss - rss_before) / 2**20:.0f} MiB"
    assert done.wait(120)
    records = collect(settings, TOPICS.raw_device.name, lambda r: unique.encode() in r.key(), count,
                      timeout_s=120, distinct=_seq)
    assert set(range(count)) - set(_seqs(records)) == set()
    assert bridge.metric("guardstream_bridge_forwarded_total") > forwarded_during_pause
    pub.loop_stop()


def test_the_bridge_never_logs_the_mqtt_password(applied, run_component, unique):
    # the test broker takes any credentials; the bridge logs where it connects, password masked
    host_port = applied.mqtt_url.split("://", 1)[1]
    password = f"mq-pass-{unique}"
    with_password = applied.replace(mqtt_url=f"mqtt://bridge:{password}@{host_port}")
    bridge = run_component(["bridge"], with_password, **_bridge_env(unique))
    bridge.stop()
    log = bridge.log.read_text()
    assert f"mqtt://bridge:***@{host_port}" in log
    assert password not in log
