"""The batch writer against a real PostgreSQL: idempotent batches, bad rows isolated, actions ordered."""

from __future__ import annotations

import psycopg
import pytest

from guardstream.catalog import TOPICS
from guardstream.errors import GuardstreamError, UnavailableError
from guardstream.infra.migrate import migrate
from guardstream.infra.stack import free_port
from guardstream.sinks.rows import plan_write
from guardstream.sinks.writer import BatchWriter, text_array_binary

T0 = 1_795_000_000_000


def telemetry(i: int, **changes) -> dict:
    return {"event_id": f"tel-{i}", "tenant": "acme", "device_id": f"dev-{i % 7}", "ts_ms": T0 + i,
            "received_ms": T0 + i + 40, "battery_pct": 50.0, "charging": False, "signal_dbm": -70,
            "temperature_c": 30.5, "firmware": "2.4.1"} | changes


def position(i: int, **changes) -> dict:
    return {"event_id": f"pos-{i}", "tenant": "acme", "device_id": "guard-7", "ts_ms": T0 + i,
            "received_ms": T0 + i + 40, "lat": 52.52, "lon": 13.40, "accuracy_m": 4.5, "speed_mps": None,
            "heading_deg": None, "altitude_m": None, "fences": ["acme-hq"], "in_site": True,
            "violation": False} | changes


def alert(event_id: str) -> dict:
    return {"event_id": event_id, "tenant": "acme", "device_id": "guard-7", "ts_ms": T0, "received_ms": T0 + 40,
            "kind": "PANIC", "severity": "CRITICAL", "lat": 52.5, "lon": 13.4, "message": "panic", "rule": None,
            "cause_event_id": None}


def action(action_id: str, alert_id: str, kind: str, ts_ms: int, actor: str = "op@acme") -> dict:
    return {"action_id": action_id, "tenant": "acme", "alert_event_id": alert_id, "action": kind, "actor": actor,
            "ts_ms": ts_ms, "note": f"{kind.lower()} by {actor}"}


def fence(fence_id: str, name: str = "HQ") -> dict:
    return {"fence_id": fence_id, "tenant": "acme", "name": name, "kind": "SITE",
            "geometry": '{"type": "Point", "coordinates": [13.4, 52.5]}', "radius_m": 50.0, "updated_ms": T0}


def planned(topic: str, full_name: str | None, records: list, start: int = 0) -> list:
    out = []
    for offset, record in enumerate(records, start=start):
        key = record.get("fence_id", "k").encode() if record else b"k"
        out.append(((topic, offset), plan_write(topic, 0, offset, key, full_name, record)))
    return out


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


LOW, CRITICAL = TOPICS.events_low.name, TOPICS.events_critical.name


def test_a_batch_written_twice_inserts_nothing_the_second_time(writer, db):
    batch = planned(LOW, "guardstream.Telemetry", [telemetry(i) for i in range(3000)])
    batch += planned(TOPICS.events_high.name, "guardstream.GuardPosition", [position(i) for i in range(500)])
    first = writer.write(batch)
    assert first.written == {"device_telemetry": 3000, "guard_positions": 500} and not first.rejected
    again = writer.write(batch)
    assert sum(again.written.values()) == 0
    assert again.duplicates == {"device_telemetry": 3000, "guard_positions": 500}
    assert rows(db, "SELECT count(*), min(ts), bool_and(received_at > ts) FROM device_telemetry")[0][0] == 3000
    assert rows(db, "SELECT fences FROM guard_positions LIMIT 1") == [(["acme-hq"],)]


@pytest.mark.parametrize("fences", [[], ["acme-hq"], ["b", "a", "été-zone", ""], [None, "x"]])
def test_fence_arrays_reach_the_database_as_written(db, fences):
    with psycopg.connect(db) as conn:
        conn.execute("CREATE TEMP TABLE arrays (fences text[])")
        with conn.cursor().copy("COPY arrays (fences) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(["bytea"])
            copy.write_row([text_array_binary(fences)])
        assert conn.execute("SELECT fences FROM arrays").fetchall() == [(fences,)]


def test_json_columns_hold_json_objects(writer, db):
    health = {"event_id": "h-1", "tenant": "acme", "device_id": "bridge-1", "ts_ms": T0, "received_ms": T0,
              "status": "DEGRADED", "detail": None, "metrics": {"inflight": 512.0}}
    writer.write(planned(LOW, "guardstream.SystemHealth", [health]))
    assert rows(db, "SELECT metrics->'inflight', jsonb_typeof(metrics) FROM system_health") == [(512.0, "object")]


def test_duplicate_event_ids_inside_one_batch_become_one_row(writer, db):
    result = writer.write(planned(LOW, "guardstream.Telemetry", [telemetry(1), telemetry(1), telemetry(2)]))
    assert result.written["device_telemetry"] == 2 and result.duplicates["device_telemetry"] == 1


def test_bad_rows_are_pinned_down_and_the_rest_is_written(writer, db):
    records = [telemetry(i) for i in range(1000)]
    records[137] = telemetry(137, battery_pct=150.0)
    records[800] = telemetry(800, firmware="nul\x00byte")
    batch = planned(LOW, "guardstream.Telemetry", records)
    batch += planned(TOPICS.events_high.name, "guardstream.GuardPosition", [position(0), position(1, lat=91.0)],
                     start=5000)
    health = {"event_id": "h-nan", "tenant": "acme", "device_id": "bridge-1", "ts_ms": T0, "received_ms": T0,
              "status": "OK", "detail": None, "metrics": {"cpu_ratio": float("nan")}}
    batch += planned(LOW, "guardstream.SystemHealth", [health], start=9000)
    result = writer.write(batch)
    assert sorted((r.ref, r.refused.reason) for r in result.rejected) == [
        ((TOPICS.events_high.name, 5001), "check_violation"), ((LOW, 137), "check_violation"),
        ((LOW, 800), "character_not_in_repertoire"), ((LOW, 9000), "invalid_text_representation")]
    assert "device_telemetry_battery_pct_check" in next(r.refused.detail for r in result.rejected if r.ref == (LOW, 137))
    assert result.written == {"device_telemetry": 998, "guard_positions": 1}
    assert rows(db, "SELECT count(*) FROM device_telemetry WHERE event_id IN ('tel-137', 'tel-800')") == [(0,)]


def test_geofences_upsert_and_tombstones_mark_deleted(writer, db):
    writer.write(planned(TOPICS.geofences.name, "guardstream.Geofence", [fence("hq"), fence("yard")]))
    batch = planned(TOPICS.geofences.name, "guardstream.Geofence", [fence("hq", "HQ v2")], start=2)
    batch += planned(TOPICS.geofences.name, None, [None], start=3)  # key "k": never written, nothing to mark
    batch += [((TOPICS.geofences.name, 4), plan_write(TOPICS.geofences.name, 0, 4, b"yard", None, None))]
    writer.write(batch)
    assert rows(db, "SELECT fence_id, name, deleted, geometry->>'type' FROM geofences ORDER BY 1") == [
        ("hq", "HQ v2", False, "Point"), ("yard", "HQ", True, "Point")]
    # deleted, then re-created within one batch: the last write wins
    batch = [((TOPICS.geofences.name, 5), plan_write(TOPICS.geofences.name, 0, 5, b"hq", None, None))]
    batch += planned(TOPICS.geofences.name, "guardstream.Geofence", [fence("hq", "HQ v3")], start=6)
    writer.write(batch)
    assert rows(db, "SELECT name, deleted FROM geofences WHERE fence_id = 'hq'") == [("HQ v3", False)]
    # created, then deleted within one batch: present and deleted, as if written one by one
    batch = planned(TOPICS.geofences.name, "guardstream.Geofence", [fence("gate")], start=7)
    batch += [((TOPICS.geofences.name, 8), plan_write(TOPICS.geofences.name, 0, 8, b"gate", None, None))]
    writer.write(batch)
    assert rows(db, "SELECT deleted FROM geofences WHERE fence_id = 'gate'") == [(True,)]


def test_actions_update_status_and_a_stale_one_never_rolls_it_back(writer, db):
    writer.write(planned(CRITICAL, "guardstream.DeviceAlert", [alert("al-1")]))
    acts = TOPICS.alerts_actions.name
    result = writer.write(planned(acts, "guardstream.AlertAction", [
        action("a1", "al-1", "ACKNOWLEDGE", T0 + 1000), action("a2", "al-1", "RESOLVE", T0 + 2000, "boss@acme")]))
    assert result.actions == {"applied": 2}
    stale = writer.write(planned(acts, "guardstream.AlertAction", [action("a0", "al-1", "FALSE_ALARM", T0 + 500)],
                                 start=2))
    assert stale.actions == {"stale": 1}
    replay = writer.write(planned(acts, "guardstream.AlertAction", [action("a2", "al-1", "RESOLVE", T0 + 2000)],
                                  start=1))
    assert replay.actions == {"stale": 1}
    assert rows(db, "SELECT status, status_by, status_ts_ms, status_note, status_at = to_timestamp(%s / 1000.0) "
                "FROM device_alerts", T0 + 2000) == [("RESOLVED", "boss@acme", T0 + 2000, "resolve by boss@acme",
                                                      True)]


def test_an_action_before_its_alert_waits_and_the_newest_applies_when_the_alert_lands(writer, db):
    acts = TOPICS.alerts_actions.name
    early = writer.write(planned(acts, "guardstream.AlertAction", [
        action("b1", "al-2", "ACKNOWLEDGE", T0 + 1000), action("b2", "al-2", "FALSE_ALARM", T0 + 3000),
        action("b3", "al-2", "RESOLVE", T0 + 2000)]))
    assert early.actions == {"pending": 3}
    assert rows(db, "SELECT count(*) FROM alert_actions_pending") == [(3,)]
    landed = writer.write(planned(CRITICAL, "guardstream.DeviceAlert", [alert("al-2")]))
    assert landed.actions == {"applied_pending": 1, "stale": 2}  # the newest wins, as in order
    assert rows(db, "SELECT status, status_ts_ms FROM device_alerts") == [("FALSE_ALARM", T0 + 3000)]
    assert rows(db, "SELECT count(*) FROM alert_actions_pending") == [(0,)]
    replayed = writer.write(planned(acts, "guardstream.AlertAction", [action("b1", "al-2", "ACKNOWLEDGE", T0 + 1000)]))
    assert replayed.actions == {"stale": 1}
    assert rows(db, "SELECT count(*) FROM alert_actions_pending") == [(0,)]


def test_dead_letters_land_once_per_dlq_place(writer, db):
    letter = {"stage": "validate", "reason": "out_of_range", "detail": "lat 123.4", "source_topic": "raw",
              "source_partition": 2, "source_offset": 1881, "key": None, "payload": b"{}", "ts_ms": T0}
    batch = planned(TOPICS.dlq_validate.name, "guardstream.DeadLetter", [letter, letter])
    assert writer.write(batch).written == {"dead_letters": 2}
    assert writer.write(batch).duplicates == {"dead_letters": 2}


def test_a_database_without_the_tables_is_a_clear_error(database_url):
    writer = BatchWriter(database_url)
    with pytest.raises(GuardstreamError) as info:
        writer.ping()
    assert info.value.reason == "not_migrated" and "guardstream db migrate" in info.value.detail


def test_an_unreachable_database_is_unavailable_not_a_bad_row(db):
    port = free_port()
    writer = BatchWriter(f"postgresql://postgres@127.0.0.1:{port}/nowhere", connect_timeout_s=1)
    with pytest.raises(UnavailableError):
        writer.write(planned(LOW, "guardstream.Telemetry", [telemetry(1)]))
    with pytest.raises(UnavailableError):
        writer.ping()
