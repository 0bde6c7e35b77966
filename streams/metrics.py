"""The stream worker's metrics, declared once."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from guardstream.observability import new_registry

LATENCY_BUCKETS = (.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60)


@dataclass(frozen=True)
class WorkerMetrics:
    registry: CollectorRegistry
    records_in: Counter
    records_out: Counter
    dead_letters: Counter
    duplicates: Counter
    latency: Histogram
    batch_size: Histogram
    batch_seconds: Histogram
    fences: Gauge
    index_rebuild: Histogram
    transitions: Counter
    violations: Counter
    skipped_fixes: Counter
    devices: Gauge
    registry_devices: Gauge

    @classmethod
    def create(cls) -> WorkerMetrics:
        r = new_registry("worker")
        return cls(
            registry=r,
            records_in=Counter("guardstream_worker_records_in_total", "Raw records taken in.", ["topic"],
                               registry=r),
            records_out=Counter("guardstream_worker_records_out_total", "Events written, per topic.", ["topic"],
                                registry=r),
            dead_letters=Counter("guardstream_worker_dead_letters_total", "Raw records refused, by reason.",
                                 ["reason"], registry=r),
            duplicates=Counter("guardstream_worker_duplicates_total", "Raw records dropped as duplicates (msg.id).",
                               registry=r),
            latency=Histogram("guardstream_worker_latency_seconds",
                              "From the bridge receiving a message to its event being written.", ["stage"],
                              buckets=LATENCY_BUCKETS, registry=r),
            batch_size=Histogram("guardstream_worker_batch_records", "Raw records per batch.",
                                 buckets=(1, 10, 50, 100, 500, 1000, 2000, 5000, 10000), registry=r),
            batch_seconds=Histogram("guardstream_worker_batch_seconds", "Time to process and write one batch.",
                                    buckets=LATENCY_BUCKETS, registry=r),
            fences=Gauge("guardstream_worker_geofences", "Geofences in the index.", registry=r),
            index_rebuild=Histogram("guardstream_worker_geofence_index_rebuild_seconds",
                                    "Time to rebuild the geofence index.", buckets=LATENCY_BUCKETS, registry=r),
            transitions=Counter("guardstream_worker_geofence_transitions_total", "Enter and exit events emitted.",
                                registry=r),
            violations=Counter("guardstream_worker_geofence_violations_total", "Violation episodes started.",
                               registry=r),
            skipped_fixes=Counter("guardstream_worker_geofence_skipped_fixes_total",
                                  "Fixes that changed no state (stale or inaccurate).", registry=r),
            devices=Gauge("guardstream_worker_devices", "Devices with state on this worker, per store.", ["store"],
                          registry=r),
            registry_devices=Gauge("guardstream_worker_registry_devices",
                                   "Devices in the worker's copy of the device registry.", registry=r),
        )
