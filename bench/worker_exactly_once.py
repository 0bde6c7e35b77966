"""The worker's exactly-once mode beside the default, on the same backlog, alternately twice.

Each run: a fresh tansu broker (six partitions), N GPS fixes of 1,000 guards and N_FENCES
geofences written first, one ``guardstream worker`` draining them (``scale_curve.run_workers``),
once with ``GUARDSTREAM_WORKER_EXACTLY_ONCE`` off and once on: events/s from the first record
taken to the last, and the worker's and the broker's CPU time per event. The transactional
mode commits one Kafka transaction per 200 ms checkpoint per lane.

Prints figures; asserts nothing. Run: python bench/worker_exactly_once.py [N] [N_FENCES]
"""

from __future__ import annotations

import sys

from scale_curve import run_workers


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 60_000
    n_fences = int(sys.argv[2]) if len(sys.argv) > 2 else 2_000
    print(f"{n:,} GPS fixes of 1,000 guards, {n_fences:,} geofences, one worker", flush=True)
    for _ in range(2):
        for mode in ("off", "on"):
            got = run_workers(1, n, n_fences, GUARDSTREAM_WORKER_EXACTLY_ONCE=mode)
            print(f"exactly-once {mode:>3}: {got['rate']:>8,.0f} events/s ({n:,} in {got['seconds']:.2f} s); "
                  f"worker CPU {1e6 * sum(got['cpu']) / n:.0f} us/event; "
                  f"tansu CPU {1e6 * got['tansu_cpu'] / n:.0f} us/event", flush=True)


if __name__ == "__main__":
    main()
