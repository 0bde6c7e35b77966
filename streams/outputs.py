"""What one processed batch writes and counts, the same for both engines of the worker.

``pipeline.process`` decides; this module turns its :class:`Outcome` into the
records to hand to a producer (events and dead letters, encoded), stages the
per-device state that changed, and counts the batch in the worker's metrics.
The batch engine (``worker.py``) and the Faust engine (``faust_engine.py``)
differ only in which producer takes the records and how offsets are committed.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from typing import NamedTuple

from guardstream.catalog import TOPICS
from guardstream.records import DEAD_LETTER
from guardstream.schemas.codec import Codec
from guardstream.schemas.dead_letters import Source, dead_letter
from guardstream.streams.metrics import WorkerMetrics
from guardstream.streams.pipeline import Outcome, RawRecord
from guardstream.streams.state_store import StateStore


EVENT_TOPICS = frozenset(t.name for t in TOPICS.events())


class OutRecord(NamedTuple):
    topic: str
    value: bytes
    key: bytes | None
    headers: list[tuple[str, bytes]] | None = None


def out_records(outcome: Outcome, codec: Codec, now_ms: int) -> Iterator[OutRecord]:
    """The events and dead letters of a batch, encoded, in the order they are to be written."""
    for emit in outcome.emits:
        yield OutRecord(emit.topic, codec.encode(emit.schema, emit.value), emit.key.encode())
    for rejected in outcome.refused:
        r, refused = rejected.record, rejected.refused
        letter, headers = dead_letter("validate", refused.reason, refused.detail,
                                      Source(r.topic, r.partition, r.offset, r.key), r.value or b"", now_ms)
        yield OutRecord(TOPICS.dlq_validate.name, codec.encode(DEAD_LETTER, letter), r.key, headers)


def refused_letter(codec: Codec, topic: str, value: bytes | None, key: bytes | None, why: str,
                   now_ms: int) -> OutRecord:
    """The dead letter (stage ``route``, reason ``produce_refused``) written in place of an event
    Kafka refused for good: one record never stops a lane."""
    letter, headers = dead_letter("route", "produce_refused", f"Kafka refused the event for {topic}: {why}",
                                  Source(topic, key=key), value or b"", now_ms)
    return OutRecord(TOPICS.dlq_validate.name, codec.encode(DEAD_LETTER, letter), key, headers)


def is_event(topic: str) -> bool:
    """An output that may become a dead letter when Kafka refuses it: not state, not a dead letter."""
    return topic in EVENT_TOPICS


def stage_changes(store: StateStore, outcome: Outcome, records: list[RawRecord]) -> None:
    """Stage each changed device state under the raw partition its records came from."""
    origin = {(r.key or b"").decode("utf-8", "replace"): (r.topic, r.partition) for r in records}
    for name, changed in (("geofence", outcome.devices), ("rules", outcome.rules)):
        for device, value in changed.items():
            topic, partition = origin.get(device) or store.origin.get((name, device), (None, None))
            if topic is not None:
                store.stage(name, device, value, topic, partition)


LATENCY_SAMPLE = 10  # latency observations per batch, at most about


def count(metrics: WorkerMetrics, store: StateStore, outcome: Outcome, records: list[RawRecord],
          started: float, done_ms: int) -> None:
    """Count one batch: records in and out, dead letters, state machine outputs, sizes, latency."""
    m = metrics
    per_topic: dict[str, int] = defaultdict(int)
    for record in records:
        per_topic[record.topic] += 1
    for topic, n in per_topic.items():
        m.records_in.labels(topic).inc(n)
    out_topics: dict[str, int] = defaultdict(int)
    for emit in outcome.emits:
        out_topics[emit.topic] += 1
    for topic, n in out_topics.items():
        m.records_out.labels(topic).inc(n)
    for rejected in outcome.refused:
        m.dead_letters.labels(rejected.refused.reason).inc()
    m.duplicates.inc(outcome.duplicates)
    m.transitions.inc(outcome.transitions)
    m.violations.inc(outcome.violations)
    m.skipped_fixes.inc(outcome.skipped_fixes)
    m.batch_size.observe(len(records))
    m.batch_seconds.observe(time.perf_counter() - started)
    # a sample of ten a batch keeps this off the hot path: each observation costs 1.4 us, and the
    # labelled child is looked up once (labels() costs 1.3 us more)
    observe = m.latency.labels("received_to_written").observe
    for emit in outcome.emits[:: max(1, len(outcome.emits) // LATENCY_SAMPLE)]:
        observe(max(0, done_ms - emit.value["received_ms"]) / 1000)
    for name, values in store.values.items():
        m.devices.labels(name).set(len(values))
