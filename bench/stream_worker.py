"""Stream worker throughput beside a bare Faust pass-through agent, in one run.

Starts its own tansu broker, imports N_FENCES geofences (two tenants' worth of
city blocks and circles), fills raw.guard with N GPS fixes from 1,000 guards
walking their rounds, then measures:

1. a bare Faust agent that forwards each event and awaits each send
   (the per-event path of Faust, doing no work at all);
2. ``guardstream worker`` (validate + geofence enrichment + rules + routing),
   events/s from its first to its last record taken in (from its /metrics).

Run: python bench/stream_worker.py [N] [N_FENCES]
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
    seen = {"n": 0, "t0": None}

    @app.agent(src)
    async def forward(stream):
        async for event in stream.events():
            await dst.send(key=event.key, value=event.value)
            seen["t0"] = seen["t0"] or time.perf_counter()
            seen["n"] += 1
            if seen["n"] >= N:
                print(f"RESULT {seen['n'] / (time.perf_counter() - seen['t0']):.0f}", flush=True)
                os._exit(0)

    if __name__ == "__main__":
        sys.argv = ["app", "worker", "-l", "warn"]
        app.main()
''')


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


def fill(settings: Settings, n: int, n_fences: int) -> None:
    codec = Codec(FileRegistry.load())
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers, "linger.ms": 20,
                         "batch.num.messages": 10000, "partitioner": "murmur2_random"})
    now = time.time_ns() // 1_000_000
    for record in fence_records(n_fences, now):
        producer.produce(TOPICS.geofences.name, codec.encode(GEOFENCE, record),
                         record["fence_id"].encode())
    # 1,000 guards walking at about 1.4 m/s, one fix a second each: how real patrols look
    rng = random.Random(1)
    guards = [[52.45 + rng.random() * 0.15, 13.30 + rng.random() * 0.25, rng.random() * 2 * math.pi]
              for _ in range(1000)]
    step = 1.4 / 111_000
    base_s = time.time() - 600
    for i in range(n):
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


def bench_worker(settings: Settings, n: int) -> float:
    port = free_port()
    env = {**os.environ, **settings.replace(metrics_port=port).as_env()}
    process = subprocess.Popen([sys.executable, "-m", "guardstream.cli", "worker"], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def taken() -> float:
            try:
                return metric(port, "guardstream_worker_records_in_total")
            except OSError:
                return 0.0
        wait_until(lambda: taken() > 0, 120, "worker start")
        t0, c0 = time.perf_counter(), taken()
        wait_until(lambda: taken() >= n, 600, "worker to take every record", interval_s=0.5)
        return (n - c0) / (time.perf_counter() - t0)
    finally:
        process.terminate()
        process.wait(30)


def bench_faust(settings: Settings, n: int) -> float:
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
            return float(words[words.index("RESULT") + 1])
    raise RuntimeError(result.stderr[-2000:])


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    n_fences = int(sys.argv[2]) if len(sys.argv) > 2 else 10_000
    port = free_port()
    spec = tansu_spec(port)
    tansu = subprocess.Popen(list(spec.argv), env={**os.environ, **spec.env}, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        bootstrap = f"127.0.0.1:{port}"
        wait_until(lambda: kafka_answers(bootstrap), 30, "tansu")
        settings = Settings.from_env(embedded_env(KAFKA_BOOTSTRAP_SERVERS=bootstrap))
        topics.apply(settings)
        fill(settings, n, n_fences)
        print(f"{n:,} GPS fixes from 1,000 guards, {n_fences:,} geofences")
        faust_rate = bench_faust(settings, n)
        print(f"bare Faust pass-through agent  {faust_rate:>10,.0f} events/s")
        worker_rate = bench_worker(settings, n)
        print(f"guardstream worker (validate + geofence + rules + route) {worker_rate:>10,.0f} events/s")
        print(f"worker / bare Faust: x{worker_rate / faust_rate:.1f}")
    finally:
        tansu.terminate()
        tansu.wait(10)


if __name__ == "__main__":
    main()
