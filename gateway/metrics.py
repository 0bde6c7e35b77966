"""The gateway's metrics, declared once and handed to the code that counts.

``kind`` is the channel kind (alerts, positions, sensors, telemetry, device,
noc); ``reason`` a refusal's reason code (see ``protocol.CLOSE_CODES``).
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from guardstream.observability import new_registry

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Deliveries(Collector):
    """Messages delivered per channel kind and their delivery latency.

    Counted with plain integers on the event loop and turned into samples when
    scraped: this runs once per message per client, where a labelled counter and a
    histogram (each with its lock) cost a fifth of the gateway's CPU.
    """

    def __init__(self) -> None:
        self.delivered: defaultdict[str, int] = defaultdict(int)
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)  # the last one: above every bound
        self.latency_sum = 0.0

    def record(self, kind: str, latency_s: float | None) -> None:
        self.delivered[kind] += 1
        if latency_s is not None:
            self.buckets[bisect.bisect_left(LATENCY_BUCKETS, latency_s)] += 1
            self.latency_sum += latency_s

    def collect(self) -> Iterator[Metric]:
        delivered = CounterMetricFamily("guardstream_gateway_messages_delivered", "Event messages sent to clients.",
                                        labels=["kind"])
        for kind, count in sorted(self.delivered.items()):
            delivered.add_metric([kind], count)
        yield delivered
        cumulative, total = [], 0
        for bound, count in zip((*LATENCY_BUCKETS, float("inf")), list(self.buckets), strict=True):
            total += count
            cumulative.append(("+Inf" if bound == float("inf") else repr(bound), total))
        yield HistogramMetricFamily("guardstream_gateway_delivery_latency_seconds",
                                    "From the event's Kafka timestamp to its message being written to the client.",
                                    buckets=cumulative, sum_value=self.latency_sum)


@dataclass(frozen=True)
class GatewayMetrics:
    registry: CollectorRegistry
    deliveries: Deliveries
    connections: Gauge
    connections_total: Counter
    subscriptions: Gauge
    conflated: Counter
    dropped: Counter
    replayed: Counter
    queued: Gauge
    queue_deepest: Gauge
    refusals: Counter
    errors: Counter
    feed_records: Counter
    feed_refused: Counter
    alert_actions: Counter
    _children: dict[tuple[int, str], Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def create(cls) -> GatewayMetrics:
        r = new_registry("gateway")
        deliveries = Deliveries()
        r.register(deliveries)
        return cls(
            registry=r,
            deliveries=deliveries,
            connections=Gauge("guardstream_gateway_open_connections", "Open WebSocket connections.", registry=r),
            connections_total=Counter("guardstream_gateway_connections_total",
                                      "Connections accepted after authentication.", registry=r),
            subscriptions=Gauge("guardstream_gateway_subscriptions", "Subscriptions of open connections.", ["kind"],
                                registry=r),
            conflated=Counter("guardstream_gateway_messages_conflated_total",
                              "Queued positions replaced by a newer one of the same device.", ["kind"], registry=r),
            dropped=Counter("guardstream_gateway_messages_dropped_total",
                            "Messages dropped from a full client queue.", ["kind"], registry=r),
            replayed=Counter("guardstream_gateway_messages_replayed_total", "Event messages sent by resume replays.",
                             registry=r),
            queued=Gauge("guardstream_gateway_queued_messages", "Messages waiting in client queues, all clients.",
                         registry=r),
            queue_deepest=Gauge("guardstream_gateway_queue_depth_max",
                                "Messages waiting in the deepest client queue.", registry=r),
            refusals=Counter("guardstream_gateway_refusals_total",
                             "Connections refused or closed by the gateway, by reason.", ["reason"], registry=r),
            errors=Counter("guardstream_gateway_client_errors_total",
                           "Client messages answered with an error, by reason.", ["reason"], registry=r),
            feed_records=Counter("guardstream_gateway_feed_records_total", "Records read by the push consumer.",
                                 ["topic"], registry=r),
            feed_refused=Counter("guardstream_gateway_feed_refused_total",
                                 "Records the push consumer could not decode or route, by reason.", ["reason"],
                                 registry=r),
            alert_actions=Counter("guardstream_gateway_alert_actions_total", "Alert actions written to Kafka.",
                                  ["action"], registry=r),
        )

    def inc(self, counter: Counter, label: str) -> None:
        """``counter.labels(label).inc()``, each child looked up once: the delivery path is hot."""
        child = self._children.get((id(counter), label))
        if child is None:
            child = self._children[(id(counter), label)] = counter.labels(label)
        child.inc()
