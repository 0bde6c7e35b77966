"""The bridge's back-pressure figures against real servers: Kafka paused, the window fills."""

import signal
import threading

import pytest

from guardstream.infra.stack import wait_until

from support.processes import publish_telemetry, publisher


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
    threading.Thread(target=publish_telemetry, args=(pub, unique, stop, 500), daemon=True).start()
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
