"""An event Kafka refuses for good becomes a dead letter: the worker lane goes on (real tansu)."""

import threading

from guardstream.catalog import TOPICS
from guardstream.schemas.codec import Codec
from guardstream.schemas.dead_letters import MAX_PAYLOAD
from guardstream.schemas.registry import FileRegistry
from guardstream.streams.device_feed import DeviceFeed
from guardstream.streams.fences import FenceFeed
from guardstream.streams.metrics import WorkerMetrics
from guardstream.streams.worker import InFlight, Worker, lanes

from support.processes import collect, header


def test_an_event_over_the_producers_limit_is_a_dead_letter_and_the_next_one_is_written(applied, unique):
    codec = Codec(FileRegistry.load())
    fences = FenceFeed(applied, codec, lambda index, seconds: None)
    bulk = lanes(applied)[1]
    worker = Worker(applied, codec, WorkerMetrics.create(), bulk, fences, DeviceFeed(applied, codec), threading.Event())
    batch = InFlight([])
    huge = b"e" * 1_100_000  # over librdkafka's message.max.bytes: refused before it is queued
    worker._produce(batch, TOPICS.events_low.name, huge, f"big-{unique}".encode())
    worker._produce(batch, TOPICS.events_low.name, b"fine", f"small-{unique}".encode())
    batch.sealed = True
    assert worker.producer.flush(30) == 0
    assert batch.remaining == 0
    worker._commit_acknowledged()  # raises the lane's failure, if there were one

    [letter] = collect(applied, TOPICS.dlq_validate.name, lambda r: r.key() == f"big-{unique}".encode(), 1)
    record = codec.decode(letter.value())[1]
    assert (record["stage"], record["reason"]) == ("route", "produce_refused")
    assert record["source_topic"] == TOPICS.events_low.name and record["payload"] == huge[:MAX_PAYLOAD]
    assert header(letter, "guardstream.payload.bytes") == b"1100000"
    [fine] = collect(applied, TOPICS.events_low.name, lambda r: r.key() == f"small-{unique}".encode(), 1)
    assert fine.value() == b"fine"
    worker.consumer.close()
