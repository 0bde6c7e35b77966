"""How the embedded broker's CPU grows with what it has stored, at a steady load.

Runs the whole pipeline (bench/pipeline_rig.py) at RATE messages/s for
SECONDS and prints, every EVERY seconds, each process's share of a core over
that interval; then the straight line through the broker's shares (cores at the
start, and added per minute), and when at that slope it would fill a core.

Why it grows: tansu 0.6's memory store keeps each produced batch as an object
and, on every fetch that finds new records in a partition, lists every object
the partition ever stored to find them (``dynostore.rs``, ``fetch``). It
deletes nothing (no retention, and ``DeleteRecords`` is unimplemented). So a
partition's fetches cost more with every batch produced to it, whatever the
message rate: the batch rate (the bridge's linger, the worker's batches) is
what drives it. Apache Kafka indexes its log and does not grow this way.

Run: python bench/broker_growth.py [RATE] [SECONDS] [EVERY]
(``GUARDSTREAM_*`` settings in its environment reach every component, e.g.
``GUARDSTREAM_BRIDGE_LINGER_MS=100``)
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from tempfile import TemporaryDirectory

from pipeline_rig import Rig, pick, run_load

SHOWN = ("tansu", "worker", "bridge", "postgres", "sink", "gateway", "mosquitto")


def fit(points: list[tuple[float, float]]) -> tuple[float, float]:
    """(intercept, slope) of the least-squares line through ``points``."""
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in points) / spread if spread else 0.0
    return mean_y - slope * mean_x, slope


def main() -> None:
    rate = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 90
    every = float(sys.argv[3]) if len(sys.argv) > 3 else 10
    broker: list[tuple[float, float]] = []
    with TemporaryDirectory() as tmp:
        rig = Rig(Path(tmp))
        try:
            rig.start()
            done = threading.Event()

            def sample() -> None:
                began = previous_at = time.monotonic()
                previous = rig.cpu()
                print(f"{'s':>5} " + " ".join(f"{name:>9}" for name in SHOWN) + "   (share of a core)")
                while not done.wait(every):
                    now, at = rig.cpu(), time.monotonic()
                    shares = {k: (now[k] - previous.get(k, 0.0)) / (at - previous_at) for k in now}
                    print(f"{at - began:>5.0f} " + " ".join(f"{shares.get(name, 0.0):>9.2f}" for name in SHOWN),
                          flush=True)
                    broker.append(((at + previous_at) / 2 - began, shares["tansu"]))
                    previous, previous_at = now, at

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            result = run_load(rig, rate, seconds)
            done.set()
            sampler.join()
        finally:
            rig.stop()
    print(f"{result.messages:,} messages at {rate:,} msg/s; {result.pg_positions:,} fixes and "
          f"{result.pg_alerts:,} panics reached PostgreSQL")
    fixes, panics = result.latencies(result.fixes), result.latencies(result.panics)
    print(f"latency to the client: fixes p50 {pick(fixes, .5):.1f} ms p99 {pick(fixes, .99):.1f} ms; "
          f"panics p50 {pick(panics, .5):.1f} ms p99 {pick(panics, .99):.1f} ms")
    if len(broker) >= 2:
        start, slope = fit(broker)
        per_minute = slope * 60
        print(f"broker: {start:.2f} of a core at the start, {per_minute:+.2f} a minute", end="")
        print(f"; a full core after about {(1 - start) / per_minute:.1f} min" if per_minute > 0 and start < 1 else "")


if __name__ == "__main__":
    main()
