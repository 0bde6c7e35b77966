"""Reading partitions to their end, against the session's tansu broker (which reports a partition's
high watermark as the base offset of its last batch + 1, so only the end-of-file event is exact)."""

import time

import pytest
from confluent_kafka import Consumer, Producer

from guardstream.errors import UnavailableError
from guardstream.infra.stack import free_port
from guardstream.kafka import producer_config
from guardstream.topic_end import ReadToEnd, latest_values, probe_end_offsets, reader_config


def _write(settings, topic, records, partition=0):
    """``records`` ([(key, value)]) in as few batches as the producer makes: records written together share one."""
    producer = Producer(producer_config(settings, "test-topic-end", **{"linger.ms": 50}))
    for key, value in records:
        producer.produce(topic, value, key, partition=partition)
    assert producer.flush(30) == 0


def _read(settings, starts, timeout_s=30.0):
    consumer = Consumer(reader_config(settings, "test-topic-end"))
    try:
        reading = ReadToEnd(consumer, starts, timeout_s)
        return [(r.partition(), r.offset(), r.value()) for records in reading for r in records], reading.ends
    finally:
        consumer.close()


@pytest.fixture
def written(settings, make_topic):
    """A topic of two partitions: fifteen records in partition 0, in two batches of ten and five; partition 1 empty."""
    topic = make_topic(partitions=2, name="end")
    _write(settings, topic, [(b"k", b"a%d" % n) for n in range(10)])
    _write(settings, topic, [(b"k", b"b%d" % n) for n in range(5)])
    return topic


@pytest.mark.parametrize("start, first", [(0, 0), (3, 3), (10, 10), (14, 14), (15, None)])
def test_a_partition_is_read_from_its_start_to_its_exact_end(settings, written, start, first):
    records, ends = _read(settings, {(written, 0): start, (written, 1): 0})
    assert [offset for _, offset, _ in records] == list(range(start, 15))
    assert ends == {(written, 0): 15, (written, 1): 0}
    if first is not None:
        assert records[0][2] == (b"a%d" % first if first < 10 else b"b%d" % (first - 10))


def test_probe_finds_the_exact_end_where_the_watermark_may_fall_short(settings, written):
    assert probe_end_offsets(settings, [(written, 0), (written, 1)]) == {(written, 0): (0, 15), (written, 1): (0, 0)}
    assert probe_end_offsets(settings, []) == {}


def test_a_read_that_cannot_reach_the_end_raises_at_its_deadline(settings):
    nowhere = settings.replace(kafka_bootstrap_servers=f"127.0.0.1:{free_port()}")
    consumer = Consumer(reader_config(nowhere, "test-topic-end"))
    try:
        reading = iter(ReadToEnd(consumer, {("somewhere", 0): 0, ("somewhere", 1): 0}, 1.0))
        started = time.monotonic()
        assert next(reading) == []  # a poll without records still yields: the caller may stop here
        with pytest.raises(UnavailableError) as raised:
            for _ in reading:
                pass
        assert 1.0 <= time.monotonic() - started < 2.0
        assert raised.value.detail == "somewhere[0], somewhere[1] not read to the end within 1s"
    finally:
        consumer.close()


def test_latest_values_keeps_the_last_record_of_each_key_and_drops_tombstones(settings, make_topic):
    topic = make_topic(partitions=2, name="latest", cleanup="compact")
    _write(settings, topic, [(b"k1", b"a"), (b"k2", b"b"), (b"k1", b"c"), (b"k2", None)], partition=0)
    _write(settings, topic, [(b"k3", b"d"), (b"k4", None), (b"k3", b"e")], partition=1)
    assert latest_values(settings, topic, 30, "test-topic-end") == {b"k1": b"c", b"k3": b"e"}


def test_latest_values_of_a_missing_topic_is_an_error_not_an_empty_topic(settings, unique):
    with pytest.raises(UnavailableError, match="missing"):
        latest_values(settings, f"missing-{unique}", 30, "test-topic-end")
