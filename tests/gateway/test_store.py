"""store: a snapshot is served again only while the sink's positions stand still; a track's points."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import psycopg
import pytest

from guardstream.catalog import TOPICS
from guardstream.gateway.history import TrackQuery
from guardstream.gateway.auth import Principal
from guardstream.gateway.snapshot import POSITION_FIELDS, Scope, Snapshot, records, snapshot_messages
from guardstream.gateway.store import Store
from guardstream.infra.migrate import migrate
from guardstream.records import DEVICE_ALERT, GUARD_POSITION
from guardstream.sinks.rows import plan_write
from guardstream.sinks.writer import BatchWriter

LOW = TOPICS.events_low.name
NOW = time.time_ns() // 1_000_000
ACME = Scope(frozenset({"acme"}), frozenset({"acme"}), frozenset({"acme"}), frozenset())


def fix(guard: str, ts_ms: int, lat: float = 52.52, lon: float = 13.4) -> dict:
    return {"event_id": uuid.uuid4().hex, "tenant": "acme", "device_id": guard, "ts_ms": ts_ms, "received_ms": ts_ms,
            "lat": lat, "lon": lon, "accuracy_m": None, "speed_mps": None, "heading_deg": None, "altitude_m": None,
            "fences": [], "in_site": None, "violation": False}


def sink_write(url: str, first_offset: int, records: list[dict], schema: str = GUARD_POSITION) -> None:
    """As the sink writes: the rows and the position after them in one transaction."""
    writer = BatchWriter(url)
    try:
        items = [((LOW, first_offset + i), plan_write(LOW, 0, first_offset + i, b"k", schema, r))
                 for i, r in enumerate(records)]
        assert not writer.write(items, {(LOW, 0): first_offset + len(records)}).rejected
    finally:
        writer.close()


@pytest.fixture
def store_db(pg_admin_url: str) -> Iterator[str]:
    name = f"gs_store_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = pg_admin_url.rsplit("/", 1)[0] + f"/{name}"
    migrate(url)
    yield url
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_a_snapshot_is_served_again_until_the_sink_moves(store_db: str) -> None:
    async def scenario() -> list:
        store = Store(store_db)
        try:
            sink_write(store_db, 0, [fix("g-1", NOW)])
            first, again = await store.snapshot(ACME), await store.snapshot(ACME)
            sink_write(store_db, 1, [fix("g-2", NOW)])
            moved = await store.snapshot(ACME)
            return [first, again, moved]
        finally:
            await store.close()

    first, again, moved = asyncio.run(scenario())
    assert again is first and dict(first.reflected) == {(LOW, 0): 1} and len(guards(first)) == 1
    assert dict(moved.reflected) == {(LOW, 0): 2} and sorted(guards(moved)) == ["g-1", "g-2"]


def guards(snapshot: Snapshot) -> list[str]:
    return [r["device_id"] for m in messages(snapshot) if m["schema"] == GUARD_POSITION for r in records(m)]


def messages(snapshot: Snapshot, channels: tuple[str, ...] = ("tenant:acme:alerts", "tenant:acme:positions")) -> list:
    principal = Principal("t", frozenset({"acme"}), frozenset({"operator"}), 4e9)
    return [json.loads(m) for m in snapshot_messages(principal, channels, snapshot, {})][:-1]


def test_a_snapshots_rows_are_the_records_the_feed_carries_value_for_value(store_db: str) -> None:
    """The rows the database renders as arrays (positions at write, alerts at read) decode to the
    records: every field, in the order the schemas give, with nulls, arrays, quotes and full floats."""
    position = fix("g-1", NOW, lat=52.123456789012345, lon=-0.1) | {
        "accuracy_m": 3.5, "heading_deg": 1e-7, "fences": ['fence "a", b', "c\\d"], "in_site": True}
    alert = {"event_id": "a-1", "tenant": "acme", "device_id": "g-1", "ts_ms": NOW - 5, "received_ms": NOW,
             "kind": "PANIC", "severity": "CRITICAL", "lat": 52.1, "lon": None, "message": 'line\nnext, "quoted"',
             "rule": None, "cause_event_id": None}
    sink_write(store_db, 0, [position])
    sink_write(store_db, 1, [alert], DEVICE_ALERT)

    async def scenario() -> Snapshot:
        store = Store(store_db)
        try:
            return await store.snapshot(ACME)
        finally:
            await store.close()

    out = {m["schema"]: records(m) for m in messages(asyncio.run(scenario()))}
    assert [tuple(m) for m in out[GUARD_POSITION]] == [POSITION_FIELDS]
    assert out[GUARD_POSITION] == [position]
    assert out[DEVICE_ALERT] == [alert | {"ts_source": "device", "claimed_kind": None, "claimed_severity": None,
                                          "status": "NEW", "status_by": None, "status_ts_ms": None,
                                          "status_note": None}]


def test_a_tracks_points_come_in_time_order_with_exact_times(store_db: str) -> None:
    times = [NOW - 5000, NOW - 1000, NOW - 3000, NOW - 4000, NOW - 2000]
    sink_write(store_db, 0, [fix("walker", ts, lat=52.5 + ts % 7 / 1e4, lon=13.4 + ts % 5 / 1e4) for ts in times])
    sink_write(store_db, 5, [fix("other", NOW - 2500)])

    async def scenario():
        store = Store(store_db)
        try:
            start, end = (datetime.fromtimestamp(ms / 1000, UTC) for ms in (NOW - 10_000, NOW))
            return await store.track_points(frozenset({"acme"}), TrackQuery("walker", start, end, 10, None, None, 10),
                                            100)
        finally:
            await store.close()

    points = asyncio.run(scenario())
    assert [int(ts) for ts in points[:, 0]] == sorted(times)
    assert [(lat, lon) for lat, lon in points[:, 1:].tolist()] == [
        (52.5 + ts % 7 / 1e4, 13.4 + ts % 5 / 1e4) for ts in sorted(times)]
