"""What the sink keeps for the gateway's snapshot: positions, the last fix of each guard, the action log."""

from __future__ import annotations

import json
import psycopg
import pytest

from guardstream.catalog import TOPICS
from guardstream.infra.migrate import migrate
from guardstream.records import ALERT_ACTION, DEVICE_ALERT, GUARD_POSITION
from guardstream.sinks.rows import plan_write
from guardstream.sinks.writer import BatchWriter

T0 = 1_795_000_000_000
LOW, CRITICAL, ACTIONS = TOPICS.events_low.name, TOPICS.events_critical.name, TOPICS.alerts_actions.name


def position(n: int, device: str = "guard-7", ts_ms: int | None = None) -> dict:
    return {"event_id": f"pos-{device}-{n}", "tenant": "acme", "device_id": device, "ts_ms": T0 + n if ts_ms is None
            else ts_ms, "received_ms": T0 + n, "lat": 52.5 + n / 1000, "lon": 13.4, "accuracy_m": None,
            "speed_mps": None, "heading_deg": None, "altitude_m": None, "fences": [f"f{n}"], "in_site": True,
            "violation": False}


def planned(topic: str, schema: str, records: list[dict], start: int = 0) -> list:
    return [((topic, offset), plan_write(topic, 0, offset, b"k", schema, record))
            for offset, record in enumerate(records, start=start)]


@pytest.fixture
def db(database_url):
    migrate(database_url)
    return database_url


@pytest.fixture
def writer(db):
    w = BatchWriter(db)
    yield w
    w.close()


def rows(url: str, query: str, *params) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(query, params).fetchall()


def test_positions_rise_with_the_rows_and_never_fall(writer, db):
    writer.write(planned(LOW, GUARD_POSITION, [position(0), position(1)]), {(LOW, 0): 2})
    writer.write(planned(LOW, GUARD_POSITION, [position(0)]), {(LOW, 0): 1})  # a replay of an older batch
    writer.seed_positions({(LOW, 0): 1, (CRITICAL, 1): 7})
    assert sorted(rows(db, "SELECT topic, partition, next_offset FROM sink_positions")) == [
        (CRITICAL, 1, 7), (LOW, 0, 2)]


def test_the_last_fix_of_each_guard_is_the_newest_by_time_whatever_the_order(writer, db):
    batch = [position(3), position(5), position(4), position(1, device="guard-8")]
    writer.write(planned(LOW, GUARD_POSITION, batch))
    writer.write(planned(LOW, GUARD_POSITION, [position(2)], start=10))  # late: older than the kept fix
    assert rows(db, "SELECT device_id, event_id, fences FROM guard_last_positions ORDER BY device_id") == [
        ("guard-7", "pos-guard-7-5", ["f5"]), ("guard-8", "pos-guard-8-1", ["f1"])]
    # the snapshot's row moves with the fix it renders: the record's values, as an array
    kept = {r["device_id"]: r for r in (position(5), position(1, device="guard-8"))}
    for device, row in rows(db, "SELECT device_id, snapshot_row FROM guard_last_positions"):
        assert json.loads(row) == list(kept[device].values())


def test_every_action_is_logged_once_even_a_stale_one(writer, db):
    alert = {"event_id": "al-1", "tenant": "acme", "device_id": "guard-7", "ts_ms": T0, "received_ms": T0,
             "kind": "PANIC", "severity": "CRITICAL", "lat": None, "lon": None, "message": None, "rule": None,
             "cause_event_id": None}
    writer.write(planned(CRITICAL, DEVICE_ALERT, [alert]))
    acts = [{"action_id": f"a{i}", "tenant": "acme", "alert_event_id": "al-1", "action": kind, "actor": "op",
             "ts_ms": T0 + ts, "note": None} for i, (kind, ts) in enumerate([("RESOLVE", 20), ("ACKNOWLEDGE", 10)])]
    writer.write(planned(ACTIONS, ALERT_ACTION, acts))
    writer.write(planned(ACTIONS, ALERT_ACTION, acts))  # replayed
    assert rows(db, "SELECT action_id, status FROM alert_action_log ORDER BY ts_ms") == [
        ("a1", "ACKNOWLEDGED"), ("a0", "RESOLVED")]
    assert rows(db, "SELECT status FROM device_alerts") == [("RESOLVED",)]
