"""The bridge's back-pressure figures against real servers: Kafka paused, the window fills."""

import json
import signal
import threading
import time

import pytest

from guardstream.infra.stack import wait_until

from support.processes import publisher


def _publish(pub, unique: str, stop: threading.Event, per_second: int = 500) -> None:
    started, i = time.monotonic(), 0
    while not stop.is_set():
        pub.publish(f"device/k{i % 20}-{unique}/telemetry", json.dumps({"seq": i}).encode(), qos=1)
        i += 1
        ahead = i / per_second - (time.monotonic() - started)
        if ahead > 0:
            stop.wait(ahead)  # pacing the load, not synchronising


@pytest.mark.slow
def test_kafka_paused_fills_the_window_and_the_oldest_message_ages(own_kafka, own_mqtt, run_component, unique):
    settings, kafka = own_kafka.settings.replace(mqtt_url=own_mqtt), own_kafka.process
    window = 200
    bridge = run_component(["bridge"], settings, GUARDSTREAM_BRIDGE_ID=f"b-{unique}",
                           GUARDSTREAM_BRIDGE_SHARED_GROUP=f"g-{unique}",
                           GUARDSTREAM_BRIDGE_MAX_INFLIGHT=str(window))
    assert bridge.metric("guardstream_bridge_window_capacity", lane="main") == window
    pub = publisher(settings, f"pub-{unique}")
    stop = threading.Event()
    threading.Thread(target=_publish, args=(pub, unique, stop), daemon=True).start()
    try:
        wait_until(lambda: bridge.metric("guardstream_bridge_forwarded_total") >= 200, 60, "200 forwarded")
        kafka.send_signal(signal.SIGSTOP)
        try:
            wait_until(lambda: bridge.metric("guardstream_bridge_window_messages", lane="main") == window, 30,
                       "the main lane's window at capacity")
            first_age = bridge.metric("guardstream_bridge_window_oldest_age_seconds", lane="main")
            wait_until(lambda: bridge.metric("guardstream_bridge_window_oldest_age_seconds", lane="main")
                       >= first_age + 2, 30, "the oldest message's age to grow")
            assert bridge.metric("guardstream_bridge_window_messages", lane="main") == window
            # what the bridge cannot take waits in the MQTT broker, and the bridge reports it
            wait_until(lambda: bridge.metric("guardstream_mqtt_broker_queued_messages") >= 500, 30,
                       "the MQTT broker's queue to grow")
        finally:
            kafka.send_signal(signal.SIGCONT)
        stop.set()
        wait_until(lambda: bridge.metric("guardstream_bridge_window_messages", lane="main") == 0, 120,
                   "the window to drain")
        assert bridge.metric("guardstream_bridge_window_oldest_age_seconds", lane="main") == 0
    finally:
        stop.set()
        pub.loop_stop()
