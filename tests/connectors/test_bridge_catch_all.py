"""The bridge as a real process: every topic under a whitelisted prefix has a path, and its own commands none."""

import pytest

from guardstream.catalog import TOPICS
from guardstream.infra.stack import wait_until

from support.processes import collect, header, publisher

pytestmark = pytest.mark.slow


def test_topics_no_rule_names_reach_their_raw_topic_and_commands_are_not_forwarded(applied, run_component, unique):
    bridge = run_component(["bridge"], applied, GUARDSTREAM_BRIDGE_ID=f"b-{unique}",
                           GUARDSTREAM_BRIDGE_SHARED_GROUP=f"g-{unique}")
    pub = publisher(applied, f"pub-{unique}")
    sent = {
        f"device/d-{unique}/status": TOPICS.raw_device.name,
        f"device/d-{unique}/heartbeat": TOPICS.raw_device.name,
        f"guard/g-{unique}/location": TOPICS.raw_guard.name,
        f"device/d-{unique}/offline": TOPICS.raw_system.name,
        f"device/d-{unique}/battery/level": TOPICS.raw_device.name,
        f"alert/panic/d-{unique}/button": TOPICS.raw_alert.name,
        f"system/c-{unique}/ping": TOPICS.raw_system.name,
    }
    pub.publish(f"device/d-{unique}/cmd", b'{"command": "reboot"}', qos=1).wait_for_publish(10)
    for topic in sent:
        pub.publish(topic, b"{}", qos=1).wait_for_publish(10)
    pub.loop_stop()

    mine = lambda r: unique.encode() in (header(r, "mqtt.topic") or b"")  # noqa: E731
    arrived = {}
    for kafka_topic in set(sent.values()):
        for record in collect(applied, kafka_topic, mine, list(sent.values()).count(kafka_topic)):
            arrived[header(record, "mqtt.topic").decode()] = (kafka_topic, header(record, "bridge.catch_all"))
    assert {topic: where for topic, (where, _) in arrived.items()} == sent
    assert arrived[f"device/d-{unique}/battery/level"][1] == b"device/{device_id}/#"
    assert arrived[f"alert/panic/d-{unique}/button"][1] == b"alert/{kind}/{device_id}/#"
    assert arrived[f"device/d-{unique}/status"][1] is None

    # the command is acknowledged without a record anywhere, and counted
    wait_until(lambda: bridge.metric("guardstream_bridge_skipped_total", topic="device") == 1, 20, "skipped")
    assert not collect(applied, TOPICS.dlq_bridge.name, mine, 1, timeout_s=2)
    assert not [r for r in collect(applied, TOPICS.raw_device.name, mine, 10, timeout_s=2)
                if header(r, "mqtt.topic").endswith(b"/cmd")]
    # each message once: one subscription per prefix
    assert bridge.metric("guardstream_bridge_received_total") == len(sent) + 1
