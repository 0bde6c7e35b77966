"""guardstream against the bus it replaces, on the same GPS fixes and geofences.

The old system: an MQTT handler queued one Celery task per message through
Redis; the task looped over every geofence for the fix and wrote one row, with
its own commit. Reproduced here with the same parts (a Redis list as the task
queue, JSON task bodies, shapely ``contains`` per fence, one INSERT and commit
per message into the same ``guard_positions`` table).

guardstream on the same data, without Kafka in the loop on either side:
``streams.pipeline.process`` in batches (validation, one spatial query per
batch, state machine, routing), Avro encoding of every event, and the sink's
batch writer (COPY + INSERT ... ON CONFLICT).

Prints messages/s for each and the ratio. Needs Redis on 127.0.0.1:6379
(``pip install redis``) and PostgreSQL at PG_TEST_ADMIN_URL (default: local).
Run: python bench/legacy_comparison.py [N] [N_FENCES]
"""

from __future__ import annotations

import json
import math
import os
import random
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import redis
import shapely
from shapely.geometry import shape

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stream_worker import fence_records  # noqa: E402  (the same fences as the worker benchmark)

from guardstream.catalog import TOPICS  # noqa: E402
from guardstream.infra.migrate import migrate  # noqa: E402
from guardstream.schemas.codec import Codec  # noqa: E402
from guardstream.schemas.registry import FileRegistry  # noqa: E402
from guardstream.sinks.rows import plan_write  # noqa: E402
from guardstream.sinks.writer import BatchWriter  # noqa: E402
from guardstream.streams.geofence import FenceIndex, fence_from_record  # noqa: E402
from guardstream.streams.geofence_state import Params  # noqa: E402
from guardstream.streams.pipeline import RawRecord, State, process  # noqa: E402
from guardstream.streams.rules import default_rules  # noqa: E402
from guardstream.streams.validation import Policy  # noqa: E402

ADMIN_URL = os.environ.get("PG_TEST_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def walking_fixes(n: int) -> list[tuple[str, bytes]]:
    rng = random.Random(1)
    guards = [[52.45 + rng.random() * 0.15, 13.30 + rng.random() * 0.25, rng.random() * 6.28] for _ in range(1000)]
    step, base = 1.4 / 111_000, time.time() - 600
    out = []
    for i in range(n):
        g = i % 1000
        lat, lon, heading = guards[g]
        heading += rng.gauss(0, 0.3)
        lat, lon = lat + step * math.cos(heading), lon + step * math.sin(heading) / 0.61
        guards[g] = [lat, lon, heading]
        payload = {"ts": base + i / 1000, "lat": lat, "lon": lon, "accuracy_m": 5, "tenant": f"t{g % 2}"}
        out.append((f"g{g}", json.dumps(payload).encode()))
    return out


def legacy(fixes: list[tuple[str, bytes]], fences: list[dict], database_url: str) -> float:
    shapes = []
    for f in fences:
        geometry = shape(json.loads(f["geometry"]))
        if f["radius_m"]:  # circles as buffered points in degrees, as such code usually did
            geometry = geometry.buffer(f["radius_m"] / 111_000)
        shapes.append((f["fence_id"], f["tenant"], geometry))
    queue = redis.Redis(host="127.0.0.1", port=6379)
    key = f"bench-legacy-{uuid.uuid4().hex}"
    conn = psycopg.connect(database_url)
    started = time.perf_counter()
    for device, payload in fixes:  # the MQTT handler: one task per message
        queue.lpush(key, json.dumps({"task": "store_position", "device": device,
                                     "payload": payload.decode()}))
    for _ in fixes:  # the worker: one task at a time
        _, body = queue.brpop(key)
        task = json.loads(body)
        fix = json.loads(task["payload"])
        point = shapely.Point(fix["lon"], fix["lat"])
        inside = [fid for fid, tenant, geometry in shapes if tenant == fix["tenant"] and geometry.contains(point)]
        conn.execute(
            "INSERT INTO guard_positions (event_id, tenant, device_id, ts, received_at, lat, lon, accuracy_m, fences)"
            " VALUES (%s, %s, %s, to_timestamp(%s), now(), %s, %s, %s, %s)",
            (uuid.uuid4().hex, fix["tenant"], task["device"], fix["ts"], fix["lat"], fix["lon"], fix["accuracy_m"],
             inside))
        conn.commit()
    elapsed = time.perf_counter() - started
    conn.close()
    queue.delete(key)
    return len(fixes) / elapsed


def guardstream(fixes: list[tuple[str, bytes]], fences: list[dict], database_url: str) -> float:
    state = State(fences=FenceIndex.build(fence_from_record(f) for f in fences))
    codec = Codec(FileRegistry.load())
    writer = BatchWriter(database_url)
    rules, params = default_rules(), Params()
    now = time.time_ns() // 1_000_000
    records = [RawRecord(TOPICS.raw_guard.name, 0, i, device.encode(), payload,
                         {"msg.id": f"m{i}".encode(), "received_ms": str(now).encode()}, now)
               for i, (device, payload) in enumerate(fixes)]
    started = time.perf_counter()
    for start in range(0, len(records), 2000):
        outcome = process(records[start:start + 2000], state, Policy(now_ms=now), rules, params)
        state.devices.update(outcome.devices)
        writes = []
        for i, emit in enumerate(outcome.emits):
            value = codec.encode(emit.schema, emit.value)  # what goes to Kafka
            name, record = codec.decode(value)  # what the sink reads back
            writes.append(((emit.topic, i), plan_write(emit.topic, 0, i, emit.key.encode(), name, record)))
        writer.write(writes)
    elapsed = time.perf_counter() - started
    writer.close()
    return len(records) / elapsed


def scratch_database() -> tuple[str, str]:
    name = f"gs_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = urlunsplit(urlsplit(ADMIN_URL)._replace(path=f"/{name}"))
    migrate(url)
    return name, url


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    n_fences = int(sys.argv[2]) if len(sys.argv) > 2 else 1_000
    fences = fence_records(n_fences, time.time_ns() // 1_000_000)
    fixes = walking_fixes(n)
    legacy_n = max(200, min(n, 2_000_000 // n_fences))  # the old loop is slow: time a sample of it
    name, url = scratch_database()
    try:
        old = legacy(fixes[:legacy_n], fences, url)
        new = guardstream(fixes, fences, url)
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    print(f"{n_fences:,} geofences; GPS fixes from 1,000 walking guards")
    print(f"old bus (Redis task per message, loop over every fence, row-by-row INSERT)  {old:>10,.0f} msg/s "
          f"({legacy_n:,} messages)")
    print(f"guardstream (batched validate + spatial index + state + Avro + COPY)          {new:>10,.0f} msg/s "
          f"({n:,} messages)")
    print(f"guardstream / old: x{new / old:.0f}")


if __name__ == "__main__":
    main()
