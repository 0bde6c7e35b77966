"""The load ramp: how many messages/s the whole pipeline sustains on this machine, and what gives first.

Rates from START up by STEP until messages stop
arriving within 1 s. Each rate runs for SECONDS on a freshly started pipeline
(bench/pipeline_rig.py: tansu, mosquitto, PostgreSQL, bridge, worker, sink,
gateway, one WebSocket client), GPS fixes at the rate plus a panic every
50 ms from devices of their own. A fresh pipeline per rate, because the
embedded broker's memory store gets slower as it fills: each fetch that
finds records lists every batch the partition ever stored (tansu 0.6's
dynostore), so a rate measured after others would pay for theirs.

Per rate it prints the fixes' and panics' latency publish -> WebSocket client,
how many fixes PostgreSQL lacks (lost) and the client never got, and each
process's share of a core, and each stage's p99 (publish -> bridge receipt ->
raw record -> event record -> client, from the records' headers and
timestamps). A rate is sustained when fixes arrive with p99 <=
100 ms, none is lost, every one reached the client (the gateway conflates a
device's positions only for a client that falls behind) and panics keep p99 <=
200 ms. At the end: the highest
sustained rate, and at the first rate that failed, what saturated (a process
at a full core, as Python components do their work on one thread, or the
machine's two cores) and the stage whose p99 grew most.

Run: python bench/load_ramp.py [START] [STEP] [SECONDS] [MAX]
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from tempfile import TemporaryDirectory

from pipeline_rig import Result, Rig, pick, run_load, stage_latencies

P99_GOAL_MS = 100.0
PANIC_P99_GOAL_MS = 200.0
GIVE_UP_MS = 1000.0  # messages no longer arrive within a second: the ramp stops
CORES = os.cpu_count() or 2
FULL_CORE = 0.9  # a process this busy has no more to give on its one working thread


def run_rate(rate: int, seconds: float) -> Result:
    with TemporaryDirectory() as tmp:
        rig = Rig(Path(tmp))
        try:
            rig.start()
            run_load(rig, min(rate, 1000), 2.0)  # warm-up: groups joined, connections open
            result = run_load(rig, rate, seconds, drain_s=20.0)
            result.stage_p99_ms = {name: pick(sorted(values), .99) for name, values
                                   in stage_latencies(rig.settings, result.fixes, result.arrived).items()}
            return result
        finally:
            rig.stop()


def saturated(result: Result) -> str:
    """What gave first: a process at a full core, else the machine's cores. The load generator and
    the client run on this machine too, so they count against its cores (not the pipeline's)."""
    cores = {name: seconds / result.wall_s for name, seconds in result.cpu.items()}
    busiest, share = max(cores.items(), key=lambda kv: kv[1])
    pipeline = sum(cores.values())
    outside = (result.generator_cpu_s + result.client_cpu_s) / result.wall_s
    if share >= FULL_CORE:
        return f"{busiest} at {share:.2f} of a core"
    busy = f"pipeline {pipeline:.2f} + load generator and client {outside:.2f} of {CORES} cores"
    if pipeline + outside >= CORES * FULL_CORE:
        return f"the machine's cores ({busy}; busiest: {busiest} {share:.2f})"
    return f"no process at a full core, nor the machine ({busy}; busiest: {busiest} {share:.2f})"


def slowest_stage(failed: Result, before: Result | None) -> str:
    """The stage whose p99 grew most from the last sustained rate to the first that failed."""
    grown = {name: ms - (before.stage_p99_ms.get(name, 0.0) if before else 0.0)
             for name, ms in failed.stage_p99_ms.items()}
    if not grown:
        return "unknown"
    name = max(grown, key=grown.get)
    return f"{name} (p99 {failed.stage_p99_ms[name]:.1f} ms, +{grown[name]:.1f} ms)"


def verdict(result: Result) -> tuple[bool, float, float, int, int]:
    fixes, panics = result.latencies(result.fixes), result.latencies(result.panics)
    p99 = pick(fixes, .99)
    panic_p99 = pick(panics, .99)
    lost = len(result.fixes) - result.pg_positions + len(result.panics) - result.pg_alerts
    undelivered = len(result.fixes) + len(result.panics) - len(fixes) - len(panics)
    ok = (bool(fixes) and p99 <= P99_GOAL_MS and panic_p99 <= PANIC_P99_GOAL_MS and lost == 0
          and undelivered == 0)
    return ok, p99, panic_p99, lost, undelivered


def report(result: Result) -> bool:
    ok, p99, panic_p99, lost, undelivered = verdict(result)
    fixes = result.latencies(result.fixes)
    cores = "  ".join(f"{name} {seconds / result.wall_s:.2f}"
                      for name, seconds in sorted(result.cpu.items(), key=lambda kv: -kv[1]))
    print(f"{result.rate:>6,} msg/s  fixes p50 {pick(fixes, .5):7.1f} ms  p99 {p99:8.1f} ms  panics p99 "
          f"{panic_p99:7.1f} ms  lost {lost:,}  not at the client {undelivered:,}  "
          f"{'sustained' if ok else 'NOT sustained'}")
    print(f"{'':>13}cores: {cores}")
    print(f"{'':>13}p99 by stage: " + "  ".join(f"{name} {ms:.1f} ms" for name, ms in result.stage_p99_ms.items()))
    return ok


def main() -> None:
    start = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    step = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
    seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 10.0
    top = int(sys.argv[4]) if len(sys.argv) > 4 else 20_000
    best: int | None = None
    sustained: Result | None = None
    failed: Result | None = None
    rate = start
    while rate <= top:
        result = run_rate(rate, seconds)
        if report(result):
            best, sustained = rate, result
        elif failed is None:
            failed = result
        _, p99, _, lost, _ = verdict(result)
        if p99 > GIVE_UP_MS or lost or (failed is not None and result is not failed):
            break  # past the knee: one more rate after the first failure tells no more
        rate += step
    print(f"highest rate sustained (fixes p99 <= {P99_GOAL_MS:.0f} ms, none lost, panics p99 <= "
          f"{PANIC_P99_GOAL_MS:.0f} ms): {f'{best:,} msg/s' if best else 'none'}")
    if failed is not None:
        print(f"at {failed.rate:,} msg/s, saturated first: {saturated(failed)}; the stage that slowed most: "
              f"{slowest_stage(failed, sustained)}")


if __name__ == "__main__":
    main()
