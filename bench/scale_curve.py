"""Scale curve: the stream worker with 1, 2 and 3 instances on the same topic, the bridge with 1
and 2, in one run, with the CPU time each process used (from /proc/<pid>/stat).

Workers: for each count, a fresh tansu broker with six partitions per topic, the same
N_FENCES geofences and N GPS fixes of 1,000 guards (``stream_worker.fill``) written first; then
that many ``guardstream worker`` processes start at once and drain the backlog in one consumer
group. events/s is from the first record taken to the last (summed over the instances'
/metrics); CPU is each process's user + system time over that span, per event taken.

Bridges: one mosquitto and tansu; for each count, that many bridges join the shared
subscription, stop, a QoS 1 backlog of M messages is published (the broker hands it out among
their persistent sessions), and the bridges start again and drain it (no publisher competes).

On two cores the instances and the broker share the same CPUs, so adding instances cannot
show linear scaling; CPU per event is what extrapolates (README, Scaling).

Prints figures; asserts nothing. Run: python bench/scale_curve.py [N] [M] [N_FENCES]
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bridge_throughput import burst, start_bridges, start_servers, watch_bridges
from embedded import embedded_env, ready
from stream_worker import fill, metric

from guardstream.infra import topics
from guardstream.infra.stack import free_port, kafka_answers, tansu_spec, wait_until
from guardstream.infra.supervisor import Supervisor
from guardstream.settings import Settings

PARTITIONS = "6"


def cpu_of(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def taken(ports: list[int]) -> list[float]:
    out = []
    for port in ports:
        try:
            out.append(metric(port, "guardstream_worker_records_in_total"))
        except OSError:
            out.append(0.0)
    return out


def run_workers(count: int, n: int, n_fences: int, **env: str) -> dict:
    """``count`` workers draining ``n`` fixes on a fresh broker: rate, per-process records and CPU."""
    port = free_port()
    spec = tansu_spec(port)
    tansu = subprocess.Popen(list(spec.argv), env={**os.environ, **spec.env}, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    workers: list[subprocess.Popen] = []
    try:
        bootstrap = f"127.0.0.1:{port}"
        wait_until(lambda: kafka_answers(bootstrap), 30, "tansu")
        settings = Settings.from_env(embedded_env(KAFKA_BOOTSTRAP_SERVERS=bootstrap,
                                                  GUARDSTREAM_PARTITIONS_MAX=PARTITIONS, **env))
        topics.apply(settings)
        fill(settings, n, n_fences)
        ports = [free_port() for _ in range(count)]
        for number, metrics_port in enumerate(ports, start=1):
            child = {**os.environ, **settings.replace(metrics_port=metrics_port).as_env(),
                     "GUARDSTREAM_WORKER_ID": f"bench-{number}", "GUARDSTREAM_LOG_LEVEL": "warning"}
            workers.append(subprocess.Popen([sys.executable, "-m", "guardstream.cli", "worker"], env=child,
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_until(lambda: sum(taken(ports)) > 0, 120, "the first record taken", interval_s=0.05)
        t0, cpu0, tansu0 = time.perf_counter(), [cpu_of(w.pid) for w in workers], cpu_of(tansu.pid)
        wait_until(lambda: sum(taken(ports)) >= n, 600, "every record taken", interval_s=0.2)
        seconds = time.perf_counter() - t0
        cpu = [cpu_of(w.pid) - c for w, c in zip(workers, cpu0)]
        return {"rate": n / seconds, "seconds": seconds, "records": taken(ports), "cpu": cpu,
                "tansu_cpu": cpu_of(tansu.pid) - tansu0}
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(30)
        tansu.terminate()
        tansu.wait(10)


def print_workers(count: int, got: dict, n: int) -> None:
    per_event = 1e6 * sum(got["cpu"]) / n
    share = ", ".join(f"{r:,.0f} rec / {c:.2f} s CPU" for r, c in zip(got["records"], got["cpu"]))
    print(f"workers {count}: {got['rate']:>8,.0f} events/s ({n:,} in {got['seconds']:.2f} s); "
          f"worker CPU {per_event:.0f} us/event; tansu CPU {1e6 * got['tansu_cpu'] / n:.0f} us/event; "
          f"per worker: {share}", flush=True)


def run_bridges(supervisor: Supervisor, env: dict, count: int, m: int) -> dict:
    settings = Settings.from_env(env)
    ports = [free_port() for _ in range(count)]
    processes = start_bridges(supervisor, settings, ports)  # their sessions join the shared subscription
    wait_until(lambda: all(ready(port) for port in ports), 30, "bridges")
    for process in processes:
        process.terminate()
        process.wait(30)
    got = burst(env, m, 3, 1, with_subscriber=False)
    processes = start_bridges(supervisor, settings, ports)
    cpu0 = [cpu_of(p.pid) for p in processes]
    handled, seconds = watch_bridges(ports, 0.0, got["published"])
    cpu = [cpu_of(p.pid) - c for p, c in zip(processes, cpu0)]
    for process in processes:
        process.terminate()
        process.wait(30)
    return {"rate": handled / seconds if seconds else float("nan"), "handled": handled, "seconds": seconds,
            "cpu": cpu}


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 60_000
    m = int(sys.argv[2]) if len(sys.argv) > 2 else 40_000
    n_fences = int(sys.argv[3]) if len(sys.argv) > 3 else 2_000
    print(f"{os.cpu_count()} CPUs; workers: {n:,} GPS fixes of 1,000 guards, {n_fences:,} geofences, "
          f"{PARTITIONS} partitions; bridges: a QoS 1 backlog of {m:,} messages", flush=True)
    for count in (1, 2, 3):
        print_workers(count, run_workers(count, n, n_fences), n)
    work = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    log = (work / "children.log").open("w")
    supervisor = Supervisor(out=log)
    try:
        env, broker = start_servers(supervisor, work)
        for count in (1, 2):
            got = run_bridges(supervisor, env, count, m)
            share = ", ".join(f"{c:.2f} s CPU" for c in got["cpu"])
            print(f"bridges {count}: {got['rate']:>8,.0f} msg/s ({got['handled']:,} in {got['seconds']:.2f} s); "
                  f"bridge CPU {1e6 * sum(got['cpu']) / max(got['handled'], 1):.0f} us/message; "
                  f"per bridge: {share}", flush=True)
    finally:
        supervisor.stop()
        log.close()


if __name__ == "__main__":
    main()
