"""Topics and records for the lag tests, on the session's tansu broker."""

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from guardstream.catalog import Topic
from guardstream.infra import topics
from guardstream.kafka import consumer_config, producer_config

DAY_MS = 86_400_000
T0_MS = 1_700_000_000_000  # records carry explicit timestamps from here, one second apart


class Clock:
    """A hand-stepped clock: a test moves a status window along without waiting."""

    def __init__(self, now):
        self.now = now

    def __call__(self):
        return self.now


@pytest.fixture
def clock():
    return Clock(T0_MS / 1000 + 100)


@pytest.fixture
def make_topic(settings, unique):
    def make(partitions=1, name="lag"):
        topic = Topic(f"{name}.{unique}", partitions, DAY_MS, "delete", "k", ("guardstream.Telemetry",), "lag test")
        topics.apply(settings, (topic,))
        return topic.name
    return make


@pytest.fixture
def produce(settings):
    """produce(topic, partition, first, count): records numbered first.., stamped T0 + n s, in one batch."""
    producer = Producer(producer_config(settings, "lag-test", **{"linger.ms": 100}))

    def send(topic, partition, first, count):
        for n in range(first, first + count):
            producer.produce(topic, value=b"%d" % n, partition=partition, timestamp=T0_MS + n * 1000)
        assert producer.flush(10) == 0
    return send


@pytest.fixture
def commit(settings):
    """commit(group, {(topic, partition): offset}) without joining the group (it stays empty)."""
    def send(group, offsets):
        consumer = Consumer(consumer_config(settings, "lag-test", group))
        try:
            consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()], asynchronous=False)
        finally:
            consumer.close()
    return send
