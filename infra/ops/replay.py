"""``guardstream replay``: copy a time range into another topic, or move a group's offsets to a time.

Copying keeps each record's key, headers, timestamp and (with equal partition
counts) partition, and adds ``replay.id`` and ``replay.source``. It never
writes into its source topic. Progress is checkpointed per chunk in
``GUARDSTREAM_STATE_DIR/replay/<id>.json``, and a rerun with the same arguments
resumes exactly (see :mod:`.replay_plan`). Offsets are moved only for a group
without active members, with the Admin API (AlterConsumerGroupOffsets).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import ConsumerGroupState, ConsumerGroupTopicPartitions, KafkaError, KafkaException, Producer
from confluent_kafka import TopicPartition as KafkaPartition
from confluent_kafka.admin import AdminClient

from guardstream.catalog import TOPICS
from guardstream.errors import InputError, UnavailableError
from guardstream.kafka import admin_config, error_code, produce, producer_config
from guardstream.settings import Settings

from .dead_letters import binding_changed
from .progress import progress_for
from .records import Record
from .replay_plan import (REPLAY_ID, REPLAY_SOURCE, Checkpoint, already_copied, copy_headers,
                          destination_partition, in_window, last_copied, replay_id, source_tag)
from .state_files import load_json, save_json
from guardstream.timespec import iso, parse_time
from .topic_reader import TopicReader

FLUSH_TIMEOUT_S = 60


@dataclass(frozen=True)
class CopyRequest:
    topic: str
    into: str
    from_text: str
    to_text: str | None = None
    chunk_size: int = 1000
    max_rate: float | None = None  # records per second, at most
    restart: bool = False  # forget an earlier run with the same arguments

    @property
    def id(self) -> str:
        return replay_id(self.topic, f"into:{self.into}", self.from_text, self.to_text)


@dataclass
class CopyResult:
    checkpoint: Checkpoint
    path: Path
    resumed: bool = False
    already_done: bool = False  # an earlier run with the same arguments finished; nothing copied
    interrupted: bool = False
    copied_now: int = 0
    found_copied: int = 0  # copies a crashed run had written past its checkpoint, not written again


def checkpoint_path(settings: Settings, rid: str) -> Path:
    return settings.state_dir / "replay" / f"{rid}.json"


def refuse_target(topic: str, into: str) -> None:
    """:class:`InputError` when copying ``topic`` into ``into`` makes no sense."""
    if into == topic:
        raise InputError(f"refusing to write into the source topic {topic}: --into must name another topic "
                         f"(to process {topic} again, move the consumer group instead: --group G --reset-offsets)",
                         reason="into_source")
    try:
        source, target = TOPICS.by_name(topic), TOPICS.by_name(into)
    except KeyError:
        return  # a topic of one's own: its format is one's own business
    if source.is_raw != target.is_raw or not set(source.value_schemas) & set(target.value_schemas):
        raise InputError(f"{topic} carries {', '.join(source.value_schemas)} but {into} carries "
                         f"{', '.join(target.value_schemas)}", reason="format_mismatch")


def plan_copy(settings: Settings, request: CopyRequest, now_ms: int) -> tuple[Checkpoint, bool]:
    """(checkpoint to start or continue from, whether it is an earlier run's)."""
    refuse_target(request.topic, request.into)
    path = checkpoint_path(settings, request.id)
    doc = None if request.restart else load_json(path)
    with TopicReader(settings) as reader:
        bound_to = reader.identity([request.topic, request.into])
        if doc is not None:
            earlier = Checkpoint.from_json(doc)
            if not binding_changed(earlier.extra.get("bound_to"), bound_to):
                return earlier, True
        fresh = _fresh(reader, request, now_ms)
    fresh.extra["bound_to"] = bound_to
    if doc is not None:
        # the source or the destination was recreated since (a restarted in-memory broker): the
        # earlier run's offsets describe records that are gone, so they are not resumed from
        fresh.extra["set_aside"] = str(path)
    return fresh, False


def _fresh(reader: TopicReader, request: CopyRequest, now_ms: int) -> Checkpoint:
    from_ms = parse_time(request.from_text, now_ms)
    to_ms = parse_time(request.to_text, now_ms) if request.to_text else None
    if to_ms is not None and to_ms <= from_ms:
        raise InputError(f"--to {request.to_text} is not after --from {request.from_text}", reason="bad_time")
    partitions = reader.partitions(request.topic)
    dest = reader.partitions(request.into)
    ranges = {}
    for p, (low, end) in reader.ends(request.topic, partitions).items():
        first = reader.offset_for_time(request.topic, p, from_ms, low, end)
        last = end if to_ms is None else reader.offset_for_time(request.topic, p, to_ms, first, end)
        ranges[p] = (first, last)
    marks = {d: end for d, (_, end) in reader.ends(request.into, dest).items()}
    return Checkpoint(request.id, request.topic, request.into, from_ms, to_ms, ranges,
                      {p: first for p, (first, _) in ranges.items()}, marks, len(partitions), len(dest),
                      extra={"from": request.from_text, "to": request.to_text, "started_at": iso(now_ms)})


def copy(settings: Settings, request: CopyRequest, stopping: threading.Event | None = None,
         now_ms: int | None = None) -> CopyResult:
    """Copy (or go on copying) the range; returns when done or when ``stopping`` is set."""
    stopping = stopping or threading.Event()
    cp, resumed = plan_copy(settings, request, now_ms if now_ms is not None else int(time.time() * 1000))
    result = CopyResult(cp, checkpoint_path(settings, cp.id), resumed=resumed)
    if cp.done:
        result.already_done = True
        return result
    with TopicReader(settings) as reader:
        last = _scan_destination(reader, cp) if resumed else {}
        if not resumed:
            save_json(result.path, cp.to_json())  # before the first copy: a crash from here on resumes
        _Copier(settings, cp, result, request, stopping).run(reader, last)
    return result


def _scan_destination(reader: TopicReader, cp: Checkpoint) -> dict[tuple[int, int], int]:
    """What a crashed run copied past its checkpoint: read the destination from the marks to its end."""
    bounds = reader.ends(cp.into, range(cp.dest_partitions))
    ranges = {(cp.into, d): (max(low, cp.marks.get(d, low)), end) for d, (low, end) in bounds.items()}
    tags = ((r.partition, r.header(REPLAY_ID), r.header(REPLAY_SOURCE)) for r in reader.read(ranges))
    return last_copied(tags, cp.id, cp.source)


class _Copier:
    def __init__(self, settings: Settings, cp: Checkpoint, result: CopyResult, request: CopyRequest,
                 stopping: threading.Event) -> None:
        self.cp = cp
        self.result = result
        self.request = request
        self.stopping = stopping
        self.failures: list[str] = []
        try:
            self.producer = Producer(producer_config(settings, "guardstream-replay", **{"linger.ms": 20}))
        except KafkaException as exc:
            raise UnavailableError(f"Kafka producer: {exc}") from exc

    def run(self, reader: TopicReader, last: dict[tuple[int, int], int]) -> None:
        cp = self.cp
        ranges = {(cp.source, p): (cp.positions[p], end) for p, (_, end) in cp.ranges.items()}
        pace = _Pacer(self.request.max_rate, self.stopping)
        in_chunk = 0
        with progress_for(f"replay {cp.id}", cp.remaining()) as progress:
            for record in reader.read(ranges):
                self._one(record, last)
                in_chunk += 1
                if in_chunk >= self.request.chunk_size or self.stopping.is_set():
                    self._commit()
                    progress.advance(in_chunk)
                    in_chunk = 0
                    if self.stopping.is_set():
                        self.result.interrupted = True
                        return
                pace.wait(self.result.copied_now)
            for p, (_, end) in cp.ranges.items():
                cp.positions[p] = max(cp.positions[p], end)
            cp.done = True
            self._commit()
            progress.advance(in_chunk)

    def _one(self, record: Record, last: dict[tuple[int, int], int]) -> None:
        """Copy one record unless it is outside the window or a crashed run already copied it.
        The position moves only after the record is handed to the producer."""
        cp = self.cp
        if not in_window(record.timestamp_ms, cp.from_ms, cp.to_ms):
            cp.outside += 1
        else:
            dest = destination_partition(record.key, record.partition, cp.source_partitions, cp.dest_partitions)
            if already_copied(last, record.partition, dest, record.offset):
                self.result.found_copied += 1
            else:
                self._produce(record, dest)
                self.result.copied_now += 1
            cp.copied += 1
        cp.positions[record.partition] = record.offset + 1

    def _produce(self, record: Record, dest: int) -> None:
        headers = copy_headers(record.headers, self.cp.id,
                               source_tag(record.topic, record.partition, record.offset))
        produce(self.producer, self.cp.into, record.value, record.key, partition=dest, headers=headers,
                timestamp=max(0, record.timestamp_ms), on_delivery=self._delivered)

    def _delivered(self, error: KafkaError | None, message: object) -> None:
        if error is not None:
            self.failures.append(error.str())
            return
        d = message.partition()  # type: ignore[attr-defined]
        self.cp.marks[d] = max(self.cp.marks.get(d, 0), message.offset() + 1)  # type: ignore[attr-defined]

    def _commit(self) -> None:
        """Wait for every copy's acknowledgement, then record the checkpoint."""
        left = self.producer.flush(FLUSH_TIMEOUT_S)
        if left or self.failures:
            raise UnavailableError(f"{self.cp.into}: {left} copies unacknowledged, failures: {self.failures[:3]}; "
                                   "run the same command again to resume")
        save_json(self.result.path, self.cp.to_json())


class _Pacer:
    """Keeps the copy under ``max_rate`` records per second; waits stop early when stopping."""

    def __init__(self, max_rate: float | None, stopping: threading.Event,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._max_rate = max_rate
        self._stopping = stopping
        self._clock = clock
        self._started = clock()

    def wait(self, done: int) -> None:
        if not self._max_rate:
            return
        ahead = self._started + done / self._max_rate - self._clock()
        if ahead > 0:
            self._stopping.wait(ahead)


# -- consumer group offsets --------------------------------------------------------------

LIVE_STATES = frozenset({ConsumerGroupState.STABLE, ConsumerGroupState.PREPARING_REBALANCING,
                         ConsumerGroupState.COMPLETING_REBALANCING})
# what a broker answers an offset change for a group that has members (one joined since the check)
_ACTIVE_GROUP_ERRORS = frozenset({KafkaError.UNKNOWN_MEMBER_ID, KafkaError.REBALANCE_IN_PROGRESS,
                                  KafkaError.ILLEGAL_GENERATION, KafkaError.NON_EMPTY_GROUP})


@dataclass(frozen=True)
class ResetRow:
    partition: int
    current: int | None  # the group's committed offset, None when it has none
    new: int


def reset_group(settings: Settings, topic: str, group: str, from_text: str, *, dry_run: bool = False,
                now_ms: int | None = None) -> list[ResetRow]:
    """Move ``group``'s offsets on ``topic`` to the first record at or after the time; refused while
    the group has active members. Returns the moves (made, or only planned with ``dry_run``)."""
    at_ms = parse_time(from_text, now_ms if now_ms is not None else int(time.time() * 1000))
    with TopicReader(settings) as reader:
        partitions = reader.partitions(topic)
        targets = {p: reader.offset_for_time(topic, p, at_ms, low, end)
                   for p, (low, end) in reader.ends(topic, partitions).items()}
    admin = AdminClient(admin_config(settings, "guardstream-replay"))
    _refuse_active(admin, group)
    current = _committed(admin, group, topic)
    rows = [ResetRow(p, current.get(p), targets[p]) for p in sorted(targets)]
    if dry_run:
        return rows
    request = ConsumerGroupTopicPartitions(group, [KafkaPartition(topic, r.partition, r.new) for r in rows])
    try:
        answer = admin.alter_consumer_group_offsets([request], request_timeout=10)[group].result()
    except KafkaException as exc:
        if error_code(exc) in _ACTIVE_GROUP_ERRORS:
            raise InputError(f"consumer group {group} is active: stop its consumers, then reset",
                             reason="group_active") from exc
        raise UnavailableError(f"moving the offsets of {group}: {exc}") from exc
    failed = [tp for tp in answer.topic_partitions if tp.error is not None]
    if any(tp.error.code() in _ACTIVE_GROUP_ERRORS for tp in failed):
        raise InputError(f"consumer group {group} is active: stop its consumers, then reset", reason="group_active")
    if failed:
        raise UnavailableError(f"moving the offsets of {group}: partition {failed[0].partition}: {failed[0].error}")
    return rows


def _refuse_active(admin: AdminClient, group: str) -> None:
    try:
        described = admin.describe_consumer_groups([group], request_timeout=10)[group].result()
    except KafkaException as exc:
        if error_code(exc) == KafkaError.GROUP_ID_NOT_FOUND:
            return  # a new group: it starts where it is put
        raise UnavailableError(f"describing consumer group {group}: {exc}") from exc
    # some brokers (tansu) list no members for a live group: its state says it is live
    if described.members or described.state in LIVE_STATES:
        members = f"{len(described.members)} active member(s)" if described.members else "active members"
        raise InputError(f"consumer group {group} has {members} (state {described.state.name}): stop its "
                         "consumers, then reset", reason="group_active")


def _committed(admin: AdminClient, group: str, topic: str) -> dict[int, int]:
    try:
        answer = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)],
                                                   request_timeout=10)[group].result()
    except KafkaException as exc:
        if error_code(exc) == KafkaError.GROUP_ID_NOT_FOUND:
            return {}
        raise UnavailableError(f"offsets of consumer group {group}: {exc}") from exc
    return {tp.partition: tp.offset for tp in answer.topic_partitions
            if tp.topic == topic and tp.error is None and tp.offset >= 0}
