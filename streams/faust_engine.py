"""``guardstream worker --engine faust``: the same worker as Faust agents.

A :class:`faust.App` (consumer group ``guardstream-worker-faust``) runs two agents,
the two lanes of the batch engine: ``alerts`` on raw.alert (small batches,
no per-device state) and ``bulk`` on the other raw topics. Each agent takes
batches from its stream (``stream.take_events``, sized like the batch
engine's) and hands them to the same pure ``pipeline.process``; what it
returns is written with Faust's producer (``app.producer``).

Delivery guarantee: at least once, as with the batch engine. A batch's events
and dead letters are handed to the producer before its events are acked; its
changed per-device state is staged and written when Faust begins a commit
(``CheckpointSensor``), and Faust's commit flushes the producer (every write
acknowledged) before it commits the acked offsets. A write that fails for
good ends the process before that commit (``written``). A crash replays what
was processed after the last commit against newer state: the same event ids,
and the geofence state machine ignores fixes it has already applied.

Per-device state is the batch engine's: the ``worker-state`` changelog of the
catalog (``state_store.py``), read back when partitions are assigned, written
here with Faust's producer. Not Faust tables: a table's changelog is a topic
Faust names and partitions like one source topic, while the bulk lane's state
comes from five raw topics (the changelog key names the raw topic, the
partition is the raw record's). Both engines read and write the same
changelog, so a deployment can switch engine without losing state.

As on the batch engine, the silent-device timer runs ``rules.silent_check``: devices
silent past ``GUARDSTREAM_WORKER_DEVICE_HORIZON_S`` are forgotten and their state
tombstoned in the changelog; and an event Kafka refuses for good (over the request
size, or a broker answer no retry changes) goes on as a ``produce_refused`` dead letter.

What differs from the batch engine (README, "Two engines"): at least once only
(``GUARDSTREAM_WORKER_EXACTLY_ONCE`` is refused at start); both lanes share
one consumer, so a full bulk stream buffer can hold back raw.alert's fetches;
the engine has a consumer group of its own, moved at start to where the batch
engine's groups committed when they are further on (run one engine at a
time); a batch is what arrived within the wait, not "as soon as one record is
there"; Faust's Kafka driver waits up to 1.5 s per fetch (fixed in the
driver), so on the embedded broker a lone record can wait longer before it is
taken; PLAINTEXT brokers only.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import signal
import tempfile
import time
from typing import Any

import faust
from faust.exceptions import ProducerSendError
from aiokafka.errors import BrokerResponseError
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from guardstream.catalog import TOPICS
from guardstream.errors import ConfigError
from guardstream.kafka import consumer_config, error_code, session_timeouts
from guardstream.records import DEVICE_ALERT
from guardstream.schemas.codec import Codec
from guardstream.settings import Settings
from guardstream.streams.device_feed import DeviceFeed
from guardstream.streams.fences import FenceFeed
from guardstream.streams.metrics import WorkerMetrics
from guardstream.streams.outputs import OutRecord, count, is_event, out_records, refused_letter, stage_changes
from guardstream.streams.pipeline import RawRecord, State, process
from guardstream.streams.routing import emit_for
from guardstream.streams.rules import load_rules, silent_check
from guardstream.streams.state_store import StateStore
from guardstream.streams.validation import Policy
from guardstream.streams.worker import GROUP, SILENT_CHECK_S, Lane, check_horizon, lanes, now_ms, params_from

log = logging.getLogger("guardstream.worker")
FAUST_GROUP = f"{GROUP}-faust"  # not the batch engine's groups: see continue_from_batch_engine

# Tuning, measured with ``bench/stream_worker.py --faust-tuning`` (each alternative against these, one at a
# time, in the same run; README, "Two engines", has the figures): none beat these beyond the noise.
STREAM_BUFFER_MAXSIZE = 16384  # Faust's default 4096 and 65536: no better (213-282 and 214-287 µs against 199-239)
PRODUCER_LINGER_MS = 20  # 5 ms and 50 ms: no better (232-287, 247-279 µs); costs an output up to 20 ms
COMMIT_INTERVAL_S = 1.0  # Faust's default 2.8 s; shorter: less to replay after a crash, state written oftener
# uncompressed: 223-239 µs against 294-295 with lz4 (the batch engine's, compressed in librdkafka);
# reading the bridge's lz4 batches needs aiokafka's lz4 extra all the same
PRODUCER_COMPRESSION = None
STREAM_WAIT_EMPTY = True  # a rebalance waits for the batch in hand (Faust's default)
USE_UVLOOP = True  # when installed (the ``faust`` extra): without it 259-319 µs against 199-239 with


# Faust's own exactly_once (processing_guarantee) puts a write in the transaction of the partition
# it goes to among the topics the app consumes (its TransactionManager.send); the worker's events,
# dead letters and changelog are none of them. README, "Two engines".
EXACTLY_ONCE_REFUSED = ("GUARDSTREAM_WORKER_ENGINE=faust is at least once only (Faust's exactly_once covers "
                        "no topic the app does not consume): exactly once needs GUARDSTREAM_WORKER_ENGINE=batch")


def app_config(settings: Settings, datadir: str) -> dict[str, Any]:
    """The :class:`faust.App` settings from guardstream's (session timeouts as the batch engine's)."""
    if settings.kafka_security_protocol != "plaintext":
        raise ConfigError("KAFKA_SECURITY_PROTOCOL",
                          "the faust engine speaks PLAINTEXT only: use GUARDSTREAM_WORKER_ENGINE=batch")
    if settings.worker_exactly_once:
        raise ConfigError("GUARDSTREAM_WORKER_EXACTLY_ONCE", EXACTLY_ONCE_REFUSED)
    session_ms, heartbeat_ms = session_timeouts(settings)
    return {
        "broker": [f"kafka://{hp.strip()}" for hp in settings.kafka_bootstrap_servers.split(",")],
        "key_serializer": "raw", "value_serializer": "raw",
        "broker_session_timeout": session_ms / 1000, "broker_heartbeat_interval": heartbeat_ms / 1000,
        "broker_commit_interval": COMMIT_INTERVAL_S,
        "consumer_auto_offset_reset": "earliest",
        # topics come from the catalog and exist (guardstream topics apply): Faust creates none,
        # not even its leader-election topic
        "topic_allow_declare": False, "topic_disable_leader": True,
        "stream_buffer_maxsize": STREAM_BUFFER_MAXSIZE,
        "stream_wait_empty": STREAM_WAIT_EMPTY,
        "producer_linger_ms": PRODUCER_LINGER_MS, "producer_acks": -1,
        "producer_compression_type": PRODUCER_COMPRESSION,
        "web_enabled": False,  # /metrics, /healthz and /readyz are guardstream's own (observability.serve)
        "autodiscover": False, "store": "memory://", "datadir": datadir,
    }


def offsets_ahead(own: dict[tuple[str, int], int], other: dict[tuple[str, int], int]) -> dict[tuple[str, int], int]:
    """The committed offsets of the other engine's groups that are ahead of this engine's own."""
    return {tp: offset for tp, offset in other.items() if offset >= 0 and offset > own.get(tp, -1)}


def continue_from_batch_engine(settings: Settings) -> int:
    """Move this engine's group to where the batch engine's groups committed, where they are ahead.

    The engines cannot share a group: a group's members must speak one protocol (librdkafka's
    "range" and Faust's "faust"), and the embedded broker keeps a group's protocol even after its
    last member left. So the Faust engine has its own group, and starts where the engine that
    ran last stopped (offsets only grow while one engine runs at a time). Returns how many
    partitions moved."""
    own_consumer = Consumer(consumer_config(settings, "guardstream-worker-faust-offsets", FAUST_GROUP))
    try:
        moved: list[TopicPartition] = []
        for lane in lanes(settings):
            metadata = own_consumer.list_topics(timeout=10).topics
            tps = [TopicPartition(t, p) for t in lane.topics if t in metadata for p in metadata[t].partitions]
            if not tps:
                continue
            batch = Consumer(consumer_config(settings, "guardstream-worker-faust-offsets", lane.group))
            try:
                theirs = {(tp.topic, tp.partition): tp.offset for tp in batch.committed(tps, timeout=10)}
            finally:
                batch.close()
            mine = {(tp.topic, tp.partition): tp.offset for tp in own_consumer.committed(tps, timeout=10)}
            moved += [TopicPartition(t, p, o) for (t, p), o in offsets_ahead(mine, theirs).items()]
        if moved:
            try:
                own_consumer.commit(offsets=moved, asynchronous=False)
            except KafkaException as exc:
                # only a group without members takes a commit from outside it: a Faust worker
                # already running has made the move when it started
                if error_code(exc) not in (KafkaError.UNKNOWN_MEMBER_ID, KafkaError.ILLEGAL_GENERATION,
                                           KafkaError.REBALANCE_IN_PROGRESS):
                    raise
                log.info("group %s has members; its offsets stay as they are", FAUST_GROUP)
                return 0
        return len(moved)
    finally:
        own_consumer.close()


def written(future: asyncio.Future) -> None:
    """A write's outcome. Retries are the Kafka client's, so a failure here is final: leave at once,
    before Faust's commit (which awaits this write) can commit the offsets of what it carried."""
    if not future.cancelled() and future.exception() is not None:
        log.error("a write failed: %r; leaving without committing", future.exception())
        logging.shutdown()
        os._exit(1)


def refused(error: BaseException | None) -> bool:
    """Kafka refused this record for good (too large, invalid ...): a broker answer that retrying
    cannot change, or the producer's own size check. Retries are the client's; anything else is final
    for the process, not for the record."""
    return isinstance(error, BrokerResponseError) and not error.retriable


def raw_record(event: Any) -> RawRecord:
    m = event.message
    return RawRecord(m.topic, m.partition, m.offset, m.key, m.value, dict(m.headers or ()),
                     int(m.timestamp * 1000))


class FaustLane:
    """One agent's state and its batch step: process, write, flush, count."""

    def __init__(self, app: faust.App, settings: Settings, codec: Codec, metrics: WorkerMetrics, lane: Lane,
                 fences: FenceFeed, devices: DeviceFeed) -> None:
        self.app, self.settings, self.codec, self.metrics, self.lane = app, settings, codec, metrics, lane
        self.fences, self.devices = fences, devices
        self.rules = load_rules(settings.rules_file)
        self.horizon_ms = check_horizon(settings.worker_device_horizon_s, self.rules)
        self.params = params_from(settings)
        self.store = StateStore(settings, None)
        self.state = State(fences=fences.index, devices=self.store.values["geofence"],
                           rules=self.store.values["rules"])
        self.assigned: set[tuple[str, int]] = set()
        self.ready_since: float | None = None
        self._alerted: dict[str, int] = {}

    def ready(self) -> tuple[bool, str]:
        if not self.fences.loaded.is_set():
            return False, "geofences not loaded yet"
        if not self.devices.loaded.is_set():
            return False, "device registry not loaded yet"
        if self.ready_since is None:
            return False, "no partitions assigned yet"
        return True, ""

    async def on_assigned(self, assigned: set[tuple[str, int]]) -> None:
        mine = {tp for tp in assigned if tp[0] in self.lane.topics}
        new = mine - self.assigned
        self.assigned |= new
        restored = 0
        if self.lane.stateful and new:
            restored = await asyncio.get_running_loop().run_in_executor(None, self.store.restore, new)
        self.ready_since = self.ready_since or time.monotonic()
        log.info("%s: assigned %d partition(s); restored %d state entries", self.lane.name, len(new), restored)

    def on_revoked(self, revoked: set[tuple[str, int]]) -> None:
        self.assigned -= revoked
        self.store.forget(self.assigned)

    async def handle(self, records: list[RawRecord], removed: frozenset[str]) -> None:
        started = time.perf_counter()
        self.state.fences = self.fences.index
        policy = Policy(now_ms=now_ms(), default_tenant=self.settings.tenant_default)
        outcome = process(records, self.state, policy, self.rules, self.params, removed, self.devices.registry)
        for out in out_records(outcome, self.codec, policy.now_ms):
            await self.send_out(out.topic, out.value, out.key, out.headers)
        stage_changes(self.store, outcome, records)  # to the changelog at the next commit (CheckpointSensor)
        count(self.metrics, self.store, outcome, records, started, now_ms())
        self.metrics.registry_devices.set(len(self.devices.registry.entries))

    async def send_out(self, topic: str, value: bytes, key: bytes | None, headers: list | None = None) -> None:
        """Hand one output to the producer. An event Kafka refuses for good, before it is queued (over
        the request size) or when the broker answers, goes on as a dead letter (``produce_refused``)."""
        try:
            sent = await self.app.producer.send(topic, key, value, None, None, headers)
        except ProducerSendError as exc:
            if not (is_event(topic) and refused(exc.__cause__)):
                raise
            await self.send_out(*self.refused_output(topic, value, key, exc.__cause__))
            return
        if is_event(topic):
            sent.add_done_callback(functools.partial(self._delivered, topic, value, key))
        else:
            sent.add_done_callback(written)

    def _delivered(self, topic: str, value: bytes, key: bytes | None, future: asyncio.Future) -> None:
        error = None if future.cancelled() else future.exception()
        if error is None or not refused(error):
            written(future)
            return
        # the dead letter follows on the producer's buffer; Faust's commit that flushes it may
        # already be under way (README, "Two engines")
        letter = self.refused_output(topic, value, key, error)
        message = self.app.topic(letter.topic).as_future_message(key=letter.key, value=letter.value,
                                                                 headers=letter.headers)
        message.add_done_callback(written)
        self.app.producer.send_soon(message)

    def refused_output(self, topic: str, value: bytes, key: bytes | None, error: BaseException) -> OutRecord:
        log.warning("Kafka refused an event for %s: %r; sending it on as a dead letter", topic, error)
        self.metrics.dead_letters.labels("produce_refused").inc()
        return refused_letter(self.codec, topic, value, key, repr(error), now_ms())

    def write_staged(self, state_topic: Any) -> None:
        """Hand every staged state change to the producer's buffer (Faust's commit flushes it)."""
        for key, value, partition in self.store.take_staged():
            message = state_topic.as_future_message(key=key, value=value, partition=partition)
            message.add_done_callback(written)
            self.app.producer.send_soon(message)

    def registered(self) -> frozenset[str]:
        """Devices watched however long they are silent: the registry's enabled ones."""
        return frozenset(device for device, entry in self.devices.registry.entries.items() if entry.enabled)

    async def check_silent(self) -> None:
        """The batch engine's check (``rules.silent_check``): devices past the horizon forgotten and
        their state tombstoned in the changelog, DEVICE_SILENT alerts for the rest."""
        check = silent_check(self.state.last_seen, now_ms(), self._alerted, self.horizon_ms, self.registered(),
                             self.rules)
        for device in check.forgotten:
            del self.state.last_seen[device]
            self._alerted.pop(device, None)
        for key, value, partition in self.store.drop(check.forgotten):
            sent = await self.app.producer.send(TOPICS.worker_state.name, key, value, partition, None, None)
            sent.add_done_callback(written)
        self.metrics.devices.labels("last_seen").set(len(self.state.last_seen))
        self._alerted.update(check.alerted)
        for alert in check.alerts:
            emit = emit_for(DEVICE_ALERT, alert)
            await self.send_out(emit.topic, self.codec.encode(emit.schema, emit.value), emit.key.encode())


class CheckpointSensor(faust.Sensor):
    """Writes the changed per-device state when Faust begins a commit, so state reaches the
    changelog once per device per commit, and before the offsets it covers (the commit flushes
    the producer first): the batch engine's checkpoint, at Faust's commit interval."""

    def __init__(self, lane: FaustLane, state_topic: Any) -> None:
        super().__init__()
        self.lane, self.state_topic = lane, state_topic

    def on_commit_initiated(self, consumer: Any) -> Any:
        self.lane.write_staged(self.state_topic)


def build(settings: Settings, codec: Codec, metrics: WorkerMetrics, fences: FenceFeed, devices: DeviceFeed,
          datadir: str) -> tuple[faust.App, list[FaustLane]]:
    """The app, its two agents and the silent-device timer."""
    app = faust.App(FAUST_GROUP, **app_config(settings, datadir))
    alerts, bulk = (FaustLane(app, settings, codec, metrics, lane, fences, devices) for lane in lanes(settings))

    def agent_for(lane: FaustLane, removed_fences: bool) -> None:
        topic = app.topic(*lane.lane.topics, key_serializer="raw", value_serializer="raw")

        async def run_lane(stream: Any) -> None:
            for feed in (fences, devices):
                await asyncio.get_running_loop().run_in_executor(None, feed.loaded.wait)
            async for events in stream.take_events(lane.lane.batch_max, lane.lane.wait_s):
                removed = fences.take_removed() if removed_fences else frozenset()
                try:
                    await lane.handle([raw_record(e) for e in events], removed)
                except Exception:
                    # take_events acks a batch however its step ends, and Faust commits acked offsets
                    # on the way down: a failed write leaves at once, committing nothing more
                    log.exception("%s lane failed", lane.lane.name)
                    logging.shutdown()
                    os._exit(1)
        run_lane.__name__ = f"{lane.lane.name}_lane"
        app.agent(topic, name=lane.lane.name)(run_lane)

    agent_for(alerts, removed_fences=False)
    agent_for(bulk, removed_fences=True)  # the lane that keeps the devices exits them from a deleted fence

    @app.on_partitions_assigned.connect
    async def assigned(sender: Any, assigned: set, **_: Any) -> None:
        for lane in (alerts, bulk):
            await lane.on_assigned({(tp.topic, tp.partition) for tp in assigned})

    @app.on_partitions_revoked.connect
    async def revoked(sender: Any, revoked: set, **_: Any) -> None:
        for lane in (alerts, bulk):
            lane.on_revoked({(tp.topic, tp.partition) for tp in revoked})

    state_topic = app.topic(TOPICS.worker_state.name, key_serializer="raw", value_serializer="raw")
    for lane in (alerts, bulk):  # as the batch engine, each lane checkpoints what it staged
        app.sensors.add(CheckpointSensor(lane, state_topic))

    @app.timer(SILENT_CHECK_S)
    async def silent() -> None:
        await bulk.check_silent()

    return app, [alerts, bulk]


def run(settings: Settings) -> int:
    from guardstream.observability import all_ready, serve
    from guardstream.schemas.registry import registry_from_settings

    app_config(settings, tempfile.gettempdir())  # refuses what this engine cannot do before anything starts
    metrics = WorkerMetrics.create()
    codec = Codec(registry_from_settings(settings))
    failed: list[BaseException] = []

    def rebuilt(index: Any, seconds: float) -> None:
        metrics.fences.set(len(index))
        metrics.index_rebuild.observe(seconds)

    def feed_failed(exc: BaseException) -> None:  # no worker runs without every fence and device: stop as on TERM
        failed.append(exc)
        os.kill(os.getpid(), signal.SIGTERM)

    if USE_UVLOOP:
        try:
            import uvloop
        except ImportError:
            pass
        else:
            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    fences = FenceFeed(settings, codec, rebuilt)
    devices = DeviceFeed(settings, codec)
    with tempfile.TemporaryDirectory(prefix="guardstream-faust-") as datadir:
        app, faust_lanes = build(settings, codec, metrics, fences, devices, datadir)
        ready = all_ready({f"{lane.lane.name} lane": lane.ready for lane in faust_lanes})
        endpoints = serve(metrics.registry, ready, settings.metrics_host, settings.metrics_port) \
            if settings.metrics_port else None
        fences.start(feed_failed)
        devices.start(feed_failed)
        moved = continue_from_batch_engine(settings)
        log.info("%d partition(s) continue where the batch engine committed", moved)
        worker = faust.Worker(app, loglevel="WARNING", quiet=True, redirect_stdouts=False, override_logging=False)
        try:
            worker.execute_from_commandline()
        except SystemExit as exit_:
            if exit_.code not in (None, 0):
                failed.append(exit_)
        finally:
            fences.stop()
            devices.stop()
            if endpoints:
                endpoints.close()
    return 1 if failed else 0
