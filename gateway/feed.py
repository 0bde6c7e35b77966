"""The gateway's Kafka side: the push consumer thread, resume replays and alert actions.

Each gateway instance reads every partition of the priority topics and of
``alerts.actions`` with its own consumer, assigned (no group, no commits) at
the end of each partition when it starts, so instances scale out behind a
load balancer without sharing anything. The thread hands decoded batches to
the asyncio hub with ``loop.call_soon_threadsafe``; at most :data:`IN_FLIGHT`
batches wait for the event loop, so a busy loop slows the consumer instead of
piling records up in memory.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import msgspec
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from guardstream.catalog import TOPICS
from guardstream.errors import GuardstreamError, UnavailableError
from guardstream.gateway.metrics import GatewayMetrics
from guardstream.gateway.resume import ReplayPlan, plan_replay
from guardstream.kafka import common_config, fetch_wait_ms, produce, producer_config, take_batch
from guardstream.lifecycle import start_guarded
from guardstream.records import ALERT_ACTION
from guardstream.schemas.codec import Codec
from guardstream.settings import Settings
from guardstream.topic_end import probe_end_offsets

log = logging.getLogger("guardstream.gateway.feed")
TP = tuple[str, int]
FEED_TOPICS = tuple(t.name for t in TOPICS.events()) + (TOPICS.alerts_actions.name,)
# Read by a consumer of their own, so a flood on the other priority topics never
# queues in front of an alert or an alert's change of status.
URGENT_TOPICS = (TOPICS.events_critical.name, TOPICS.alerts_actions.name)
FEED_LANES = (("urgent", URGENT_TOPICS), ("bulk", tuple(t for t in FEED_TOPICS if t not in URGENT_TOPICS)))
IN_FLIGHT = 8
BATCH = 200
REPLAY_STALL_S = 15.0


class FeedEvent(msgspec.Struct, frozen=True):
    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None
    schema: str
    record: dict[str, Any]

    @property
    def tp(self) -> TP:
        return (self.topic, self.partition)


def decode(codec: Codec, metrics: GatewayMetrics, message: Message) -> FeedEvent | None:
    """The event of a record, or None (counted) when it does not decode."""
    value = message.value()
    if value is None:
        metrics.feed_refused.labels("empty_value").inc()
        return None
    try:
        schema, record = codec.decode(value)
    except GuardstreamError as exc:
        metrics.feed_refused.labels(exc.reason).inc()
        return None
    kind, ts = message.timestamp()
    return FeedEvent(message.topic(), message.partition(), message.offset(), ts if kind else None, schema, record)


def _consumer(settings: Settings, client_id: str, **overrides: Any) -> Consumer:
    # assign() only: the group id is never joined and nothing is committed under it
    return Consumer(common_config(settings, client_id) | {
        "group.id": "guardstream-gateway", "enable.auto.commit": False, "enable.auto.offset.store": False,
        "fetch.wait.max.ms": fetch_wait_ms(settings), **overrides})


def feed_partitions(consumer: Consumer, topics: tuple[str, ...] = FEED_TOPICS) -> list[TP]:
    try:
        metadata = consumer.list_topics(timeout=10)
    except KafkaException as exc:
        raise UnavailableError(f"Kafka unreachable: {exc}") from exc
    out = []
    for topic in topics:
        described = metadata.topics.get(topic)
        if described is None or described.error is not None:
            raise UnavailableError(f"topic {topic} is missing: run `guardstream topics apply`")
        out += [(topic, p) for p in sorted(described.partitions)]
    return out


class PushFeed:
    """The live consumer; :meth:`open` returns the positions it starts at, :meth:`run` is the thread."""

    def __init__(self, settings: Settings, codec: Codec, metrics: GatewayMetrics,
                 on_batch: Callable[[list[FeedEvent]], None], loop: asyncio.AbstractEventLoop, stop: threading.Event,
                 topics: tuple[str, ...] = FEED_TOPICS, name: str = "feed") -> None:
        self.settings, self.codec, self.metrics = settings, codec, metrics
        self.on_batch, self.loop, self.stop = on_batch, loop, stop
        self.topics, self.name = topics, name
        self.consumer = _consumer(settings, f"guardstream-gateway-{name}")
        self._slots = threading.Semaphore(IN_FLIGHT)
        self._thread: threading.Thread | None = None
        self.assigned = False

    @property
    def running(self) -> bool:
        return self.assigned and self._thread is not None and self._thread.is_alive()

    def start(self, on_failure: Callable[[BaseException], None]) -> None:
        """Run :meth:`run` in a daemon thread; ``on_failure`` hears of an error that ended it."""
        self._thread = start_guarded(f"gateway-{self.name}", self.run, on_failure, log, "push consumer")

    def join(self, timeout_s: float) -> None:
        self.stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def open(self) -> dict[TP, int]:
        partitions = feed_partitions(self.consumer, self.topics)
        # tansu's high watermark can sit below the real end: probe the exact end of each partition
        ends = {tp: end for tp, (_, end) in probe_end_offsets(self.settings, partitions).items()}
        self.consumer.assign([TopicPartition(t, p, ends[(t, p)]) for t, p in partitions])
        self.assigned = True
        return ends

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                batch = []
                per_topic: dict[str, int] = {}  # counted once a batch: a labelled inc per record cost 1.8 us
                for message in take_batch(self.consumer, BATCH, 0.1):
                    if message.error() is not None:
                        self._on_error(message.error())
                        continue
                    topic = message.topic()
                    per_topic[topic] = per_topic.get(topic, 0) + 1
                    event = decode(self.codec, self.metrics, message)
                    if event is not None:
                        batch.append(event)
                for topic, n in per_topic.items():
                    self.metrics.feed_records.labels(topic).inc(n)
                if batch:
                    self._hand_over(batch)
        finally:
            self.consumer.close()

    def _on_error(self, error: KafkaError) -> None:
        if error.code() == KafkaError._PARTITION_EOF:
            return
        if error.fatal() or not error.retriable():
            raise UnavailableError(f"push consumer: {error.str()}")
        log.warning("push consumer: %s", error.str())

    def _hand_over(self, batch: list[FeedEvent]) -> None:
        while not self._slots.acquire(timeout=0.5):
            if self.stop.is_set():
                return
        self.loop.call_soon_threadsafe(self._deliver, batch)

    def _deliver(self, batch: list[FeedEvent]) -> None:
        try:
            self.on_batch(batch)
        finally:
            self._slots.release()


class ReplayReader:
    """A short-lived consumer reading a resume's ranges; call from a worker thread."""

    def __init__(self, settings: Settings, codec: Codec, metrics: GatewayMetrics, resume: Mapping[TP, int],
                 live: Mapping[TP, int]) -> None:
        self.codec, self.metrics = codec, metrics
        self.consumer = _consumer(settings, "guardstream-gateway-replay", **{"enable.partition.eof": True})
        try:
            oldest = {tp: self._oldest(tp) for tp in resume if tp in live}
            self.plan: ReplayPlan = plan_replay(resume, live, oldest)
            self.pending = {tp: end for tp, (_, end) in self.plan.ranges.items()}
            if self.pending:
                self.consumer.assign([TopicPartition(t, p, first) for (t, p), (first, _) in self.plan.ranges.items()])
        except BaseException:
            self.consumer.close()
            raise
        self._progress = time.monotonic()

    def _oldest(self, tp: TP) -> int:
        try:
            low, _ = self.consumer.get_watermark_offsets(TopicPartition(*tp), timeout=10, cached=False)
        except KafkaException as exc:
            raise UnavailableError(f"watermarks of {tp[0]}[{tp[1]}]: {exc}") from exc
        return low

    def chunk(self, limit: int = 500) -> list[FeedEvent] | None:
        """The next events of the ranges, in offset order per partition; None when all are read."""
        out: list[FeedEvent] = []
        while self.pending and not out:
            for message in self.consumer.consume(limit, 0.2):
                tp = (message.topic(), message.partition())
                end = self.pending.get(tp)
                error = message.error()
                if end is None:
                    continue
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF and message.offset() >= end:
                        del self.pending[tp]
                    elif error.code() != KafkaError._PARTITION_EOF and not error.retriable():
                        raise UnavailableError(f"replay of {tp[0]}[{tp[1]}]: {error.str()}")
                    continue
                if message.offset() >= end:
                    del self.pending[tp]
                    continue
                self._progress = time.monotonic()
                if message.offset() >= end - 1:
                    del self.pending[tp]
                event = decode(self.codec, self.metrics, message)
                if event is not None:
                    out.append(event)
            if not out and time.monotonic() - self._progress > REPLAY_STALL_S:
                raise UnavailableError(f"replay stalled on {sorted(self.pending)}")
        return out if out or self.pending else None

    def close(self) -> None:
        self.consumer.close()


class ActionWriter:
    """Writes guardstream.AlertAction records to ``alerts.actions`` and awaits Kafka's acknowledgement."""

    def __init__(self, settings: Settings, codec: Codec, metrics: GatewayMetrics, timeout_s: float = 10.0) -> None:
        self.codec, self.metrics, self.timeout_s = codec, metrics, timeout_s
        self.producer = Producer(producer_config(settings, "guardstream-gateway-actions", **{"linger.ms": 0}))
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="gateway-actions", daemon=True)
        self._poller.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.producer.poll(0.1)

    async def write(self, record: dict[str, Any]) -> None:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def settle(error: KafkaError | None, _message: object) -> None:
            loop.call_soon_threadsafe(_settle, done, error)

        value = self.codec.encode(ALERT_ACTION, record)
        try:
            # wait_s 0: on the event loop a full queue is an error at once (BackpressureError), never a wait
            produce(self.producer, TOPICS.alerts_actions.name, value, record["alert_event_id"].encode(),
                    on_delivery=settle, wait_s=0)
        except KafkaException as exc:
            raise UnavailableError(f"alert action not queued: {exc}") from exc
        try:
            await asyncio.wait_for(done, self.timeout_s)
        except TimeoutError as exc:
            raise UnavailableError(f"Kafka did not acknowledge the alert action within {self.timeout_s:.0f}s") from exc
        self.metrics.alert_actions.labels(record["action"]).inc()

    def close(self) -> None:
        self.producer.flush(10)
        self._stop.set()
        self._poller.join(5)


def _settle(future: asyncio.Future[None], error: KafkaError | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(UnavailableError(f"alert action refused by Kafka: {error.str()}"))
