"""``guardstream lag-exporter``: collects consumer lag on an interval, serves the last snapshot.

Collection runs on its own thread every ``GUARDSTREAM_LAG_INTERVAL_S``; the
``/metrics`` endpoint only hands out what the last collection saw. A failed
collection is counted and logged and the previous snapshot stays served (its
age is ``guardstream_lag_snapshot_age_seconds``). ``/readyz`` answers ready once
a collection has succeeded.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from guardstream.errors import UnavailableError
from guardstream.settings import Settings

from .collect import LagCollector
from .metrics import LagMetrics

log = logging.getLogger(__name__)


def collection_interval_s(settings: Settings) -> float:
    """The embedded stack collects often, so a status moves within seconds of a local test."""
    if settings.lag_interval_s is not None:
        return settings.lag_interval_s
    return 2.0 if settings.embedded else 10.0


class LagExporter:
    def __init__(self, collector: LagCollector, metrics: LagMetrics, interval_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.collector = collector
        self.metrics = metrics
        self.interval_s = interval_s
        self.stopping = threading.Event()
        self._clock = clock
        self._collected = threading.Event()

    def ready(self) -> tuple[bool, str]:
        if self._collected.is_set():
            return True, ""
        return False, "no lag collection has succeeded yet"

    def run_cycle(self) -> bool:
        """Collect once and publish the snapshot; False when the collection failed."""
        started = self._clock()
        try:
            snapshot = self.collector.collect()
        except UnavailableError as exc:
            self.metrics.collect_errors.labels(exc.reason).inc()
            log.warning("lag collection failed: %s", exc.detail)
            return False
        finally:
            self.metrics.collect_duration.observe(self._clock() - started)
        self.metrics.snapshot.publish(snapshot)
        for reason in self.collector.problems:
            self.metrics.collect_errors.labels(reason).inc()
        self._collected.set()
        return True

    def run(self) -> None:
        """Collect every interval until :attr:`stopping` is set."""
        while not self.stopping.is_set():
            started = self._clock()
            self.run_cycle()
            self.stopping.wait(max(0.0, self.interval_s - (self._clock() - started)))


def run(settings: Settings) -> int:
    """Run the exporter until SIGTERM/SIGINT."""
    from guardstream.lifecycle import install_stop_handlers
    from guardstream.observability import serve

    collector = LagCollector(settings)
    metrics = LagMetrics.create(time.time)
    exporter = LagExporter(collector, metrics, collection_interval_s(settings))
    endpoints = serve(metrics.registry, exporter.ready, settings.metrics_host, settings.metrics_port) \
        if settings.metrics_port else None
    install_stop_handlers(exporter.stopping.set)
    log.info("lag exporter: Kafka %s every %gs, status window %d", settings.kafka_bootstrap_servers,
             exporter.interval_s, settings.lag_window)
    try:
        exporter.run()
    finally:
        collector.close()
        if endpoints:
            endpoints.close()
    return 0
