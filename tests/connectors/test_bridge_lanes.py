"""No single MQTT message stops a bridge lane: oversize dead letters, produce refusals, a lane
that fails, and a message that keeps failing it. Real mosquitto, real tansu, real processes."""

import hashlib
import json
import os
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

from guardstream.catalog import TOPICS
from guardstream.connectors.bridge import Bridge
from guardstream.connectors.mapping import DEFAULT_RULES
from guardstream.connectors.metrics import BridgeMetrics
from guardstream.connectors.poison import ledger_path, load
from guardstream.infra.stack import free_port, wait_until
from guardstream.observability import all_ready, serve
from guardstream.schemas.codec import Codec
from guardstream.schemas.dead_letters import MAX_PAYLOAD
from guardstream.schemas.registry import FileRegistry

from support.faulty_bridge import FAULT_PAYLOAD
from support.processes import collect, header, publisher, stop_process

FAULTY_BRIDGE = Path(__file__).parents[1] / "support" / "faulty_bridge.py"


def _bridge_env(unique: str, state_dir: Path) -> dict[str, str]:
    return {"GUARDSTREAM_BRIDGE_ID": f"b-{unique}", "GUARDSTREAM_BRIDGE_SHARED_GROUP": f"g-{unique}",
            "GUARDSTREAM_STATE_DIR": str(state_dir)}


def _mine(unique: str):
    return lambda r: unique.encode() in (header(r, "mqtt.topic") or b"")


def test_a_megabyte_message_is_a_cut_dead_letter_and_traffic_behind_it_flows(applied, run_component, unique,
                                                                              tmp_path):
    bridge = run_component(["bridge"], applied, **_bridge_env(unique, tmp_path))
    pub = publisher(applied, f"pub-{unique}")
    huge = bytes(range(256)) * (1_040_000 // 256) + b"!" * (1_040_000 % 256)
    assert len(huge) == 1_040_000
    pub.publish(f"device/d-{unique}/telemetry", huge, qos=1).wait_for_publish(30)
    topics = {f"device/d{i}-{unique}/telemetry": TOPICS.raw_device.name for i in range(3)}
    topics |= {f"guard/g{i}-{unique}/gps": TOPICS.raw_guard.name for i in range(3)}
    topics |= {f"sensor/s{i}-{unique}/door": TOPICS.raw_sensor.name for i in range(3)}
    topics |= {f"system/c{i}-{unique}/health": TOPICS.raw_system.name for i in range(3)}
    for seq in range(10):
        for topic in topics:
            pub.publish(topic, json.dumps({"seq": seq}).encode(), qos=1)

    for raw_topic in set(topics.values()):
        want = 10 * sum(1 for t in topics.values() if t == raw_topic)
        got = collect(applied, raw_topic, _mine(unique), want, distinct=lambda r: (header(r, "mqtt.topic"), r.value()))
        assert len({(header(r, "mqtt.topic"), r.value()) for r in got}) == want
    [letter] = collect(applied, TOPICS.dlq_bridge.name, _mine(unique), 1)
    record = Codec(FileRegistry.load()).decode(letter.value())[1]
    assert record["reason"] == "oversize"
    assert record["payload"] == huge[:MAX_PAYLOAD]
    assert header(letter, "guardstream.payload.bytes") == b"1040000"
    assert header(letter, "guardstream.payload.sha256") == hashlib.sha256(huge).hexdigest().encode()
    assert f"cut to {MAX_PAYLOAD} of 1040000 bytes" in record["detail"]
    assert bridge.readyz() and bridge.process.poll() is None
    pub.loop_stop()


def test_user_properties_are_capped_and_the_excess_counted(applied, run_component, unique, tmp_path):
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties
    bridge = run_component(["bridge"], applied, GUARDSTREAM_BRIDGE_USER_PROPERTIES_MAX="3",
                           GUARDSTREAM_BRIDGE_USER_PROPERTIES_BYTES_MAX="1000", **_bridge_env(unique, tmp_path))
    pub = publisher(applied, f"pub-{unique}")
    few, many = Properties(PacketTypes.PUBLISH), Properties(PacketTypes.PUBLISH)
    few.UserProperty = [("fw", "2.1")]
    many.UserProperty = [(f"p{i}", "v" * 100) for i in range(5000)]  # about 500 kB of headers asked for
    pub.publish(f"device/few-{unique}/telemetry", b"{}", qos=1, properties=few).wait_for_publish(10)
    pub.publish(f"device/many-{unique}/telemetry", b"{}", qos=1, properties=many).wait_for_publish(30)
    records = {r.key(): r for r in collect(applied, TOPICS.raw_device.name, _mine(unique), 2)}
    assert [h for h in records[f"few-{unique}".encode()].headers() if h[0].startswith("mqtt.user.")] == \
        [("mqtt.user.fw", b"2.1")]
    kept = [h for h in records[f"many-{unique}".encode()].headers() if h[0].startswith("mqtt.user.")]
    assert [name for name, _ in kept] == ["mqtt.user.p0", "mqtt.user.p1", "mqtt.user.p2"]
    wait_until(lambda: bridge.metric("guardstream_bridge_user_properties_dropped_total", topic="device") == 4997,
               10, "dropped properties counted")
    pub.loop_stop()


def test_topics_outside_the_rules_are_counted(applied, run_component, unique, tmp_path):
    bridge = run_component(["bridge"], applied, **_bridge_env(unique, tmp_path))
    pub = publisher(applied, f"pub-{unique}")
    pub.publish(f"sensor/bad id {unique}/door", b"{}", qos=1).wait_for_publish(10)
    wait_until(lambda: bridge.metric("guardstream_bridge_not_whitelisted_total", topic="sensor",
                                     reason="bad_topic_id") == 1, 20, "the refused topic counted")
    pub.loop_stop()


def _start_faulty(settings, env: dict[str, str], log: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    child_env = {**{k: v for k, v in os.environ.items() if not k.startswith("GUARDSTREAM_")},
                 **settings.replace(metrics_port=port).as_env(), **env}
    with log.open("a") as handle:
        # run_path, isolated: the script's own folder (tests/support, with its http.py) stays off sys.path
        process = subprocess.Popen([sys.executable, "-I", "-c", "import runpy; runpy.run_path("
                                    f"{str(FAULTY_BRIDGE)!r}, run_name='__main__')"],
                                   env=child_env, stdout=handle, stderr=subprocess.STDOUT)
    return process, port


def _readyz(port: int) -> int | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as reply:
            return reply.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):
        return None


def test_a_message_that_fails_the_lane_twice_is_a_dead_letter_on_its_third_delivery(applied, unique, tmp_path):
    env = _bridge_env(unique, tmp_path)
    log = tmp_path / "bridge.log"
    pub = publisher(applied, f"pub-{unique}")
    for run in (1, 2):
        process, port = _start_faulty(applied, env, log)
        try:
            wait_until(lambda: _readyz(port) == 200 or process.poll() is not None, 30, "bridge ready")
            if run == 1:
                pub.publish(f"device/d-{unique}/telemetry", FAULT_PAYLOAD, qos=1).wait_for_publish(10)
            # the lane fails on the message: not ready, and the process stops with exit code 1
            assert process.wait(30) == 1, log.read_text()[-3000:]
        finally:
            stop_process(process)
        ledger = load(ledger_path(tmp_path, f"b-{unique}", "main"))
        assert list(ledger.kills.values()) == [run]
    assert log.read_text().count("main lane failed on a message") == 2

    process, port = _start_faulty(applied, env, log)
    try:
        wait_until(lambda: _readyz(port) == 200, 30, "bridge ready")
        pub.publish(f"device/d-{unique}/telemetry", b'{"seq": 1}', qos=1).wait_for_publish(10)
        [letter] = collect(applied, TOPICS.dlq_bridge.name, _mine(unique), 1)
        assert header(letter, "__connect.errors.exception.class.name") == b"poison"
        assert Codec(FileRegistry.load()).decode(letter.value())[1]["payload"] == FAULT_PAYLOAD
        [raw] = collect(applied, TOPICS.raw_device.name, _mine(unique), 1)
        assert raw.value() == b'{"seq": 1}'
        wait_until(lambda: not load(ledger_path(tmp_path, f"b-{unique}", "main")).kills, 10, "ledger emptied")
        assert process.poll() is None and _readyz(port) == 200
    finally:
        stop_process(process)
    assert process.returncode == 0
    pub.loop_stop()


def test_a_failed_lane_makes_readyz_fail(applied, unique, tmp_path, monkeypatch):
    from guardstream.connectors import bridge as bridge_module
    from support.faulty_bridge import faulty_decide
    monkeypatch.setattr(bridge_module, "decide", faulty_decide)
    settings = applied.replace(bridge_id=f"b-{unique}", bridge_shared_group=f"g-{unique}", state_dir=tmp_path)
    stopping = threading.Event()
    metrics = BridgeMetrics.create()
    lane = Bridge(settings, Codec(FileRegistry.load()), metrics, DEFAULT_RULES, "main", stopping)
    endpoints = serve(metrics.registry, all_ready({"main lane": lane.ready}), "127.0.0.1", 0)
    lane.start()
    try:
        wait_until(lambda: _readyz(endpoints.port) == 200, 30, "lane ready")
        pub = publisher(applied, f"pub-{unique}")
        pub.publish(f"device/d-{unique}/telemetry", FAULT_PAYLOAD, qos=1).wait_for_publish(10)
        assert stopping.wait(30), "the lane did not stop the process"
        assert _readyz(endpoints.port) == 503
        assert isinstance(lane.fatal, RuntimeError)
        pub.loop_stop()
    finally:
        lane.stop()
        endpoints.close()


def test_a_network_thread_that_ended_fails_the_lane(applied, unique, tmp_path):
    settings = applied.replace(bridge_id=f"b-{unique}", bridge_shared_group=f"g-{unique}", state_dir=tmp_path)
    lane = Bridge(settings, Codec(FileRegistry.load()), BridgeMetrics.create(), DEFAULT_RULES, "main")
    lane.start()
    try:
        wait_until(lambda: lane.ready()[0], 30, "lane ready")
        lane.check_threads()
        assert lane.ready() == (True, "")
        lane.client.loop_stop()  # the network thread ends while the lane runs, as on an error inside paho
        lane.check_threads()
        assert lane.stopping.is_set() and not lane.ready()[0]
    finally:
        lane.stop()
