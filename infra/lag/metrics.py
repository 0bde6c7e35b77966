"""The lag exporter's metrics, declared once.

Lag series keep the names of the widely used kafka_exporter (danielqsj), so its
dashboards and alerts work unchanged: ``kafka_consumergroup_lag``,
``kafka_consumergroup_lag_sum``, ``kafka_consumergroup_current_offset``,
``kafka_topic_partition_current_offset``, ``kafka_topic_partition_oldest_offset``.
Beyond them: ``kafka_consumergroup_lag_seconds`` and
``guardstream_consumergroup_status``. Unlike kafka_exporter, a partition without
a committed offset has no series (kafka_exporter exports lag -1 there), so lag
is never negative.

A scrape reads no Kafka: :class:`SnapshotCollector` yields the last snapshot,
whose families are built once per collection, so a scrape costs the same
whatever the cluster size and however often Prometheus asks.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric

from guardstream.observability import new_registry

from .burrow import SEVERITY
from .snapshot import EMPTY, Snapshot


def snapshot_families(snapshot: Snapshot) -> list[Metric]:
    """Every lag series of one snapshot."""
    lag = GaugeMetricFamily("kafka_consumergroup_lag", "Records the group has yet to consume, per partition.",
                            labels=["consumergroup", "topic", "partition"])
    lag_sum = GaugeMetricFamily("kafka_consumergroup_lag_sum", "Records the group has yet to consume, per topic.",
                                labels=["consumergroup", "topic"])
    committed = GaugeMetricFamily("kafka_consumergroup_current_offset", "The group's committed offset.",
                                  labels=["consumergroup", "topic", "partition"])
    seconds = GaugeMetricFamily(
        "kafka_consumergroup_lag_seconds",
        "Age of the record at the committed offset (0 without lag): how far behind in time the group is.",
        labels=["consumergroup", "topic", "partition"])
    current = GaugeMetricFamily("kafka_topic_partition_current_offset", "The partition's exact end offset.",
                                labels=["topic", "partition"])
    oldest = GaugeMetricFamily("kafka_topic_partition_oldest_offset", "The partition's oldest offset.",
                               labels=["topic", "partition"])
    status = GaugeMetricFamily(
        "guardstream_consumergroup_status",
        "1 for the group's current status (OK, WARN, STALL, STOP, ERR; Burrow's rules), 0 for the others.",
        labels=["consumergroup", "status"])
    for (topic, partition), (low, end) in sorted(snapshot.ends.items()):
        current.add_metric([topic, str(partition)], end)
        oldest.add_metric([topic, str(partition)], low)
    for row in snapshot.lags:
        labels = [row.group, row.topic, str(row.partition)]
        lag.add_metric(labels, row.lag)
        committed.add_metric(labels, row.committed)
        if row.lag_seconds is not None:
            seconds.add_metric(labels, row.lag_seconds)
    for (group, topic), total in sorted(snapshot.lag_sums().items()):
        lag_sum.add_metric([group, topic], total)
    for group, verdict in sorted(snapshot.groups.items()):
        for each in SEVERITY:
            status.add_metric([group, each.value], 1 if each is verdict else 0)
    return [lag, lag_sum, committed, seconds, current, oldest, status]


class SnapshotCollector:
    """Yields the families of the latest snapshot; :meth:`publish` swaps in a new one."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._snapshot = EMPTY
        self._families: list[Metric] = []

    def publish(self, snapshot: Snapshot) -> None:
        families = snapshot_families(snapshot)
        with self._lock:
            self._snapshot, self._families = snapshot, families

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            snapshot, families = self._snapshot, self._families
        yield from families
        if snapshot is not EMPTY:
            yield GaugeMetricFamily("guardstream_lag_snapshot_age_seconds",
                                    "Seconds since the served lag snapshot was collected.",
                                    value=max(0.0, self._clock() - snapshot.taken_at))


@dataclass(frozen=True)
class LagMetrics:
    registry: CollectorRegistry
    snapshot: SnapshotCollector
    collect_duration: Histogram
    collect_errors: Counter

    @classmethod
    def create(cls, clock: Callable[[], float]) -> LagMetrics:
        r = new_registry("lag-exporter")
        snapshot = SnapshotCollector(clock)
        r.register(snapshot)
        return cls(
            registry=r,
            snapshot=snapshot,
            collect_duration=Histogram("guardstream_lag_collect_duration_seconds",
                                       "Time one lag collection took.", registry=r,
                                       buckets=(.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60)),
            collect_errors=Counter("guardstream_lag_collect_errors_total",
                                   "Lag collections that failed (reason unavailable) or could not read "
                                   "everything (group_listing, groups, watermarks, end_offsets, timestamps); "
                                   "a partial collection is still served.", ["reason"], registry=r),
        )
