"""Topics, records and a per-test state directory for the operator-command tests (session tansu broker)."""

import pytest
from confluent_kafka import Producer

from guardstream.catalog import RAW_BYTES, Topic
from guardstream.infra import topics
from guardstream.kafka import producer_config

from ops_support import DAY_MS


@pytest.fixture
def ops_settings(settings, tmp_path):
    """The session settings with a state directory of the test's own."""
    return settings.replace(state_dir=tmp_path / "state")


@pytest.fixture
def make_topic(settings, unique):
    counter = iter(range(100))

    def make(partitions=1, raw=False, name="ops"):
        schemas = (RAW_BYTES,) if raw else ("guardstream.Telemetry",)
        topic = Topic(f"{name}.{unique}.{next(counter)}", partitions, DAY_MS, "delete", "k", schemas, "ops test")
        topics.apply(settings, (topic,))
        return topic.name
    return make


@pytest.fixture
def produce(settings):
    """produce(topic, [(partition, key, value, headers, timestamp_ms), ...]) in batches, acknowledged."""
    producer = Producer(producer_config(settings, "ops-test", **{"linger.ms": 20}))

    def send(topic, records):
        for partition, key, value, headers, stamp in records:
            producer.produce(topic, value=value, key=key, partition=partition, headers=headers, timestamp=stamp)
        assert producer.flush(20) == 0
    return send
