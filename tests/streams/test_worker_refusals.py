"""An event Kafka refuses for good becomes a dead letter: the worker lane goes on (real tansu), on both engines."""

import asyncio
import threading

from guardstream.catalog import TOPICS
from guardstream.schemas.codec import Codec
from guardstream.schemas.dead_letters import MAX_PAYLOAD
from guardstream.schemas.registry import FileRegistry
from guardstream.streams.device_feed import DeviceFeed
from guardstream.streams.fences import FenceFeed
from guardstream.streams.metrics import WorkerMetrics
from guardstream.streams.worker import InFlight, Worker, lanes

from support.faust_lanes import bulk_lane
from support.processes import collect, header


HUGE = b"e" * 1_100_000  # over the producers' limits (librdkafka's message.max.bytes, aiokafka's max_request_size)


def test_an_event_over_the_producers_limit_is_a_dead_letter_and_the_next_one_is_written(applied, unique):
    codec = Codec(FileRegistry.load())
    fences = FenceFeed(applied, codec, lambda index, seconds: None)
    bulk = lanes(applied)[1]
    worker = Worker(applied, codec, WorkerMetrics.create(), bulk, fences, DeviceFeed(applied, codec), threading.Event())
    batch = InFlight([])
    worker._produce(batch, TOPICS.events_low.name, HUGE, f"big-{unique}".encode())
    worker._produce(batch, TOPICS.events_low.name, b"fine", f"small-{unique}".encode())
    batch.sealed = True
    assert worker.producer.flush(30) == 0
    assert batch.remaining == 0
    worker._commit_acknowledged()  # raises the lane's failure, if there were one

    _assert_refused_and_next_written(applied, codec, unique)
    worker.consumer.close()


def test_faust_engine_an_event_over_the_producers_limit_is_a_dead_letter_and_the_next_one_is_written(applied,
                                                                                                        unique):
    async def write() -> None:
        async with bulk_lane(applied) as lane:
            await lane.send_out(TOPICS.events_low.name, HUGE, f"big-{unique}".encode())
            await lane.send_out(TOPICS.events_low.name, b"fine", f"small-{unique}".encode())
    asyncio.run(write())  # a write that failed for the process, not for the record, would have raised
    _assert_refused_and_next_written(applied, Codec(FileRegistry.load()), unique)


def _assert_refused_and_next_written(applied, codec, unique):
    [letter] = collect(applied, TOPICS.dlq_validate.name, lambda r: r.key() == f"big-{unique}".encode(), 1)
    record = codec.decode(letter.value())[1]
    assert (record["stage"], record["reason"]) == ("route", "produce_refused")
    assert record["source_topic"] == TOPICS.events_low.name and record["payload"] == HUGE[:MAX_PAYLOAD]
    assert header(letter, "guardstream.payload.bytes") == b"1100000"
    [fine] = collect(applied, TOPICS.events_low.name, lambda r: r.key() == f"small-{unique}".encode(), 1)
    assert fine.value() == b"fine"


def test_faust_engine_a_refusal_the_broker_answers_after_queueing_is_a_dead_letter(applied, unique):
    """The write's outcome as aiokafka reports a broker's refusal (tansu does not refuse by size, so the
    answer is set on the future here); the dead letter goes to the real broker."""
    from aiokafka.errors import MessageSizeTooLargeError

    async def refuse() -> None:
        async with bulk_lane(applied) as lane:
            answer = asyncio.get_running_loop().create_future()
            answer.set_exception(MessageSizeTooLargeError())
            lane._delivered(TOPICS.events_low.name, b"late", f"late-{unique}".encode(), answer)
    asyncio.run(refuse())
    [letter] = collect(applied, TOPICS.dlq_validate.name, lambda r: r.key() == f"late-{unique}".encode(), 1)
    record = Codec(FileRegistry.load()).decode(letter.value())[1]
    assert (record["stage"], record["reason"], record["payload"]) == ("route", "produce_refused", b"late")
