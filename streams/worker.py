"""``guardstream worker``: raw topics in, validated and enriched events out, in batches.

Delivery guarantee: at least once. Events and dead letters are written as each
batch is processed. Every ``CHECKPOINT_S`` the per-device state that changed
since the last checkpoint is written to the changelog (once per device,
however often it changed), and the offsets of the batches since then are
committed once Kafka has acknowledged all of it and everything written before.
A crash replays the batches since the last checkpoint against the state of
that checkpoint: the same events again, with the same event ids (the sink keeps
one of each). The worker does not wait for acknowledgements before taking the
next batch (at most ``MAX_IN_FLIGHT`` writes are unacknowledged), so Kafka's
round trip is not paid per batch. A crash repeats at most the uncommitted batch: its events carry
the same event ids (the sink keeps one of each), and the geofence state
machine ignores fixes it has already applied, so no transition is emitted twice.

With ``GUARDSTREAM_WORKER_EXACTLY_ONCE`` on, a checkpoint is one Kafka transaction instead:
outputs, changed state and offsets commit together (``transactions.py``).

Several workers share the raw partitions through one consumer group; the
per-device state of a partition moves with it (``state_store.py``).

Two lanes run in each worker process, each with its own consumer group and
producer: ``alerts`` (raw.alert, small batches) and ``bulk`` (the other raw
topics). A flood of telemetry fills the bulk lane's queues, never the alerts'.
A lane takes what is already fetched as soon as one record is there, so at low
load a record does not wait for a batch to fill.

This is the batch engine, the default. ``faust_engine.py`` runs the same pure
core as Faust agents; ``bench/stream_worker.py`` measures both beside a bare
Faust pass-through agent, and this engine is the faster (README, "Two engines"):
Faust's per-event path (an Event object, a queue hop and acknowledgement
tracking per record) costs more than all the work done here, so this engine
takes whole batches from the Kafka client and hands them to the pure core
(``pipeline.process``) in one call.
"""

from __future__ import annotations

import logging
import threading
import functools
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from guardstream.catalog import TOPICS
from guardstream.errors import ConfigError
from guardstream.kafka import consumer_config, error_text, produce, producer_config, take_batch
from guardstream.records import DEAD_LETTER, DEVICE_ALERT
from guardstream.schemas.codec import Codec
from guardstream.schemas.dead_letters import Source, dead_letter
from guardstream.settings import Settings
from guardstream.streams.device_feed import DeviceFeed
from guardstream.streams.fences import FenceFeed
from guardstream.streams.geofence_state import Params
from guardstream.streams.metrics import WorkerMetrics
from guardstream.streams.outputs import count, out_records, stage_changes
from guardstream.streams.pipeline import Outcome, RawRecord, State, process
from guardstream.streams.routing import emit_for
from guardstream.streams.rules import Rules, load_rules, silent_check
from guardstream.streams.state_store import StateStore
from guardstream.streams.transactions import Transaction, producer_overrides
from guardstream.streams.validation import Policy

log = logging.getLogger("guardstream.worker")
GROUP = "guardstream-worker"
SILENT_CHECK_S = 30.0
MAX_IN_FLIGHT = 8  # batches written but not yet acknowledged by Kafka
# How often state and offsets are checkpointed (Kafka Streams' commit interval). Each
# checkpoint writes every device whose state changed since the last one, and a device
# that reports every second changes at each fix: at 0.2 s that was about one changelog
# record per event (a fifth of the worker's CPU, and as much again in the broker), at
# 1 s a fifth of that (bench/cpu_budget.py). A crash replays at most this much input.
CHECKPOINT_S = 1.0
# With exactly-once on, a checkpoint is the transaction's commit, and read_committed
# consumers see its events only then: short, as Kafka Streams' 100 ms under EOS.
TRANSACTION_CHECKPOINT_S = 0.2


@dataclass
class InFlight:
    """A batch whose outputs are on their way to Kafka."""

    offsets: list[TopicPartition]
    remaining: int = 0  # outputs not acknowledged yet
    sealed: bool = False  # every output of the batch has been handed to the producer


@dataclass(frozen=True)
class Lane:
    name: str
    topics: tuple[str, ...]
    group: str
    batch_max: int
    wait_s: float  # how long to wait for the first record of a batch
    stateful: bool  # keeps per-device state (geofences, rule latches) and the silent-device timer


def lanes(settings: Settings) -> tuple[Lane, Lane]:
    alerts = TOPICS.raw_alert
    return (Lane("alerts", (alerts.name,), f"{GROUP}-alerts", 200, 0.05, stateful=False),
            Lane("bulk", tuple(t.name for t in TOPICS.raw() if t is not alerts), GROUP,
                 settings.worker_batch_max, settings.worker_batch_wait_ms / 1000, stateful=True))


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def params_from(settings: Settings) -> Params:
    return Params(settings.geofence_exit_margin_m, settings.geofence_exit_fixes, settings.geofence_max_accuracy_m)


def check_horizon(horizon_s: int, rules: Rules) -> int:
    """The device horizon in ms; :class:`ConfigError` when it would forget devices before they are silent."""
    silent = rules.device_silent
    if silent.enabled and horizon_s * 1000 <= silent.after_ms:
        raise ConfigError("GUARDSTREAM_WORKER_DEVICE_HORIZON_S", f"{horizon_s} s is not above "
                          f"device_silent.after_minutes ({silent.after_minutes:g} min): devices would be forgotten "
                          "before they could be silent")
    return horizon_s * 1000


def raw_record(message: Any) -> RawRecord:
    return RawRecord(message.topic(), message.partition(), message.offset(), message.key(), message.value(),
                     dict(message.headers() or ()), message.timestamp()[1])


class Worker:
    """One lane: a consumer group, its producer, and the state of the partitions it owns."""

    def __init__(self, settings: Settings, codec: Codec, metrics: WorkerMetrics, lane: Lane, fences: FenceFeed,
                 devices: DeviceFeed, stopping: threading.Event, rules: Rules | None = None) -> None:
        self.settings = settings
        self.codec = codec
        self.metrics = metrics
        self.lane = lane
        self.rules = rules or load_rules(settings.rules_file)
        self.horizon_ms = check_horizon(settings.worker_device_horizon_s, self.rules)
        self.params = params_from(settings)
        self.stopping = stopping
        self.assigned: set[tuple[str, int]] = set()
        client_id = f"guardstream-worker-{lane.name}"
        transactional = producer_overrides(settings.worker_id, lane.name) if settings.worker_exactly_once else {}
        self.producer = Producer(producer_config(settings, client_id, **{"linger.ms": 2, **transactional}))
        self.consumer = Consumer(consumer_config(settings, client_id, lane.group, **{
            "queued.max.messages.kbytes": 65536}))
        self.transaction = Transaction(self.producer, self.consumer) if transactional else None
        self.store = StateStore(settings, self.producer)
        self.fences = fences
        self.devices = devices
        self.state = State(fences=fences.index, devices=self.store.values["geofence"],
                           rules=self.store.values["rules"])
        self._alerted: dict[str, int] = {}
        self._in_flight: deque[InFlight] = deque()
        self._failure: KafkaException | None = None
        self._uncommitted: dict[tuple[str, int], int] = {}  # next offsets since the last checkpoint
        self._checkpoint_s = CHECKPOINT_S if self.transaction is None else TRANSACTION_CHECKPOINT_S
        self._next_checkpoint = time.monotonic() + self._checkpoint_s
        self._next_silent_check = time.monotonic() + SILENT_CHECK_S
        self.ready_since: float | None = None
        self.failed: BaseException | None = None  # what ended the lane

    def ready(self) -> tuple[bool, str]:
        if self.failed is not None:
            return False, f"failed: {self.failed!r}"
        if not self.fences.loaded.is_set():
            return False, "geofences not loaded yet"
        if not self.devices.loaded.is_set():
            return False, "device registry not loaded yet"
        if self.ready_since is None:
            return False, "no partitions assigned yet"
        return True, ""

    # -- partitions ------------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        new = {(p.topic, p.partition) for p in partitions} - self.assigned
        self.assigned |= new
        restored = self.store.restore(new) if self.lane.stateful else 0
        self.ready_since = self.ready_since or time.monotonic()
        log.info("assigned %d partition(s); restored %d state entries", len(new), restored)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._settle()  # what was processed is committed before the partitions go to another worker
        self.assigned -= {(p.topic, p.partition) for p in partitions}
        self.store.forget(self.assigned)

    # -- the loop --------------------------------------------------------------------

    def run(self) -> None:
        for feed in (self.fences, self.devices):
            while not feed.loaded.wait(1.0):
                if self.stopping.is_set():
                    return
        self.consumer.subscribe(list(self.lane.topics), on_assign=self._on_assign, on_revoke=self._on_revoke)
        try:
            while not self.stopping.is_set():
                records = self._next_batch()
                if records:
                    self.handle(records)
                self.producer.poll(0)
                if time.monotonic() >= self._next_checkpoint:
                    self._checkpoint()
                self._commit_acknowledged()
                if self.lane.stateful and time.monotonic() >= self._next_silent_check:
                    self._check_silent()
            self._settle()
        finally:
            self.consumer.close()

    def _next_batch(self) -> list[RawRecord]:
        messages = take_batch(self.consumer, self.lane.batch_max, self.lane.wait_s)
        return [raw_record(m) for m in messages if self._usable(m)]

    def _usable(self, message: Any) -> bool:
        error = message.error()
        if error is None:
            return True
        if error.code() != KafkaError._PARTITION_EOF:
            if error.fatal():
                raise KafkaException(error)
            log.warning("consume: %s", error.str())
        return False

    def handle(self, records: list[RawRecord]) -> None:
        started = time.perf_counter()
        self.state.fences = self.fences.index
        policy = Policy(now_ms=now_ms(), default_tenant=self.settings.tenant_default)
        outcome = process(records, self.state, policy, self.rules, self.params, self.fences.take_removed(),
                          self.devices.registry)
        for tp in _next_offsets(records):
            key = (tp.topic, tp.partition)
            self._uncommitted[key] = max(self._uncommitted.get(key, 0), tp.offset)
        batch = InFlight([])  # its offsets are the next checkpoint's
        self._in_flight.append(batch)
        self._write(outcome, records, policy.now_ms, batch)
        batch.sealed = True
        self._count(outcome, records, started)
        while len(self._in_flight) > MAX_IN_FLIGHT:
            self.producer.poll(0.05)
            self._commit_acknowledged()

    def _delivered(self, batch: InFlight, error: KafkaError | None, message: Any) -> None:
        if error is not None:
            # retries are librdkafka's; what reaches here is final for this record. An event
            # Kafka refuses (too large, invalid) goes on as a dead letter, so one record never
            # stops the lane; anything else (state, a dead letter, a fatal client) fails loudly
            # and commits nothing more
            if not error.fatal() and _is_event(message.topic()):
                self._refused_output(batch, message.topic(), message.value(), message.key(), error.str())
            else:
                self._failure = KafkaException(error)
        batch.remaining -= 1

    def _commit_acknowledged(self, asynchronous: bool = True) -> None:
        """Commit the offsets of the leading checkpoints whose writes, and all before, are in Kafka."""
        if self._failure is not None:
            raise self._failure
        done: dict[tuple[str, int], int] = {}
        while self._in_flight and self._in_flight[0].sealed and self._in_flight[0].remaining == 0:
            for tp in self._in_flight.popleft().offsets:
                done[(tp.topic, tp.partition)] = max(done.get((tp.topic, tp.partition), 0), tp.offset)
        if done and self.transaction is None:  # with a transaction, offsets are committed in it
            # a lost commit only repeats batches whose outputs are already in Kafka
            self.consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in done.items()],
                                 asynchronous=asynchronous)

    def _checkpoint(self) -> None:
        """Changed state to the changelog, and the offsets it covers queued for commit."""
        self._next_checkpoint = time.monotonic() + self._checkpoint_s
        if self.transaction is not None:
            self._commit_transaction()
            return
        if not self._uncommitted:
            return
        entry = InFlight([TopicPartition(t, p, o) for (t, p), o in self._uncommitted.items()])
        self._uncommitted = {}
        self._in_flight.append(entry)
        entry.remaining += self.store.write_staged(functools.partial(self._delivered, entry))
        entry.sealed = True

    def _commit_transaction(self) -> None:
        """Outputs, changed state and the offsets they cover: committed together, or not at all."""
        offsets = [TopicPartition(t, p, o) for (t, p), o in self._uncommitted.items()]
        self._uncommitted = {}
        if offsets or self.transaction.open:
            self.transaction.begin()
            self.store.write_staged()
            self.transaction.commit(offsets)

    def _settle(self) -> None:
        """Checkpoint, wait for every write to be acknowledged, and commit (a rebalance, a stop)."""
        self._checkpoint()
        if self.producer.flush(60) > 0:
            raise KafkaException(KafkaError(KafkaError._MSG_TIMED_OUT, "outputs not acknowledged within 60 s"))
        self._commit_acknowledged(asynchronous=False)

    def _write(self, outcome: Outcome, records: list[RawRecord], now: int, batch: InFlight) -> None:
        if self.transaction is not None:
            self.transaction.begin()
        for out in out_records(outcome, self.codec, now):
            self._produce(batch, out.topic, out.value, out.key, out.headers)
        stage_changes(self.store, outcome, records)

    def _produce(self, batch: InFlight | None, topic: str, value: bytes, key: bytes | None,
                 headers: list | None = None) -> None:
        on_delivery = functools.partial(self._delivered, batch) if batch is not None else None
        try:
            produce(self.producer, topic, value, key, headers=headers, on_delivery=on_delivery)
        except KafkaException as exc:  # refused before it was queued, e.g. over message.max.bytes
            if not _is_event(topic):
                raise
            self._refused_output(batch, topic, value, key, error_text(exc))
            return
        if batch is not None:
            batch.remaining += 1

    def _refused_output(self, batch: InFlight | None, topic: str, value: bytes, key: bytes | None, why: str) -> None:
        """An event Kafka refused for good: a dead letter (stage ``route``) in its place."""
        log.warning("Kafka refused an event for %s: %s; sending it on as a dead letter", topic, why)
        self.metrics.dead_letters.labels("produce_refused").inc()
        letter, headers = dead_letter("route", "produce_refused", f"Kafka refused the event for {topic}: {why}",
                                      Source(topic, key=key), value or b"", now_ms())
        self._produce(batch, TOPICS.dlq_validate.name, self.codec.encode(DEAD_LETTER, letter), key, headers)

    def _count(self, outcome: Outcome, records: list[RawRecord], started: float) -> None:
        count(self.metrics, self.store, outcome, records, started, now_ms())
        self.metrics.registry_devices.set(len(self.devices.registry.entries))

    def registered(self) -> frozenset[str]:
        """Devices watched however long they are silent: the registry's enabled ones."""
        return frozenset(device for device, entry in self.devices.registry.entries.items() if entry.enabled)

    def _check_silent(self) -> None:
        self._next_silent_check = time.monotonic() + SILENT_CHECK_S
        # devices past the horizon are forgotten, never silent: this memory grew with every device id ever seen
        check = silent_check(self.state.last_seen, now_ms(), self._alerted, self.horizon_ms, self.registered(),
                             self.rules)
        for device in check.forgotten:
            del self.state.last_seen[device]
            self._alerted.pop(device, None)
        if check.forgotten:  # their fence and rule state too, in the changelog with the next checkpoint's writes
            if self.transaction is not None:
                self.transaction.begin()  # committed at the next checkpoint
            entry = InFlight([])
            self._in_flight.append(entry)
            entry.remaining += self.store.evict(check.forgotten, functools.partial(self._delivered, entry))
            entry.sealed = True
        self.metrics.devices.labels("last_seen").set(len(self.state.last_seen))
        if check.alerts and self.transaction is not None:
            self.transaction.begin()  # committed at the next checkpoint
        self._alerted.update(check.alerted)
        for alert in check.alerts:
            emit = emit_for(DEVICE_ALERT, alert)
            self._produce(None, emit.topic, self.codec.encode(emit.schema, emit.value), emit.key.encode())
        if check.alerts:
            self.producer.flush(30)


def _is_event(topic: str) -> bool:
    """An output that may become a dead letter when Kafka refuses it: not state, not a dead letter."""
    return topic in {t.name for t in TOPICS.events()}


def _next_offsets(records: list[RawRecord]) -> list[TopicPartition]:
    last: dict[tuple[str, int], int] = {}
    for r in records:
        key = (r.topic, r.partition)
        last[key] = max(last.get(key, -1), r.offset)
    return [TopicPartition(t, p, o + 1) for (t, p), o in last.items()]


def run(settings: Settings) -> int:
    from guardstream.lifecycle import install_stop_handlers
    from guardstream.observability import all_ready, serve
    from guardstream.schemas.registry import registry_from_settings

    metrics = WorkerMetrics.create()
    codec = Codec(registry_from_settings(settings))
    if settings.worker_exactly_once and settings.embedded:
        log.warning("GUARDSTREAM_WORKER_EXACTLY_ONCE on the embedded broker: tansu delivers aborted records to "
                    "read_committed consumers, so a crash can still repeat events (README, Delivery guarantees)")
    stopping = threading.Event()

    def rebuilt(index: Any, seconds: float) -> None:
        metrics.fences.set(len(index))
        metrics.index_rebuild.observe(seconds)

    fences = FenceFeed(settings, codec, rebuilt)
    devices = DeviceFeed(settings, codec)
    workers = [Worker(settings, codec, metrics, lane, fences, devices, stopping) for lane in lanes(settings)]

    ready = all_ready({f"{w.lane.name} lane": w.ready for w in workers})
    endpoints = serve(metrics.registry, ready, settings.metrics_host, settings.metrics_port) \
        if settings.metrics_port else None
    install_stop_handlers(stopping.set)
    failed: list[BaseException] = []

    def run_lane(worker: Worker) -> None:
        try:
            worker.run()
        except BaseException as exc:  # a dead lane takes the process down, loudly, for a restart
            log.exception("%s lane failed", worker.lane.name)
            worker.failed = exc
            failed.append(exc)
            stopping.set()

    def feed_failed(exc: BaseException) -> None:  # no worker can run without every fence and device
        failed.append(exc)
        stopping.set()

    fences.start(feed_failed)
    devices.start(feed_failed)
    threads = [threading.Thread(target=run_lane, args=(w,), name=f"lane-{w.lane.name}") for w in workers]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            thread.join()
    finally:
        stopping.set()
        fences.stop()
        devices.stop()
        if endpoints:
            endpoints.close()
    return 1 if failed else 0
