"""One consumer of the sink: poll, batch, write, then commit — in that order.

A :class:`SinkLoop` owns one confluent-kafka consumer (manual commits), one
database connection (:class:`BatchWriter`) and the batch in between. A flush:

1. writes every record of the batch in one database transaction and commits it;
2. sends the records the database (or the decoder) refused to ``dlq.sink`` and
   waits for the broker's acknowledgement;
3. only then commits the batch's offsets, synchronously.

A kill at any point replays from the last committed offsets, and the replay
inserts nothing twice (``ON CONFLICT DO NOTHING``; actions compare timestamps).
While the database is unreachable the batch is kept, the consumer is paused
(so memory stays bounded by one batch) and the write is retried when the
shared circuit breaker allows; nothing is skipped and no offset moves.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import msgspec
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from guardstream.catalog import TOPICS
from guardstream.errors import InputError, SchemaError, UnavailableError
from guardstream.records import DEAD_LETTER
from guardstream.refusal import Refused
from guardstream.schemas.codec import Codec
from guardstream.schemas.dead_letters import MAX_PAYLOAD, Source, dead_letter
from guardstream.sinks.batching import EMPTY, BatchClock, BatchPolicy, flush_reason, lane_of, poll_timeout, room
from guardstream.sinks.circuit import GAUGE_VALUE, Breaker, BreakerPolicy, State
from guardstream.sinks.metrics import SinkMetrics
from guardstream.sinks.rows import SINK_STAGE, Write, plan_write
from guardstream.sinks.writer import BatchWriter, WriteResult

log = logging.getLogger(__name__)

_PAUSED_POLL_S = 0.2  # how often a paused consumer still polls: heartbeats and rebalances go on
_MIN_WAIT_S = 0.02  # shortest wait between two looks at the breaker (the other consumer may hold the trial)


class SharedBreaker:
    """The database circuit, shared by both consumers (one database), thread-safe."""

    def __init__(self, policy: BreakerPolicy, metrics: SinkMetrics) -> None:
        self.policy, self.metrics = policy, metrics
        self._breaker = Breaker()
        self._lock = threading.Lock()
        self.database_answered: bool | None = None  # None until the first attempt
        metrics.circuit_state.set(GAUGE_VALUE[State.CLOSED])

    def _set(self, breaker: Breaker) -> None:
        if breaker.state is not self._breaker.state:
            log.warning("database circuit %s -> %s", self._breaker.state, breaker.state)
        self._breaker = breaker
        self.metrics.circuit_state.set(GAUGE_VALUE[breaker.state])

    def permit(self, now: float) -> bool:
        with self._lock:
            allowed, breaker = self._breaker.permit(now)
            self._set(breaker)
            return allowed

    def succeeded(self) -> None:
        with self._lock:
            self.database_answered = True
            self._set(self._breaker.succeeded())

    def failed(self, now: float) -> None:
        with self._lock:
            self.database_answered = False
            self._set(self._breaker.failed(self.policy, now))

    def wait_s(self, now: float) -> float:
        with self._lock:
            return self._breaker.tick(now).wait_s(now)

    @property
    def state(self) -> State:
        with self._lock:
            return self._breaker.state


class Ref(msgspec.Struct, frozen=True, gc=False):
    """Where a record came from; what a dead letter and an offset commit need."""
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass
class Batch:
    items: list[tuple[Ref, Write]] = field(default_factory=list)
    next_offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    clock: BatchClock = EMPTY
    first_polled_at: float | None = None

    def __len__(self) -> int:
        return len(self.items)


class SinkLoop:
    """Consume ``topics`` into PostgreSQL with exactly-once effect, until ``stop`` is set."""

    def __init__(self, kind: str, consumer: Consumer, topics: Sequence[str], policies: Mapping[str, BatchPolicy],
                 writer: BatchWriter[Ref], producer: Producer, codec: Codec, metrics: SinkMetrics,
                 breaker: SharedBreaker, stop: threading.Event, idle_s: float = 0.5) -> None:
        self.kind = kind
        self.consumer = consumer
        self.topics = list(topics)
        self.policies = policies
        self.writer = writer
        self.producer = producer
        self.codec = codec
        self.metrics = metrics
        self.breaker = breaker
        self.stop = stop
        self.idle_s = idle_s
        self.batch = Batch()
        self.waiting = False  # True while the database cannot take the batch: it is kept, the consumer paused
        self.assigned = False
        self._paused: list[TopicPartition] = []

    # -- the loop -----------------------------------------------------------------------

    def run(self) -> None:
        try:
            self._wait_for_database()
            self.consumer.subscribe(self.topics, on_assign=self._on_assign, on_revoke=self._on_revoke)
            while not self.stop.is_set():
                self.step()
            if len(self.batch) and self.breaker.state is State.CLOSED:
                self.flush()  # one last try; whatever fails is read again after a restart
        finally:
            self.batch = Batch()  # what was not committed is read again after a restart
            self.consumer.close()
            self.writer.close()

    def _wait_for_database(self) -> None:
        while not self.stop.is_set():
            if self.breaker.permit(time.monotonic()):
                try:
                    self.writer.ping()
                except UnavailableError as exc:
                    self.breaker.failed(time.monotonic())
                    log.warning("%s: %s", self.kind, exc.detail)
                else:
                    self.breaker.succeeded()
                    return
            self.stop.wait(self._retry_wait())

    def step(self) -> None:
        now = time.monotonic()
        if self.waiting:
            if not self.flush():
                self._poll_paused(self._retry_wait())
            return
        if not len(self.batch):
            # consume() waits for a full batch or its timeout; poll() returns with the first record,
            # so a lone alert starts its batch clock at once rather than after the idle wait
            first = self.consumer.poll(self.idle_s)
            if first is None:
                return
            self._add([first])
            timeout = 0.0  # then take whatever else has already arrived, without waiting
        else:
            timeout = poll_timeout(self.batch.clock, self.policies, now, self.idle_s)
        self._add(self.consumer.consume(room(self.batch.clock, self.policies), timeout))
        if len(self.batch) and flush_reason(self.batch.clock, self.policies, time.monotonic()) is not None:
            self.flush()

    def _retry_wait(self) -> float:
        return min(_PAUSED_POLL_S, max(_MIN_WAIT_S, self.breaker.wait_s(time.monotonic())))

    def _poll_paused(self, timeout: float) -> None:
        # A paused consumer returns nothing new, but what it had fetched before the pause may
        # still come: it is kept, never dropped, or its offset would be committed unwritten.
        self._add(self.consumer.consume(100, timeout))

    # -- records in -----------------------------------------------------------------------

    def _add(self, messages: list[Message]) -> None:
        if not messages:
            return
        now = time.monotonic()
        lanes: Counter[str] = Counter()
        for message in messages:
            error = message.error()
            if error is not None:
                self._consume_error(error)
                continue
            ref = Ref(message.topic(), message.partition(), message.offset(), message.key(), message.value())
            self.batch.items.append((ref, self._plan(ref)))
            self.batch.next_offsets[(ref.topic, ref.partition)] = ref.offset + 1
            lanes[lane_of(ref.topic)] += 1
        if lanes and self.batch.first_polled_at is None:
            self.batch.first_polled_at = now
        for lane, count in lanes.items():
            self.batch.clock = self.batch.clock.added(lane, count, now)

    def _plan(self, ref: Ref) -> Write:
        try:
            name, record = self.codec.decode(ref.value) if ref.value is not None else (None, None)
        except (InputError, SchemaError) as exc:
            return Refused.of(exc)
        return plan_write(ref.topic, ref.partition, ref.offset, ref.key, name, record)

    def _consume_error(self, error: KafkaError) -> None:
        if error.fatal():
            raise UnavailableError(f"{self.kind} consumer: fatal Kafka error: {error.str()}")
        log.warning("%s consumer: %s", self.kind, error.str())

    # -- flush ------------------------------------------------------------------------------

    def flush(self) -> bool:
        """Write, dead-letter, commit; False when the database could not take the batch (kept)."""
        started = time.monotonic()
        if not self.breaker.permit(started):
            self._wait_paused()
            return False
        writable = [(ref, write) for ref, write in self.batch.items if not isinstance(write, Refused)]
        try:
            result = self.writer.write(writable, self.batch.next_offsets)
        except UnavailableError as exc:
            self.breaker.failed(time.monotonic())
            self.metrics.retries.labels(self.kind).inc()
            log.warning("%s: batch of %d kept for a retry: %s", self.kind, len(self.batch), exc.detail)
            self._wait_paused()
            return False
        self.breaker.succeeded()
        refused = [(ref, w) for ref, w in self.batch.items if isinstance(w, Refused)]
        refused += [(r.ref, r.refused) for r in result.rejected]
        self._send_dead_letters(refused)
        self._commit_offsets()
        self._count(result, started)
        self.batch = Batch()
        self._resume()
        return True

    def _send_dead_letters(self, refused: list[tuple[Ref, Refused]]) -> None:
        if not refused:
            return
        failures: list[str] = []
        now_ms = int(time.time() * 1000)

        def send(ref: Ref, why: Refused, bare: bool = False) -> None:
            """One dead letter; one Kafka refuses for good (too large, invalid) goes once more bare
            (payload cut to nothing, its length and hash kept), so one record never stalls the sink."""
            source = Source(ref.topic, ref.partition, ref.offset, ref.key)
            record, headers = dead_letter(SINK_STAGE, why.reason, why.detail, source, ref.value or b"", now_ms,
                                          0 if bare else MAX_PAYLOAD)

            def delivered(error: KafkaError | None, _message: Message) -> None:
                if error is not None and not bare and not error.fatal():
                    send(ref, why, bare=True)
                elif error is not None:
                    failures.append(error.str())
            try:
                self.producer.produce(TOPICS.dlq_sink.name, key=ref.key, value=self.codec.encode(DEAD_LETTER, record),
                                      headers=headers, on_delivery=delivered)
            except KafkaException as exc:
                if bare:
                    raise
                send(ref, why, bare=True)
                log.warning("dead letter of %s[%d]@%d refused (%s); sent bare", ref.topic, ref.partition,
                            ref.offset, exc)

        for ref, why in sorted(refused, key=lambda r: (r[0].topic, r[0].partition, r[0].offset)):
            send(ref, why)
            self.metrics.dead_letters.labels(ref.topic, why.reason).inc()
            log.info("dead letter: %s[%d]@%d %s: %s", ref.topic, ref.partition, ref.offset, why.reason, why.detail)
        left = self.producer.flush(30)
        if left or failures:
            # offsets stay uncommitted: after a restart the batch is replayed and the letters sent again
            raise UnavailableError(f"{TOPICS.dlq_sink.name}: {left} unsent, failures: {failures[:3]}")

    def _commit_offsets(self) -> None:
        offsets = [TopicPartition(t, p, o) for (t, p), o in self.batch.next_offsets.items()]
        if not offsets:
            return
        try:
            self.consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            # The rows are committed in the database; a replay of them is harmless, and the next
            # commit covers these offsets too. Losing the partitions in a rebalance ends up here.
            log.warning("%s: offset commit failed, the batch will be read again: %s", self.kind, exc)

    def _count(self, result: WriteResult[Ref], started: float) -> None:
        for table, count in result.written.items():
            self.metrics.rows_written.labels(table).inc(count)
        for table, count in result.duplicates.items():
            if count:
                self.metrics.duplicates_skipped.labels(table).inc(count)
        for outcome, count in result.actions.items():
            self.metrics.alert_actions.labels(outcome).inc(count)
        done = time.monotonic()
        self.metrics.batches.labels(self.kind).inc()
        self.metrics.batch_rows.labels(self.kind).observe(len(self.batch))
        self.metrics.batch_seconds.labels(self.kind).observe(done - started)
        if self.batch.first_polled_at is not None:
            self.metrics.batch_age_seconds.labels(self.kind).observe(done - self.batch.first_polled_at)

    # -- pause, resume, rebalance ------------------------------------------------------------

    def _wait_paused(self) -> None:
        self.waiting = True
        assignment = self.consumer.assignment()
        if assignment and not self._paused:
            self.consumer.pause(assignment)
            self._paused = assignment
            self.metrics.paused.labels(self.kind).set(1)

    def _resume(self) -> None:
        self.waiting = False
        if self._paused:
            self.consumer.resume(self._paused)
            self._paused = []
            self.metrics.paused.labels(self.kind).set(0)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.assigned = True
        self._seed_positions(consumer, partitions)
        log.info("%s: assigned %s", self.kind, ", ".join(f"{p.topic}[{p.partition}]" for p in partitions))

    def _seed_positions(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # A partition this sink has not written since sink_positions exists still has a known
        # position: everything below the committed offset is written. Later writes raise it exactly.
        try:
            committed = consumer.committed(partitions, timeout=10)
            self.writer.seed_positions({(tp.topic, tp.partition): tp.offset for tp in committed if tp.offset >= 0})
        except (KafkaException, UnavailableError) as exc:
            log.warning("%s: positions not seeded, the next write sets them: %s", self.kind, exc)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Whatever is not committed now is read again, from the committed offsets, by the next owner.
        if len(self.batch) and not self.waiting:
            self.flush()
        self.batch = Batch()
        self.waiting = False
        self._paused = []
        self.metrics.paused.labels(self.kind).set(0)
        self.assigned = False
