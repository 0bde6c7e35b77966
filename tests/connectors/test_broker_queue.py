"""The MQTT broker's own figures: the pure reading, then a real mosquitto holding messages."""

import threading

import pytest

from guardstream.connectors.broker_queue import (DROPPED, RECEIVED_1MIN, RETAINED, STORED, BrokerQueue,
                                                 BrokerQueueReader, broker_queue, queue_families)
from guardstream.infra.stack import wait_until

from support.processes import publisher


@pytest.mark.parametrize("values, expected", [
    ({}, None),  # amqtt and other brokers: nothing reported
    ({STORED: "553"}, None),  # half a report: the retained count is needed to tell the queue
    ({STORED: "553", RETAINED: "53"}, BrokerQueue(553, 53, None, None, None, 7.0)),
    ({STORED: "553", RETAINED: "53", DROPPED: "4", RECEIVED_1MIN: "481.34"},
     BrokerQueue(553, 53, 4, 481.34, None, 7.0)),
    ({STORED: "x", RETAINED: "53"}, None),
])
def test_broker_queue_reads_the_sys_figures(values, expected):
    assert broker_queue(values, 7.0) == expected


def test_queued_leaves_retained_messages_out_and_is_never_negative():
    assert BrokerQueue(553, 53, 0, None, None, 0.0).queued == 500
    assert BrokerQueue(10, 53, 0, None, None, 0.0).queued == 0


def test_no_report_no_series():
    assert queue_families(None, 0.0) == []
    names = {f.name for f in queue_families(BrokerQueue(553, 53, 4, 1.0, 2.0, 7.0), 9.0)}
    assert names == {"guardstream_mqtt_broker_queued_messages", "guardstream_mqtt_broker_report_age_seconds",
                     "guardstream_mqtt_broker_dropped_messages", "guardstream_mqtt_broker_publish_rate"}


def test_messages_held_for_an_absent_persistent_session_show_as_queued(settings, unique):
    from guardstream.connectors.mqtt import connect, new_client
    # a persistent session subscribed at QoS 1, then gone: the broker queues what comes for it
    absent = new_client(settings, f"absent-{unique}", persistent=True)
    subscribed = threading.Event()
    absent.on_connect = lambda c, *a: c.subscribe(f"held/{unique}/#", 1)
    absent.on_subscribe = lambda *a: subscribed.set()
    connect(absent, settings, persistent=True)
    absent.loop_start()
    assert subscribed.wait(10)
    absent.disconnect()
    absent.loop_stop()
    reader = BrokerQueueReader(settings, f"sys-{unique}")
    reader.start()
    try:
        assert reader.reported.wait(10), "mosquitto sent no $SYS figures"
        before = reader.read().queued
        pub = publisher(settings, f"pub-{unique}")
        for i in range(300):
            pub.publish(f"held/{unique}/x", b"%d" % i, qos=1).wait_for_publish(10)
        pub.loop_stop()
        # mosquitto reports every sys_interval (2 s in the stack's configuration)
        wait_until(lambda: reader.read().queued >= before + 300, 15, "the broker's store to hold the 300 messages")
    finally:
        reader.stop()
        cleaner = new_client(settings, f"absent-{unique}")  # a clean session ends the queue
        connect(cleaner, settings)
        cleaner.loop_start()
        wait_until(cleaner.is_connected, 10, "clean session")
        cleaner.disconnect()
        cleaner.loop_stop()
