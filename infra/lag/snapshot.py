"""What one collection saw, and the snapshot the exporter serves; pure, no I/O.

The collector reads the cluster into an :class:`Observation` (committed offsets
per group, exact end offsets per partition), asks :func:`offsets_to_date` which
records' timestamps it needs, reads those, and calls :func:`assemble`, which
computes lags, lag seconds and statuses and returns the new
:class:`Snapshot` with the windows to carry into the next collection.

A snapshot replaces the previous one whole: a group or topic that is gone from
the cluster is gone from the next snapshot, and so are its series. Lag is never
negative (a committed offset past the end reads as zero lag).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from .burrow import Commit, Status, Window, advance, partition_status, worst

TopicPartition = tuple[str, int]  # (topic, partition)
WindowKey = tuple[str, str, int]  # (group, topic, partition)


@dataclass(frozen=True)
class GroupObservation:
    live: bool  # the group has members
    committed: Mapping[TopicPartition, int]  # partitions without a committed offset are absent


@dataclass(frozen=True)
class Observation:
    at: float  # seconds since the epoch
    ends: Mapping[TopicPartition, tuple[int, int]]  # (oldest offset, exact end offset)
    groups: Mapping[str, GroupObservation]
    failed_groups: frozenset[str] = frozenset()  # offsets or state unreadable: ERR


@dataclass(frozen=True)
class PartitionLag:
    group: str
    topic: str
    partition: int
    committed: int
    end: int
    lag: int
    lag_seconds: float | None  # None: the record's timestamp could not be read
    status: Status
    window: int  # entries in the partition's window


@dataclass(frozen=True)
class Snapshot:
    taken_at: float
    window_size: int
    ends: Mapping[TopicPartition, tuple[int, int]]
    lags: tuple[PartitionLag, ...]  # sorted by group, topic, partition
    groups: Mapping[str, Status]  # every group seen, those without committed offsets included
    windows: Mapping[WindowKey, Window] = field(repr=False, default_factory=dict)

    def lag_sums(self) -> dict[tuple[str, str], int]:
        """{(group, topic): total lag}."""
        sums: dict[tuple[str, str], int] = {}
        for row in self.lags:
            sums[(row.group, row.topic)] = sums.get((row.group, row.topic), 0) + row.lag
        return sums


EMPTY = Snapshot(0.0, 0, {}, (), {})


def offsets_to_date(observation: Observation) -> set[tuple[str, int, int]]:
    """(topic, partition, committed offset) of every lagging partition: the records whose
    timestamps give the lag in seconds."""
    wanted = set()
    for group in observation.groups.values():
        for tp, committed in group.committed.items():
            end = observation.ends.get(tp)
            if end is not None and committed < end[1]:
                wanted.add((tp[0], tp[1], max(committed, end[0])))
    return wanted


def lag_seconds(now: float, timestamp_ms: int | None, lag: int) -> float | None:
    """Seconds since the first unconsumed record was written; 0 without lag, never negative."""
    if lag <= 0:
        return 0.0
    if timestamp_ms is None:
        return None
    return max(0.0, now - timestamp_ms / 1000)


def assemble(observation: Observation, timestamps: Mapping[tuple[str, int, int], int],
             previous: Snapshot, window_size: int) -> Snapshot:
    """The snapshot of ``observation``; ``timestamps`` holds the record timestamps (ms) asked
    for by :func:`offsets_to_date`; windows continue from ``previous``."""
    now = observation.at
    lags: list[PartitionLag] = []
    windows: dict[WindowKey, Window] = {}
    statuses: dict[str, Status] = {}
    for name in sorted(observation.groups):
        group = observation.groups[name]
        partition_statuses = []
        for (topic, partition), committed in sorted(group.committed.items()):
            end = observation.ends.get((topic, partition))
            if end is None:  # a topic deleted since the offsets were read
                continue
            lag = max(0, end[1] - committed)
            key = (name, topic, partition)
            window = advance(previous.windows.get(key, ()), Commit(committed, lag, now),
                             live=group.live, size=window_size)
            windows[key] = window
            status = partition_status(window, lag, now, window_size)
            partition_statuses.append(status)
            stamp = timestamps.get((topic, partition, max(committed, end[0])))
            lags.append(PartitionLag(name, topic, partition, committed, end[1], lag,
                                     lag_seconds(now, stamp, lag), status, len(window)))
        statuses[name] = worst(partition_statuses)
    for name in observation.failed_groups:
        statuses[name] = Status.ERR
        # a passing failure keeps the group's history: its windows carry over untouched
        windows.update({k: w for k, w in previous.windows.items() if k[0] == name})
    return Snapshot(now, window_size, dict(observation.ends), tuple(lags), statuses, windows)
