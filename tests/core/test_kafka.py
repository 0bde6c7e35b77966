"""The Kafka client mechanics of the core: a record handed to a full producer queue, an error's text and code.

How :func:`produce` waits is a table over a fake producer and clock; against the session's
tansu broker, a queue of one record is waited out, and one whose broker does not exist
raises at the deadline.
"""

import math
import time
from types import SimpleNamespace

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer

from guardstream import kafka
from guardstream.errors import BackpressureError
from guardstream.infra.stack import free_port
from guardstream.kafka import LIBRDKAFKA_LOGGER, QUEUE_WAIT_S, error_code, error_text, produce, producer_config
from guardstream.topic_end import ReadToEnd, reader_config


@pytest.mark.parametrize("exc, text, code", [
    (KafkaException(KafkaError(KafkaError._TRANSPORT, "broker down")), "broker down", KafkaError._TRANSPORT),
    (KafkaException(KafkaError(KafkaError.GROUP_ID_NOT_FOUND)), "Broker: The group id does not exist",
     KafkaError.GROUP_ID_NOT_FOUND),
    (KafkaException(KafkaError(KafkaError._MSG_TIMED_OUT)), "Local: Message timed out", KafkaError._MSG_TIMED_OUT),
    (KafkaException("plain words"), "plain words", None),
    (KafkaException(), "", None),
])
def test_error_text_and_code(exc, text, code):
    assert error_text(exc) == text
    assert error_code(exc) == code


def _read_all(settings, topic, partitions=1):
    consumer = Consumer(reader_config(settings, "test-kafka-read"))
    try:
        return [r for records in ReadToEnd(consumer, {(topic, p): 0 for p in range(partitions)}, 30)
                for r in records]
    finally:
        consumer.close()


def test_produce_hands_over_partition_headers_timestamp_and_delivery_callback(settings, make_topic):
    topic = make_topic(partitions=2, name="core")
    delivered = []
    producer = Producer(producer_config(settings, "test-kafka"))
    produce(producer, topic, b"v1", b"k1", partition=1, headers=[("h", b"x")], timestamp=1_700_000_000_000,
            on_delivery=lambda error, message: delivered.append((error, message.partition())))
    produce(producer, topic, None, b"k2", partition=0)  # a tombstone
    assert producer.flush(30) == 0
    assert delivered == [(None, 1)]
    by_key = {r.key(): r for r in _read_all(settings, topic, partitions=2)}
    assert (by_key[b"k1"].value(), by_key[b"k1"].partition(), by_key[b"k1"].headers()) == (b"v1", 1, [("h", b"x")])
    assert by_key[b"k1"].timestamp()[1] == 1_700_000_000_000
    assert (by_key[b"k2"].value(), by_key[b"k2"].partition()) == (None, 0)


def test_a_full_queue_is_waited_out_while_kafka_takes_the_records(settings, make_topic):
    topic = make_topic(name="core")
    producer = Producer(producer_config(settings, "test-kafka", **{"queue.buffering.max.messages": 1,
                                                                   "linger.ms": 0}))
    delivered = []
    for n in range(20):  # each record after the first finds the queue full until the one before is acknowledged
        produce(producer, topic, b"%d" % n, on_delivery=lambda error, message: delivered.append(error))
    assert producer.flush(30) == 0
    assert delivered == [None] * 20
    assert [r.value() for r in _read_all(settings, topic)] == [b"%d" % n for n in range(20)]


class QueueOfNoRoom:
    """A producer whose queue is full for the first ``full_for`` attempts; each poll moves a fake clock."""

    def __init__(self, full_for: float) -> None:
        self.full_for, self.attempts, self.polls, self.clock, self.taken = full_for, 0, 0, 0.0, []

    def produce(self, topic, value, key, **options):
        self.attempts += 1
        if self.attempts <= self.full_for:
            raise BufferError("Local: Queue full")
        self.taken.append((topic, value, key, options))

    def poll(self, timeout):
        self.polls += 1
        self.clock += timeout


@pytest.mark.parametrize("full_for, wait_s, polls, raises", [
    (0, 0.0, 0, False),  # room at once: no wait, whatever the deadline
    (3, QUEUE_WAIT_S, 3, False),  # delivery reports served between attempts until there is room
    (math.inf, 0.0, 0, True),  # no wait at all: the first full queue raises
    (math.inf, 0.12, 3, True),  # raises at the first attempt at or after the deadline (3 polls of 0.05 s)
    (10_000, math.inf, 10_000, False),  # no deadline: 500 s of polls, then room
])
def test_produce_polls_until_room_or_the_deadline(monkeypatch, full_for, wait_s, polls, raises):
    producer = QueueOfNoRoom(full_for)
    monkeypatch.setattr(kafka, "time", SimpleNamespace(monotonic=lambda: producer.clock))
    if raises:
        with pytest.raises(BackpressureError):
            produce(producer, "t", b"v", b"k", wait_s=wait_s)
        assert producer.taken == []
    else:
        produce(producer, "t", b"v", b"k", wait_s=wait_s)
        assert producer.taken == [("t", b"v", b"k", {"partition": -1, "on_delivery": None, "timestamp": 0,
                                                      "headers": None})]
    assert producer.polls == polls


@pytest.mark.parametrize("wait_s", [0.0, 0.3])
def test_a_queue_that_stays_full_raises_backpressure_after_the_wait(wait_s):
    # a queue of one record, holding one for a broker that does not exist
    producer = Producer({"bootstrap.servers": f"127.0.0.1:{free_port()}", "queue.buffering.max.messages": 1,
                         "message.timeout.ms": 0, "logger": LIBRDKAFKA_LOGGER})
    produce(producer, "nowhere", b"first")
    started = time.monotonic()
    with pytest.raises(BackpressureError) as raised:
        produce(producer, "nowhere", b"second", wait_s=wait_s)
    assert wait_s <= time.monotonic() - started < wait_s + 0.5
    assert isinstance(raised.value.__cause__, BufferError)
    assert raised.value.reason == "backpressure" and "nowhere" in raised.value.detail
    producer.purge()
