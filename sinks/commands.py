"""``guardstream sink``: the PostgreSQL sink, two consumers in two threads.

* the **critical** consumer reads ``events.critical`` alone, in its own group
  (``<GUARDSTREAM_SINK_GROUP>-critical``), with small batches and a short
  maximum age, so no backlog elsewhere ever delays an alert's row;
* the **bulk** consumer reads ``events.high/normal/low``, ``geofences``, ``devices``, the
  ``dlq.*`` topics and ``alerts.actions`` in big batches.

They share one database circuit breaker and one producer (for ``dlq.sink``).
``/readyz`` is ready once the database answered, Kafka answers and both
consumers have their partitions. SIGTERM or Ctrl-C stops both after their
current batch; an unexpected error in either stops the process (exit 1), and
the supervisor's restart replays from the committed offsets.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from guardstream.lifecycle import start_guarded
from guardstream.settings import Settings
from guardstream.transport import KAFKA, component_settings

if TYPE_CHECKING:
    from guardstream.observability import ReadyCheck
    from guardstream.sinks.consumer import SharedBreaker, SinkLoop
    from guardstream.sinks.metrics import SinkMetrics

log = logging.getLogger(__name__)


@dataclass
class Sink:
    producer: Any  # confluent_kafka.Producer, imported when the command runs
    metrics: SinkMetrics
    breaker: SharedBreaker
    stop: threading.Event
    loops: list[SinkLoop] = field(default_factory=list)
    failures: list[BaseException] = field(default_factory=list)


def build(settings: Settings, stop: threading.Event | None = None) -> Sink:
    from confluent_kafka import Consumer, Producer

    from guardstream.catalog import TOPICS
    from guardstream.kafka import consumer_config, producer_config
    from guardstream.schemas.codec import Codec
    from guardstream.schemas.registry import registry_from_settings
    from guardstream.sinks.batching import bulk_policies, critical_policies
    from guardstream.sinks.circuit import BreakerPolicy
    from guardstream.sinks.consumer import SharedBreaker, SinkLoop
    from guardstream.sinks.metrics import SinkMetrics
    from guardstream.sinks.writer import BatchWriter

    codec = Codec(registry_from_settings(settings))
    metrics = SinkMetrics.create()
    breaker = SharedBreaker(BreakerPolicy(max_delay_s=settings.sink_retry_max_ms / 1000), metrics)
    producer = Producer(producer_config(settings, "guardstream-sink"))
    sink = Sink(producer, metrics, breaker, stop or threading.Event())
    critical_group = f"{settings.sink_group}-critical"
    bulk_topics = [t.name for t in TOPICS.events()[1:]] + [
        TOPICS.geofences.name, TOPICS.devices.name, *(t.name for t in TOPICS.dead_letters()),
        TOPICS.alerts_actions.name]
    # A broker may hold an idle fetch for up to fetch.wait.max.ms before answering (tansu looks for
    # new records only after half the wait, then half the rest, ...), so the critical consumer asks
    # again within its batch age. The bulk lane's rows wait up to GUARDSTREAM_SINK_BATCH_MS for their
    # batch anyway: a fetch every fifth of that costs them little, and the embedded broker much less
    # than one every 10 ms over a dozen partitions (an idle `guardstream up`: tansu's CPU 54 % -> 39 %
    # of a core).
    lanes = (
        ("critical", critical_group, [TOPICS.events_critical.name],
         critical_policies(settings.sink_critical_batch_rows, settings.sink_critical_batch_ms / 1000),
         _fetch_within(settings.sink_critical_batch_ms)),
        ("bulk", settings.sink_group, bulk_topics,
         bulk_policies(settings.sink_batch_rows, settings.sink_batch_ms / 1000),
         _fetch_within(settings.sink_batch_ms // 5)),
    )
    for kind, group, topics, policies, overrides in lanes:
        consumer = Consumer(consumer_config(settings, f"guardstream-sink-{kind}", group, **overrides))
        sink.loops.append(SinkLoop(kind, consumer, topics, policies, BatchWriter(settings.database_url), producer,
                                   codec, metrics, breaker, sink.stop))
    return sink


def _fetch_within(wait_ms: int) -> dict[str, int]:
    """Consumer overrides: a fetch waits at most ``wait_ms`` (kept within 5..500 ms)."""
    return {"fetch.wait.max.ms": max(5, min(500, wait_ms))}


def readiness(sink: Sink) -> ReadyCheck:
    from confluent_kafka import KafkaException

    from guardstream.sinks.circuit import State

    def ready() -> tuple[bool, str]:
        if sink.failures:  # a consumer thread ended: not ready until the process exits for a restart
            return False, f"failed: {sink.failures[0]!r}"
        if not sink.breaker.database_answered or sink.breaker.state is not State.CLOSED:
            return False, f"database unreachable (circuit {sink.breaker.state})"
        try:
            sink.producer.list_topics(timeout=1)
        except KafkaException as exc:
            return False, f"Kafka unreachable: {exc}"
        waiting = [loop.kind for loop in sink.loops if not loop.assigned]
        if waiting:
            return False, f"waiting for partitions: {', '.join(waiting)}"
        return True, ""
    return ready


def run(sink: Sink) -> int:
    def failed(exc: BaseException) -> None:  # the main thread reports it and exits 1
        sink.failures.append(exc)
        sink.stop.set()

    # The bulk thread's Python work (decoding, COPY rows) would otherwise hold the interpreter for
    # 5 ms slices; the critical thread waits for one at each of its database round trips.
    sys.setswitchinterval(0.001)
    threads = [start_guarded(f"sink-{loop.kind}", loop.run, failed, log, f"{loop.kind} consumer")
               for loop in sink.loops]
    for thread in threads:
        thread.join()
    sink.producer.flush(10)
    return 1 if sink.failures else 0


def cmd_sink(args: argparse.Namespace) -> int:
    from guardstream.lifecycle import install_stop_handlers
    from guardstream.observability import serve

    settings = component_settings(KAFKA)
    sink = build(settings)
    install_stop_handlers(sink.stop.set)
    endpoints = (serve(sink.metrics.registry, readiness(sink), settings.metrics_host, settings.metrics_port)
                 if settings.metrics_port else None)
    log.info("sink: critical group %s-critical, bulk group %s", settings.sink_group, settings.sink_group)
    try:
        return run(sink)
    finally:
        if endpoints is not None:
            endpoints.close()


def register(sub: argparse._SubParsersAction) -> None:
    sub.add_parser("sink", help="write the priority topics, geofences, devices, dead letters and alert actions "
                   "to PostgreSQL, exactly once").set_defaults(handler=cmd_sink)
