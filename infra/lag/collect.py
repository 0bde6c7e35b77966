"""One lag collection: the Admin API and the offset reader around the pure snapshot.

Per collection: list the consumer groups and describe them (live or not), fetch
each group's committed offsets (one request per group, all in flight at once),
list every partition's oldest and latest offsets (two batched requests), make
the end offsets exact and read the timestamps lag seconds needs
(:mod:`.reader`), then :func:`.snapshot.assemble`. The clock is injectable so
tests can step a status window without waiting.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future

from confluent_kafka import ConsumerGroupState, ConsumerGroupTopicPartitions, KafkaException
from confluent_kafka import TopicPartition as KafkaPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from guardstream.errors import InputError, UnavailableError
from guardstream.kafka import admin_config, error_text
from guardstream.settings import Settings

from .reader import OffsetReader
from .snapshot import EMPTY, GroupObservation, Observation, Snapshot, TopicPartition, assemble, offsets_to_date

log = logging.getLogger(__name__)

LIVE_STATES = frozenset({ConsumerGroupState.STABLE, ConsumerGroupState.PREPARING_REBALANCING,
                         ConsumerGroupState.COMPLETING_REBALANCING})


class LagCollector:
    def __init__(self, settings: Settings, window_size: int | None = None,
                 clock: Callable[[], float] = time.time, group: str | None = None,
                 timeout_s: float = 10.0) -> None:
        """``group``: collect that one group (and the topics it committed on) only."""
        self._admin = AdminClient(admin_config(settings, "guardstream-lag"))
        self._reader = OffsetReader(settings, timeout_s)
        self._window_size = window_size or settings.lag_window
        self._clock = clock
        self._group = group
        self._timeout_s = timeout_s
        self.snapshot: Snapshot = EMPTY
        # what the last collection could not read, {reason code: count}; its snapshot is served anyway
        self.problems: dict[str, int] = {}

    def close(self) -> None:
        self._reader.close()

    def collect(self) -> Snapshot:
        """Read the cluster once; returns the new snapshot (also kept in ``self.snapshot``)."""
        problems: dict[str, int] = {}
        now = self._clock()
        names = self._group_names(problems)
        groups, failed = self._groups(names, problems)
        wanted_topics = None if self._group is None else {t for g in groups.values() for t, _ in g.committed}
        ends = self._exact_ends(self._watermarks(wanted_topics, problems), problems)
        observation = Observation(now, ends, groups, frozenset(failed))
        stamps = self._reader.timestamps(offsets_to_date(observation))
        if stamps.missing:
            problems["timestamps"] = len(stamps.missing)
        self.snapshot = assemble(observation, stamps.values, self.snapshot, self._window_size)
        self.problems = problems
        for reason, count in problems.items():
            log.warning("lag collection: %d %s not read", count, reason.replace("_", " "))
        return self.snapshot

    # -- consumer groups -------------------------------------------------------------

    def _group_names(self, problems: dict[str, int]) -> list[str]:
        try:
            listed = self._admin.list_consumer_groups(request_timeout=self._timeout_s).result()
        except KafkaException as exc:
            raise UnavailableError(f"Kafka unreachable: listing consumer groups: {error_text(exc)}") from exc
        if listed.errors:  # a broker that did not answer: its groups are missing from this collection
            problems["group_listing"] = len(listed.errors)
        names = sorted(g.group_id for g in listed.valid)
        if self._group is None:
            return names
        if self._group not in names:
            raise InputError(f"no consumer group {self._group!r} on the cluster", reason="unknown_group")
        return [self._group]

    def _groups(self, names: list[str], problems: dict[str, int]) -> tuple[dict[str, GroupObservation], set[str]]:
        """({group: what it committed, and whether it is live}, groups that could not be read)."""
        if not names:
            return {}, set()
        states = self._admin.describe_consumer_groups(names, request_timeout=self._timeout_s)
        offsets = {name: self._admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(name)],
                                                                 request_timeout=self._timeout_s)[name]
                   for name in names}
        groups: dict[str, GroupObservation] = {}
        failed: set[str] = set()
        for name in names:
            try:
                live = states[name].result().state in LIVE_STATES
                committed = {(tp.topic, tp.partition): tp.offset for tp in offsets[name].result().topic_partitions
                             if tp.error is None and tp.offset >= 0}
            except KafkaException as exc:
                log.warning("consumer group %s: %s", name, error_text(exc))
                failed.add(name)
                continue
            groups[name] = GroupObservation(live, committed)
        if failed:
            problems["groups"] = len(failed)
        return groups, failed

    # -- end offsets -----------------------------------------------------------------

    def _watermarks(self, topics: set[str] | None,
                    problems: dict[str, int]) -> dict[TopicPartition, tuple[int, int]]:
        """{(topic, partition): (oldest, latest)} of every partition, or of ``topics`` only."""
        try:
            metadata = self._admin.list_topics(timeout=self._timeout_s)
        except KafkaException as exc:
            raise UnavailableError(f"Kafka unreachable: {error_text(exc)}") from exc
        partitions = [KafkaPartition(name, p) for name, topic in metadata.topics.items()
                      if topic.error is None and not name.startswith("__")  # internal topics
                      and (topics is None or name in topics)
                      for p in topic.partitions]
        if not partitions:
            return {}
        earliest = self._list_offsets(partitions, OffsetSpec.earliest())
        latest = self._list_offsets(partitions, OffsetSpec.latest())
        answered = {tp: (earliest[tp], latest[tp]) for tp in earliest.keys() & latest.keys()}
        if len(answered) < len(partitions):
            problems["watermarks"] = len(partitions) - len(answered)
        return answered

    def _list_offsets(self, partitions: list[KafkaPartition], spec: OffsetSpec) -> dict[TopicPartition, int]:
        futures = self._admin.list_offsets({tp: spec for tp in partitions}, request_timeout=self._timeout_s)
        return {(tp.topic, tp.partition): offset for tp, offset in _results(futures.items())}

    def _exact_ends(self, watermarks: Mapping[TopicPartition, tuple[int, int]],
                    problems: dict[str, int]) -> dict[TopicPartition, tuple[int, int]]:
        read = self._reader.exact_ends(watermarks)
        if read.missing:
            problems["end_offsets"] = len(read.missing)
        return read.values


def _results(futures: Iterable[tuple[KafkaPartition, Future]]) -> Iterable[tuple[KafkaPartition, int]]:
    """(partition, offset) of each answered list_offsets request; a partition whose leader
    does not answer is left out of this collection."""
    for tp, future in futures:
        try:
            yield tp, future.result().offset
        except KafkaException as exc:
            log.warning("offsets of %s[%d]: %s", tp.topic, tp.partition, error_text(exc))
