"""Where the CPU goes, per message, in every process of the pipeline.

Runs the whole pipeline (tansu, mosquitto, PostgreSQL, bridge, worker, sink,
gateway with one WebSocket client; bench/pipeline_rig.py) and publishes GPS
fixes at RATE messages/s for SECONDS (plus a panic every 50 ms), after a short
warm-up at the same rate. For each process it prints the CPU-microseconds per
message (from /proc/<pid>/stat before and after, up to the moment PostgreSQL
holds every message) and the share of a core it used; then the total against
the budget of two cores at 10,000 msg/s: 200 us per message for everything, the
servers included. The load generator and the WebSocket client (devices and a
browser, which live elsewhere) are printed apart, outside the total.

Run: python bench/cpu_budget.py [RATE] [SECONDS]
"""

from __future__ import annotations

import sys
from pathlib import Path
from tempfile import TemporaryDirectory

from pipeline_rig import Result, Rig, pick, run_load

GOAL_RATE = 10_000
CORES = 2


def print_budget(result: Result) -> None:
    n = result.messages
    print(f"{n:,} messages at {result.rate:,} msg/s over {result.wall_s:.1f} s "
          f"(published in {result.published_s:.1f} s; {result.pg_positions:,} fixes and {result.pg_alerts:,} "
          f"panics in PostgreSQL)")
    print(f"{'process':<12} {'CPU s':>8} {'us/msg':>8} {'cores':>6}")
    total = 0.0
    for name, seconds in sorted(result.cpu.items(), key=lambda kv: -kv[1]):
        total += seconds
        print(f"{name:<12} {seconds:>8.2f} {seconds / n * 1e6:>8.1f} {seconds / result.wall_s:>6.2f}")
    per_message = total / n * 1e6
    print(f"{'pipeline':<12} {total:>8.2f} {per_message:>8.1f} {total / result.wall_s:>6.2f}")
    budget = CORES * 1e6 / GOAL_RATE
    print(f"budget at {GOAL_RATE:,} msg/s on {CORES} cores: {budget:.0f} us/msg; this run used "
          f"{per_message:.0f} us/msg ({per_message / budget:.0%} of it): two cores carry at most "
          f"{CORES * 1e6 / per_message:,.0f} msg/s at this cost")
    print(f"outside the pipeline: load generator {result.generator_cpu_s / n * 1e6:.1f} us/msg, "
          f"WebSocket client {result.client_cpu_s / n * 1e6:.1f} us/msg")
    fixes, panics = result.latencies(result.fixes), result.latencies(result.panics)
    print(f"latency to the client: fixes p50 {pick(fixes, .5):.1f} ms p99 {pick(fixes, .99):.1f} ms "
          f"({len(fixes):,}/{len(result.fixes):,}); panics p50 {pick(panics, .5):.1f} ms "
          f"p99 {pick(panics, .99):.1f} ms ({len(panics):,}/{len(result.panics):,})")


def main() -> None:
    rate = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 15
    with TemporaryDirectory() as tmp:
        rig = Rig(Path(tmp))
        try:
            rig.start()
            run_load(rig, rate, min(3.0, seconds))  # warm-up: connections, caches, the groups settled
            print_budget(run_load(rig, rate, seconds))
        finally:
            rig.stop()


if __name__ == "__main__":
    main()
