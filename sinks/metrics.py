"""The PostgreSQL sink's metrics, declared once and handed to the code that counts.

Labels follow the shared vocabulary of ``guardstream/observability.py``: ``kind``
is the table for row counts, the consumer (``critical`` or ``bulk``) for batch
figures and retries, and the outcome for alert actions; ``topic`` and ``reason``
name a dead letter's source topic and reason code.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from guardstream.observability import new_registry


@dataclass(frozen=True)
class SinkMetrics:
    registry: CollectorRegistry
    rows_written: Counter
    duplicates_skipped: Counter
    batches: Counter
    batch_rows: Histogram
    batch_seconds: Histogram
    batch_age_seconds: Histogram
    dead_letters: Counter
    circuit_state: Gauge
    retries: Counter
    paused: Gauge
    alert_actions: Counter

    @classmethod
    def create(cls) -> SinkMetrics:
        r = new_registry("sink")
        return cls(
            registry=r,
            rows_written=Counter("guardstream_sink_rows_written_total",
                                 "Rows inserted or updated, by table (kind).", ["kind"], registry=r),
            duplicates_skipped=Counter("guardstream_sink_duplicates_skipped_total",
                                       "Rows already present (a replay or a duplicate event_id), by table (kind).",
                                       ["kind"], registry=r),
            batches=Counter("guardstream_sink_batches_total",
                            "Batches committed (database, then Kafka offsets), by consumer (kind).", ["kind"],
                            registry=r),
            batch_rows=Histogram("guardstream_sink_batch_rows", "Records per committed batch, by consumer (kind).",
                                 ["kind"], buckets=(1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000),
                                 registry=r),
            batch_seconds=Histogram("guardstream_sink_batch_duration_seconds",
                                    "Time to write a batch and commit it, database and offsets, by consumer (kind).",
                                    ["kind"],
                                    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
                                    registry=r),
            batch_age_seconds=Histogram("guardstream_sink_batch_age_seconds",
                                        "From a batch's first record polled to its commit, by consumer (kind).",
                                        ["kind"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
                                        registry=r),
            dead_letters=Counter("guardstream_sink_dead_letters_total",
                                 "Records sent to dlq.sink, by source topic and reason code.", ["topic", "reason"],
                                 registry=r),
            circuit_state=Gauge("guardstream_sink_circuit_state",
                                "Database circuit breaker: 0 closed, 1 half-open, 2 open.", registry=r),
            retries=Counter("guardstream_sink_retries_total",
                            "Batch writes that failed for want of the database and will be retried, by consumer "
                            "(kind).", ["kind"], registry=r),
            paused=Gauge("guardstream_sink_paused", "1 while a consumer is paused, waiting for the database, by "
                         "consumer (kind).", ["kind"], registry=r),
            alert_actions=Counter("guardstream_sink_alert_actions_total",
                                  "Alert actions by outcome (kind): applied, stale (older than the alert's state), "
                                  "pending (alert not written yet), applied_pending (applied when the alert "
                                  "arrived).", ["kind"], registry=r),
        )
