"""Snapshot and history query times of the gateway's PostgreSQL side, to a client over loopback.

A scratch database on the server of ``DATABASE_URL`` (dropped at the end) gets,
through the sink's own :class:`BatchWriter` (so the trigger keeps each guard's
last fix): one fix each for 10,000 guards, 1,000 open alerts, and a 24-hour
track of one guard at 1 fix/s (86,400 rows). The gateway's own code serves
them on a local port: its :class:`Routes` (the history API over HTTP) and, on
the WebSocket, its snapshot (``Store.snapshot`` + ``snapshot_messages``, what a
``"snapshot": true`` subscribe sends). Kafka plays no part: the replay that
follows a snapshot is measured by the gateway's resume tests and benches.

* snapshot: from sending the subscribe to receiving ``snapshot_end`` and parsing every message
  (goal: p99 <= 100 ms), once with a fix written before each subscribe (the snapshot is read
  from the tables) and once with nothing written in between (the gateway serves the snapshot
  it took at the same sink positions again). Beside the fresh read, in the same run and on the
  same tables, the snapshot as it was sent before the compact rows (migration 0008): each
  record a JSON object, read one row each, in messages of 500;
* track: ``/api/positions`` for the 24 hours, the first page (1,000 fixes), every page of
  10,000, and the whole track simplified to at most 1,000 points (goal: <= 50 ms).

Run: python bench/snapshot_history.py [SNAPSHOT_RUNS] [TRACK_RUNS]
"""

from __future__ import annotations

import asyncio
import http.client
import json
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable
from urllib.parse import urlencode, urlsplit, urlunsplit

import psycopg
from psycopg.rows import tuple_row
from websockets.asyncio.server import ServerConnection, serve
from websockets.sync.client import connect

from guardstream.catalog import TOPICS
from guardstream.gateway.auth import Keys, Principal, issue
from guardstream.gateway.snapshot import scope, snapshot_messages
from guardstream.gateway.store import Store
from guardstream.gateway.web import FenceCache, Routes
from guardstream.infra.migrate import migrate
from guardstream.records import DEVICE_ALERT, GUARD_POSITION
from guardstream.settings import Settings
from guardstream.sinks.rows import plan_write
from guardstream.sinks.writer import BatchWriter

GUARDS, ALERTS, TRACK = 10_000, 1_000, 86_400
ROUND = 10  # snapshot runs of one variant before the next
TENANT = "acme"
SECRET = "bench-secret-0123456789abcdef-0123456789abcdef"
NOW = time.time_ns() // 1_000_000
DAY_START = NOW - 86_400_000 - 60_000


def fix(guard: str, n: int, ts_ms: int) -> dict:
    return {"event_id": uuid.uuid4().hex, "tenant": TENANT, "device_id": guard, "ts_ms": ts_ms, "received_ms": ts_ms,
            "lat": 52.5 + (n % 1000) / 1e4, "lon": 13.4 + (n % 777) / 1e4, "accuracy_m": 4.0, "speed_mps": 1.1,
            "heading_deg": 90.0, "altitude_m": None, "fences": ["acme-hq"] if n % 3 else [], "in_site": bool(n % 3),
            "violation": False}


def alert(n: int) -> dict:
    return {"event_id": uuid.uuid4().hex, "tenant": TENANT, "device_id": f"guard-{n}", "ts_ms": NOW - n * 1000,
            "received_ms": NOW, "kind": "PANIC", "severity": "CRITICAL", "lat": 52.5, "lon": 13.4,
            "message": "panic button", "rule": None, "cause_event_id": None}


def fill(url: str) -> None:
    writer: BatchWriter = BatchWriter(url)
    topic = TOPICS.events_high.name

    def write(schema: str, records: list[dict]) -> None:
        for at in range(0, len(records), 5000):
            items = [((topic, i), plan_write(topic, 0, i, b"k", schema, r)) for i, r in
                     enumerate(records[at:at + 5000])]
            assert not writer.write(items).rejected
    try:
        write(GUARD_POSITION, [fix(f"guard-{n}", n, NOW - n) for n in range(GUARDS)])
        write(DEVICE_ALERT, [alert(n) for n in range(ALERTS)])
        write(GUARD_POSITION, [fix("walker", n, DAY_START + n * 1000) for n in range(TRACK)])
    finally:
        writer.close()
    with psycopg.connect(url, autocommit=True) as conn:
        # what autovacuum does to an insert-only table soon after (PostgreSQL 13+): statistics, and
        # the visibility map that lets a track's points come from the index alone
        conn.execute("VACUUM ANALYZE")


class Server:
    """The gateway's snapshot and routes on a local port, in a thread of its own."""

    def __init__(self, url: str) -> None:
        self.store = Store(url)
        keys = Keys("guardstream", SECRET)
        self.routes = Routes(keys, FenceCache(lambda: {}), lambda: (True, ""), self.store)
        self.principal = Principal("bench", frozenset({TENANT}), frozenset({"operator"}), 4e9)
        self.port = 0
        self.loop = asyncio.new_event_loop()
        started = threading.Event()
        threading.Thread(target=self.loop.run_until_complete, args=(self._run(started),), daemon=True).start()
        started.wait(10)

    async def _run(self, started: threading.Event) -> None:
        async def answer(connection: ServerConnection, request):  # noqa: ANN001
            if request.headers.get("Upgrade", "").lower() != "websocket":
                return await self.routes.answer(request)
            return None

        async with serve(self._snapshot, "127.0.0.1", 0, process_request=answer, compression=None,
                         max_size=2**24) as server:
            self.port = server.sockets[0].getsockname()[1]
            started.set()
            await asyncio.Future()

    async def _snapshot(self, ws: ServerConnection) -> None:
        async for message in ws:
            subscribe = json.loads(message)
            channels = subscribe["channels"]
            if subscribe.get("objects"):
                texts = await objects_snapshot(self.store, channels)
            else:
                snapshot = await self.store.snapshot(scope(self.principal, channels))
                texts = snapshot_messages(self.principal, channels, snapshot, {})
            for text in texts:
                await ws.send(text)


_OBJECTS_ALERTS = """
SELECT row_to_json(r)::text FROM (
    SELECT event_id, tenant, device_id, (extract(epoch FROM ts) * 1000)::bigint AS ts_ms,
           (extract(epoch FROM received_at) * 1000)::bigint AS received_ms, kind, severity, lat, lon, message, rule,
           cause_event_id, status, status_by, status_ts_ms, status_note
      FROM device_alerts WHERE status = ANY(%(open)s) AND tenant = %(tenant)s ORDER BY ts, event_id) r"""
# each fix as the JSON object the table kept rendered before migration 0009
_OBJECTS_POSITIONS = """
SELECT row_to_json(r)::text FROM (
    SELECT event_id, tenant, device_id, (extract(epoch FROM ts) * 1000)::bigint AS ts_ms,
           (extract(epoch FROM received_at) * 1000)::bigint AS received_ms, lat, lon, accuracy_m, speed_mps,
           heading_deg, altitude_m, fences, in_site, violation
      FROM guard_last_positions WHERE tenant = %(tenant)s) r"""


async def objects_snapshot(store: Store, channels: list[str]) -> list[str]:
    """The snapshot as sent before migration 0008, for comparison: the same transaction, each
    record a JSON object read as a row of its own, 500 to a message."""
    params = {"tenant": TENANT, "open": ["NEW", "ACKNOWLEDGED"]}
    async with store._connection() as conn, conn.transaction():
        await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        await (await conn.execute("SELECT topic, partition, next_offset FROM sink_positions")).fetchall()
        async with conn.cursor(row_factory=tuple_row) as cur:
            alerts = [r[0] for r in await (await cur.execute(_OBJECTS_ALERTS, params)).fetchall()]
            positions = [r[0] for r in await (await cur.execute(_OBJECTS_POSITIONS, params)).fetchall()]
    out = []
    for channel, schema, items in ((channels[0], DEVICE_ALERT, alerts), (channels[1], GUARD_POSITION, positions)):
        head = json.dumps({"type": "snapshot", "channel": channel, "schema": schema})[:-1]
        out += [f'{head}, "items": [{",".join(items[at:at + 500])}]}}' for at in range(0, len(items), 500)]
    return out + [json.dumps({"type": "snapshot_end", "offsets": {}, "alerts": len(alerts), "actions": 0,
                              "positions": len(positions)})]


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


class Mover:
    """Writes one more fix the way the sink does (rows and sink_positions in one transaction),
    so the next snapshot cannot be one taken before: it is read from the tables."""

    def __init__(self, url: str) -> None:
        self.writer: BatchWriter = BatchWriter(url)
        self.offset = 1_000_000

    def __call__(self) -> None:
        topic, self.offset = TOPICS.events_high.name, self.offset + 1
        record = fix(f"guard-{self.offset % GUARDS}", self.offset, time.time_ns() // 1_000_000)
        result = self.writer.write([((topic, 0), plan_write(topic, 0, self.offset, b"k", GUARD_POSITION, record))],
                                   {(topic, 0): self.offset + 1})
        assert not result.rejected


def snapshot_times(port: int, runs: int, before_each: Callable[[], None] = lambda: None,
                   objects: bool = False) -> tuple[list[float], dict, int]:
    times, end, size = [], {}, 0
    channels = [f"tenant:{TENANT}:alerts", f"tenant:{TENANT}:positions"]
    subscribe = {"op": "subscribe", "channels": channels, "snapshot": True} | ({"objects": True} if objects else {})
    with connect(f"ws://127.0.0.1:{port}/ws", max_size=2**24, compression=None) as ws:
        for _ in range(runs):
            before_each()
            started, size = time.perf_counter(), 0
            ws.send(json.dumps(subscribe))
            while True:
                text = ws.recv()
                size += len(text)
                if (end := json.loads(text))["type"] == "snapshot_end":
                    break
            times.append((time.perf_counter() - started) * 1000)
    return times, end, size


def get(port: int, path: str, token: str, **params: object) -> dict:
    # websockets answers one plain HTTP request per connection, as a browser's fetch would open it
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", f"{path}?{urlencode(params)}", headers={"Authorization": f"Bearer {token}"})
        response = conn.getresponse()
        body = json.loads(response.read())
    finally:
        conn.close()
    assert response.status == 200, body
    return body


def track_times(port: int, runs: int) -> dict[str, tuple[list[float], int]]:
    token = issue(SECRET, "bench", [TENANT], ["operator"], "guardstream", time.time(), 3600)
    span = {"guard": "walker", "from": str(DAY_START), "to": str(DAY_START + 86_400_000)}
    out: dict[str, tuple[list[float], int]] = {}

    def first_page() -> int:
        return len(get(port, "/api/positions", token, **span)["positions"])

    def every_page() -> int:
        rows, cursor = 0, None
        while True:
            body = get(port, "/api/positions", token, **span, limit=10_000, **({"cursor": cursor} if cursor else {}))
            rows += len(body["positions"])
            if (cursor := body["next"]) is None:
                return rows

    def simplified() -> int:
        return len(get(port, "/api/positions", token, **span, max_points=1000)["points"])

    for name, query in (("first page (1,000 fixes)", first_page), ("all pages of 10,000", every_page),
                        ("simplified to <= 1,000 points", simplified)):
        times, count = [], 0
        for _ in range(runs):
            started = time.perf_counter()
            count = query()
            times.append((time.perf_counter() - started) * 1000)
        out[name] = (times, count)
    return out


def main() -> None:
    args = [int(a) for a in sys.argv[1:]]
    snapshot_runs, track_runs = args + [50, 10][len(args):]
    server_url = urlsplit(Settings.from_env().database_url)
    admin_url = urlunsplit(server_url._replace(path="/postgres"))
    name = f"gs_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        url = urlunsplit(server_url._replace(path=f"/{name}"))
        migrate(url)
        started = time.perf_counter()
        fill(url)
        print(f"filled {GUARDS:,} guards, {ALERTS:,} open alerts, {TRACK:,} track fixes "
              f"in {time.perf_counter() - started:.1f}s")
        server = Server(url)
        snapshot_times(server.port, 3)  # warm the pool and the caches
        snapshot_times(server.port, 3, objects=True)
        mover = Mover(url)
        try:
            variants = (("before (objects as sent until 0008, rendered at read), after a write", mover, True),
                        ("compact rows, after a write: read from the tables", mover, False),
                        ("compact rows, tables unchanged since the last: served again", lambda: None, False))
            # in alternating rounds, so the machine's other load falls on every variant alike
            measured: dict[str, tuple[list[float], dict, int]] = {label: ([], {}, 0) for label, _, _ in variants}
            for at in range(0, snapshot_runs, ROUND):
                for label, before_each, objects in variants:
                    times, end, size = snapshot_times(server.port, min(ROUND, snapshot_runs - at), before_each, objects)
                    measured[label] = (measured[label][0] + times, end, size)
            for label, (times, end, size) in measured.items():
                print(f"snapshot ({end['positions']:,} guards, {end['alerts']:,} open alerts, {size / 1e6:.2f} MB) "
                      f"to the client, {label}: p50 {statistics.median(times):.1f} ms, "
                      f"p99 {percentile(times, 99):.1f} ms, max {max(times):.1f} ms over {len(times)} "
                      "(goal: p99 <= 100 ms)")
        finally:
            mover.writer.close()
        for label, (times, count) in track_times(server.port, track_runs).items():
            print(f"24 h track, {label}: {count:,} rows, p50 {statistics.median(times):.1f} ms, "
                  f"max {max(times):.1f} ms over {track_runs} (goal: <= 50 ms)")
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
