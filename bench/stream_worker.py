"""Both engines of the stream worker beside a bare Faust pass-through agent, in one run.

Starts its own tansu broker, imports N_FENCES geofences (two tenants' worth of
city blocks and circles), fills raw.guard with N GPS fixes from 1,000 guards
walking their rounds, then measures, each on N fixes:

1. a bare Faust agent that forwards each event and awaits each send
   (the per-event path of Faust, doing no work at all);
2. ``guardstream worker --engine batch`` (validate + geofence enrichment + rules + routing);
3. ``guardstream worker --engine faust`` (the same pipeline as Faust agents), on N more fixes
   (both engines share the consumer group, so the second starts where the first stopped).

Events/s from the first to the last record taken in (the worker's /metrics), and the
process's CPU seconds (user + system) per event over the same window.

With ``--faust-tuning``, the Faust engine then runs once more per tuning alternative
(``FAUST_TUNING``: the engine's choice against one change at a time), each on N more
fixes, so every alternative is measured in the same run as the choice.

Run: python bench/stream_worker.py [N] [N_FENCES] [--faust-tuning]
"""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from pathlib import Path

from confluent_kafka import Producer
from embedded import embedded_env

from guardstream.catalog import TOPICS
from guardstream.infra import topics
from guardstream.infra.stack import free_port, kafka_answers, tansu_spec, wait_until
from guardstream.records import GEOFENCE
from guardstream.schemas.codec import Codec
from guardstream.schemas.registry import FileRegistry
from guardstream.settings import Settings

FAUST_APP = textwrap.dedent('''
    import os, sys, time
    import faust
    N = int(os.environ["N"]); SRC = os.environ["SRC"]; DST = os.environ["DST"]
    app = faust.App("bench-bare-" + str(os.getpid()), broker="kafka://" + os.environ["BS"], value_serializer="raw",
                    key_serializer="raw", web_enabled=False, broker_session_timeout=6,
                    broker_heartbeat_interval=1, consumer_auto_offset_reset="earliest", topic_partitions=6)
    src, dst = app.topic(SRC), app.topic(DST)
    seen = {"n": 0, "t0": None, "cpu0": 0.0}

    @app.agent(src)
    async def forward(stream):
        async for event in stream.events():
            await dst.send(key=event.key, value=event.value)
            if seen["t0"] is None:
                seen["t0"], seen["cpu0"] = time.perf_counter(), time.process_time()
            seen["n"] += 1
            if seen["n"] >= N:
                cpu = (time.process_time() - seen["cpu0"]) / seen["n"]
                print(f"RESULT {seen['n'] / (time.perf_counter() - seen['t0']):.0f} {cpu:.9f}", flush=True)
                os._exit(0)

    if __name__ == "__main__":
        sys.argv = ["app", "worker", "-l", "warn"]
        app.main()
''')


# The Faust engine's tuning (streams/faust_engine.py) against one change at a time: module constants
# set before the engine starts, or settings. The first is the engine as it ships.
FAUST_TUNING: list[tuple[str, dict, dict]] = [
    ("as shipped", {}, {}),
    ("stream buffer 4096 (Faust's default)", {"STREAM_BUFFER_MAXSIZE": 4096}, {}),
    ("stream buffer 65536", {"STREAM_BUFFER_MAXSIZE": 65536}, {}),
    ("take_events 500 per batch", {}, {"GUARDSTREAM_WORKER_BATCH_MAX": "500"}),
    ("take_events 8000 per batch", {}, {"GUARDSTREAM_WORKER_BATCH_MAX": "8000"}),
    ("take_events wait 10 ms", {}, {"GUARDSTREAM_WORKER_BATCH_WAIT_MS": "10"}),
    ("take_events wait 200 ms", {}, {"GUARDSTREAM_WORKER_BATCH_WAIT_MS": "200"}),
    ("stream_wait_empty off", {"STREAM_WAIT_EMPTY": False}, {}),
    ("producer linger 5 ms", {"PRODUCER_LINGER_MS": 5}, {}),
    ("producer linger 50 ms", {"PRODUCER_LINGER_MS": 50}, {}),
    ("no uvloop", {"USE_UVLOOP": False}, {}),
    ("as shipped, again (the load's drift over the run)", {}, {}),
]
TUNED_WORKER = "import sys, guardstream.streams.faust_engine as e; e.__dict__.update({tuning!r}); " \
               "from guardstream.cli import main; sys.exit(main(['worker', '--engine', 'faust']))"


def fence_records(count: int, now_ms: int) -> list[dict]:
    rng = random.Random(7)
    out = []
    for i in range(count):
        lat, lon = 52.45 + rng.random() * 0.15, 13.30 + rng.random() * 0.25
        tenant = f"t{i % 2}"
        if i % 3 == 0:
            geometry = {"type": "Point", "coordinates": [lon, lat]}
            radius = 30 + rng.random() * 120
        else:
            d = 0.0005 + rng.random() * 0.002
            ring = [[lon + d * math.cos(a / 8 * 2 * math.pi), lat + d * math.sin(a / 8 * 2 * math.pi)]
                    for a in range(8)]
            geometry, radius = {"type": "Polygon", "coordinates": [ring + [ring[0]]]}, None
        out.append({"fence_id": f"f{i}", "tenant": tenant, "name": f"fence {i}",
                    "kind": "RESTRICTED" if i % 10 == 0 else "SITE", "geometry": json.dumps(geometry),
                    "radius_m": radius, "updated_ms": now_ms})
    return out


def fill_fences(settings: Settings, n_fences: int) -> None:
    codec = Codec(FileRegistry.load())
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers, "linger.ms": 20})
    now = time.time_ns() // 1_000_000
    for record in fence_records(n_fences, now):
        producer.produce(TOPICS.geofences.name, codec.encode(GEOFENCE, record),
                         record["fence_id"].encode())
    producer.flush(60)


def fill(settings: Settings, start: int, n: int) -> None:
    """Fixes ``start`` .. ``start + n - 1`` of the guards' walk."""
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers, "linger.ms": 20,
                         "batch.num.messages": 10000, "partitioner": "murmur2_random"})
    now = time.time_ns() // 1_000_000
    # 1,000 guards walking at about 1.4 m/s, one fix a second each: how real patrols look
    rng = random.Random(1 + start)
    guards = [[52.45 + rng.random() * 0.15, 13.30 + rng.random() * 0.25, rng.random() * 2 * math.pi]
              for _ in range(1000)]
    step = 1.4 / 111_000
    base_s = time.time() - 600
    for i in range(start, start + n):
        guard = i % 1000
        lat, lon, heading = guards[guard]
        heading += rng.gauss(0, 0.3)
        lat, lon = lat + step * math.cos(heading), lon + step * math.sin(heading) / 0.61
        guards[guard] = [lat, lon, heading]
        payload = json.dumps({"ts": base_s + i / 1000, "lat": lat + rng.gauss(0, 0.00003),
                              "lon": lon + rng.gauss(0, 0.00005), "accuracy_m": 5, "tenant": f"t{guard % 2}"})
        producer.produce(TOPICS.raw_guard.name, payload.encode(), f"g{guard}".encode(),
                         headers=[("msg.id", f"m{i}".encode()), ("received_ms", str(now).encode())])
        if i % 10000 == 0:
            producer.poll(0)
    producer.flush(60)


def metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{") or line.startswith(name + " "))


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a running process (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_worker(settings: Settings, n: int, engine: str, tuning: dict | None = None,
                 extra_env: dict | None = None) -> tuple[float, float]:
    """(events/s, CPU seconds per event) of ``guardstream worker --engine ENGINE`` over n records;
    ``tuning``: the Faust engine's module constants to set first."""
    port = free_port()
    env = {**os.environ, **settings.replace(metrics_port=port).as_env(), **(extra_env or {})}
    argv = [sys.executable, "-c", TUNED_WORKER.format(tuning=tuning)] if tuning is not None else \
        [sys.executable, "-m", "guardstream.cli", "worker", "--engine", engine]
    process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def taken() -> float:
            try:
                return metric(port, "guardstream_worker_records_in_total")
            except OSError:
                return 0.0
        wait_until(lambda: taken() > 0, 120, "worker start", interval_s=0.05)
        t0, c0, cpu0 = time.perf_counter(), taken(), cpu_seconds(process.pid)
        wait_until(lambda: taken() >= n, 600, "worker to take every record", interval_s=0.2)
        done = taken() - c0
        rate, cpu = done / (time.perf_counter() - t0), (cpu_seconds(process.pid) - cpu0) / done
        batches = metric(port, "guardstream_worker_batch_records_count")
        print(f"  ({engine}: {metric(port, 'guardstream_worker_batch_records_sum') / batches:,.0f} records per batch)")
        return rate, cpu
    finally:
        process.terminate()
        process.wait(30)


def bench_faust(settings: Settings, n: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        app = Path(tmp) / "bare.py"
        app.write_text(FAUST_APP)
        env = {**os.environ, "N": str(n), "BS": settings.kafka_bootstrap_servers, "SRC": TOPICS.raw_guard.name,
               "DST": "bench-faust-out"}
        result = subprocess.run([sys.executable, str(app)], env=env, capture_output=True, text=True, cwd=tmp,
                                timeout=900)
    for line in (result.stdout + result.stderr).splitlines():
        if "RESULT" in line:
            words = line.split()
            at = words.index("RESULT")
            return float(words[at + 1]), float(words[at + 2])
    raise RuntimeError(result.stderr[-2000:])


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    tuning = "--faust-tuning" in sys.argv[1:]
    n = int(args[0]) if args else 60_000
    n_fences = int(args[1]) if len(args) > 1 else 10_000
    port = free_port()
    spec = tansu_spec(port)
    tansu = subprocess.Popen(list(spec.argv), env={**os.environ, **spec.env}, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        bootstrap = f"127.0.0.1:{port}"
        wait_until(lambda: kafka_answers(bootstrap), 30, "tansu")
        settings = Settings.from_env(embedded_env(KAFKA_BOOTSTRAP_SERVERS=bootstrap))
        topics.apply(settings)
        fill_fences(settings, n_fences)
        fill(settings, 0, n)
        print(f"{n:,} GPS fixes from 1,000 guards per run, {n_fences:,} geofences")
        rows = [("bare Faust pass-through agent", *bench_faust(settings, n)),
                ("worker --engine batch", *bench_worker(settings, n, "batch"))]
        fill(settings, n, n)  # the Faust engine continues where the batch engine committed
        rows.append(("worker --engine faust", *bench_worker(settings, n, "faust")))
        bare = rows[0][1]
        for name, rate, cpu in rows:
            print(f"{name:<32} {rate:>9,.0f} events/s  {cpu * 1e6:>7,.1f} µs CPU/event  x{rate / bare:.2f} bare")
        if tuning:
            print("the Faust engine, one tuning change at a time:")
            for i, (name, constants, env) in enumerate(FAUST_TUNING):
                fill(settings, (2 + i) * n, n)
                rate, cpu = bench_worker(settings, n, "faust", constants, env)
                print(f"  {name:<50} {rate:>9,.0f} events/s  {cpu * 1e6:>7,.1f} µs CPU/event  x{rate / bare:.2f} bare")
    finally:
        tansu.terminate()
        tansu.wait(10)


if __name__ == "__main__":
    main()
