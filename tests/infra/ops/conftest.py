"""Records and a per-test state directory for the operator-command tests (session tansu broker);
their topics come from ``make_topic`` (``tests/conftest.py``)."""

import pytest
from confluent_kafka import Producer

from guardstream.kafka import producer_config


@pytest.fixture
def ops_settings(settings, tmp_path):
    """The session settings with a state directory of the test's own."""
    return settings.replace(state_dir=tmp_path / "state")


@pytest.fixture
def produce(settings):
    """produce(topic, [(partition, key, value, headers, timestamp_ms), ...]) in batches, acknowledged."""
    producer = Producer(producer_config(settings, "ops-test", **{"linger.ms": 20}))

    def send(topic, records):
        for partition, key, value, headers, stamp in records:
            producer.produce(topic, value=value, key=key, partition=partition, headers=headers, timestamp=stamp)
        assert producer.flush(20) == 0
    return send
