"""Record -> row mapping of the PostgreSQL sink: every example record, case tables, properties."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime

import fastavro
import pytest
from hypothesis import given
from hypothesis import strategies as st

from guardstream.catalog import TOPICS
from guardstream.errors import InputError
from guardstream.refusal import Refused
from guardstream.schemas.contracts import EXAMPLES_DIR, current_contracts
from guardstream.sinks.rows import (DEAD_LETTERS, DEVICE_ALERTS, DEVICE_TELEMETRY, EVENT_ROWS, GEOFENCES, TABLES,
                                    AlertStatusChange, GeofenceTombstone, GeofenceUpsert, InsertRow, latest_geofences,
                                    plan_write, timestamp)

MIGRATIONS = EXAMPLES_DIR.parent.parent / "infra" / "migrations"
# every migration: a table may be created by a later one (devices), and columns added by ALTER
MIGRATION = "\n".join(path.read_text() for path in sorted(MIGRATIONS.glob("*.sql")))
LATER_MIGRATIONS = "\n".join(path.read_text() for path in sorted(MIGRATIONS.glob("*.sql"))[1:])


def _added_columns(table: str) -> list[str]:
    """Columns later migrations add with ``ALTER TABLE table ADD COLUMN name ...``."""
    added: list[str] = []
    for statement in LATER_MIGRATIONS.split(";"):
        lines = [line.split("--", 1)[0] for line in statement.splitlines()]
        words = " ".join(lines).split()
        if words[:3] == ["ALTER", "TABLE", table]:
            added += [words[i + 2] for i in range(len(words) - 2) if words[i:i + 2] == ["ADD", "COLUMN"]]
    return added


def _examples(name: str) -> list[dict]:
    """The example records as the codec decodes them (from Avro's JSON encoding)."""
    schema = fastavro.parse_schema(current_contracts()[f"guardstream.{name}"].schema)
    return list(fastavro.json_reader(io.StringIO((EXAMPLES_DIR / f"{name}.jsonl").read_text()), schema))


EVENT_TOPIC = TOPICS.events_low.name


@pytest.mark.parametrize("full_name", sorted(EVENT_ROWS))
def test_every_event_example_maps_to_a_row_of_its_table(full_name):
    table, _ = EVENT_ROWS[full_name]
    for record in _examples(full_name.split(".")[1]):
        write = plan_write(EVENT_TOPIC, 0, 7, b"k", full_name, record)
        assert isinstance(write, InsertRow) and write.table is table
        assert len(write.row) == len(table.columns)
        named = dict(zip(table.column_names, write.row))
        assert named["event_id"] == record["event_id"]
        assert named["ts"] == timestamp(record["ts_ms"]) and named["ts"].tzinfo is not None
        assert named["received_at"] == timestamp(record["received_ms"])


def test_columns_match_the_migration():
    for table in TABLES:
        block = MIGRATION.split(f"CREATE TABLE {table.name} (", 1)[1].split(");", 1)[0]
        declared = [line.split()[0] for line in block.splitlines()
                    if line.strip() and not line.strip().startswith(("PRIMARY", "--"))]
        declared += _added_columns(table.name)
        assert set(table.column_names) <= set(declared), table.name
        if table is not DEVICE_ALERTS:  # status columns are set by alert actions, not by the row
            assert set(declared) == set(table.column_names), table.name


@pytest.mark.parametrize("ms, expected", [
    (0, datetime(1970, 1, 1, tzinfo=UTC)),
    (1795000000040, datetime(2026, 11, 18, 11, 6, 40, 40000, tzinfo=UTC)),
    (-1, datetime(1969, 12, 31, 23, 59, 59, 999000, tzinfo=UTC)),
])
def test_epoch_milliseconds_become_aware_utc_datetimes(ms, expected):
    assert timestamp(ms) == expected


def test_a_time_beyond_year_9999_is_refused_as_out_of_range():
    record = _examples("Telemetry")[0] | {"ts_ms": 2**62}
    write = plan_write(EVENT_TOPIC, 0, 1, None, "guardstream.Telemetry", record)
    assert write == Refused("out_of_range", write.detail)
    with pytest.raises(InputError):
        timestamp(2**62)


@given(st.integers(min_value=-62_135_596_800_000, max_value=253_402_300_799_999))
def test_timestamps_keep_every_millisecond(ms):
    back = timestamp(ms) - datetime(1970, 1, 1, tzinfo=UTC)
    assert back.days * 86_400_000 + back.seconds * 1000 + back.microseconds // 1000 == ms


@pytest.mark.parametrize("topic, full_name, reason", [
    (TOPICS.events_low.name, "guardstream.AlertAction", "unexpected_record"),
    (TOPICS.geofences.name, "guardstream.Telemetry", "unexpected_record"),
    (TOPICS.alerts_actions.name, "guardstream.DeviceAlert", "unexpected_record"),
    (TOPICS.dlq_sink.name, "guardstream.Telemetry", "unexpected_record"),
])
def test_a_record_that_does_not_belong_on_its_topic_is_refused(topic, full_name, reason):
    write = plan_write(topic, 0, 1, None, full_name, _examples(full_name.split(".")[1])[0])
    assert isinstance(write, Refused) and write.reason == reason


def test_the_schema_name_picks_the_table_whatever_the_priority_topic():
    alert = _examples("DeviceAlert")[1]  # severity HIGH travels on events.high
    write = plan_write(TOPICS.events_high.name, 2, 3, None, "guardstream.DeviceAlert", alert)
    assert isinstance(write, InsertRow) and write.table is DEVICE_ALERTS


def test_a_null_value_is_a_tombstone_on_geofences_and_refused_elsewhere():
    assert plan_write(TOPICS.geofences.name, 0, 5, b"fence-1", None, None) == GeofenceTombstone("fence-1")
    assert plan_write(EVENT_TOPIC, 0, 5, b"dev", None, None).reason == "empty_value"
    assert plan_write(TOPICS.geofences.name, 0, 5, None, None, None).reason == "empty_value"


def test_a_geofence_is_an_upsert_that_undeletes():
    fence = _examples("Geofence")[0]
    write = plan_write(TOPICS.geofences.name, 0, 1, fence["fence_id"].encode(), "guardstream.Geofence", fence)
    assert isinstance(write, GeofenceUpsert)
    named = dict(zip(GEOFENCES.column_names, write.row))
    assert named["deleted"] is False and named["geometry"] == json.loads(fence["geometry"])


@pytest.mark.parametrize("action, status", [("ACKNOWLEDGE", "ACKNOWLEDGED"), ("RESOLVE", "RESOLVED"),
                                            ("FALSE_ALARM", "FALSE_ALARM")])
def test_alert_actions_become_status_changes(action, status):
    record = _examples("AlertAction")[0] | {"action": action}
    write = plan_write(TOPICS.alerts_actions.name, 1, 9, None, "guardstream.AlertAction", record)
    assert isinstance(write, AlertStatusChange)
    assert (write.status, write.actor, write.ts_ms) == (status, record["actor"], record["ts_ms"])
    assert write.status_at == timestamp(record["ts_ms"])


@pytest.mark.parametrize("dlq", [t.name for t in TOPICS.dead_letters()])
def test_a_dead_letter_of_every_stage_is_keyed_by_its_place_in_the_dlq_topic(dlq):
    letter = _examples("DeadLetter")[0] | {"detail": "nul\x00inside", "payload": b"\x00raw"}
    write = plan_write(dlq, 0, 42, None, "guardstream.DeadLetter", letter)
    assert isinstance(write, InsertRow) and write.table is DEAD_LETTERS
    named = dict(zip(DEAD_LETTERS.column_names, write.row))
    assert (named["dlq_topic"], named["dlq_partition"], named["dlq_offset"]) == (dlq, 0, 42)
    assert "\x00" not in named["detail"] and named["payload"] == b"\x00raw"


def test_json_columns_get_parsed_values():
    health = _examples("SystemHealth")[0] | {"metrics": {"b": 2.0, "a": 1.5}}
    write = plan_write(EVENT_TOPIC, 0, 1, None, "guardstream.SystemHealth", health)
    assert dict(zip(write.table.column_names, write.row))["metrics"] == {"a": 1.5, "b": 2.0}
    fence = _examples("Geofence")[1]
    write = plan_write(TOPICS.geofences.name, 0, 1, None, "guardstream.Geofence", fence)
    assert dict(zip(GEOFENCES.column_names, write.row))["geometry"]["type"] == "Point"


def test_a_fence_whose_geometry_is_not_json_is_refused():
    fence = _examples("Geofence")[0] | {"geometry": "{not json"}
    write = plan_write(TOPICS.geofences.name, 0, 1, None, "guardstream.Geofence", fence)
    assert isinstance(write, Refused) and write.reason == "bad_geometry"


def test_telemetry_values_pass_unchanged_for_the_database_to_judge():
    record = _examples("Telemetry")[0] | {"battery_pct": 150.0}
    write = plan_write(EVENT_TOPIC, 0, 1, None, "guardstream.Telemetry", record)
    assert dict(zip(DEVICE_TELEMETRY.column_names, write.row))["battery_pct"] == 150.0


upserts = st.builds(lambda f, n: GeofenceUpsert(f, (f, n, False)), st.sampled_from("abcd"), st.integers(0, 9))
tombstones = st.builds(GeofenceTombstone, st.sampled_from("abcd"))


def _apply(table: dict, writes) -> dict:
    """What the database does with each write: an upsert sets the row, a tombstone marks it deleted."""
    table = dict(table)
    for w in writes:
        if isinstance(w, GeofenceUpsert):
            table[w.fence_id] = w.row
        elif w.fence_id in table:
            table[w.fence_id] = table[w.fence_id][:-1] + (True,)
    return table


@given(st.lists(st.one_of(upserts, tombstones), max_size=30), st.integers(0, 30))
def test_a_batch_has_the_effect_of_its_writes_one_by_one_wherever_it_is_cut(writes, cut):
    def net(part):
        return [w for _, w in latest_geofences(list(enumerate(part)))]
    assert len({w.fence_id for w in net(writes)}) == len(net(writes))
    assert _apply(_apply({}, net(writes[:cut])), net(writes[cut:])) == _apply({}, writes)


def test_the_net_write_keeps_the_reference_of_the_last_record():
    writes = [(1, GeofenceUpsert("a", ("a", 1, False))), (2, GeofenceUpsert("b", ("b", 1, False))),
              (3, GeofenceTombstone("a"))]
    assert latest_geofences(writes) == [(2, GeofenceUpsert("b", ("b", 1, False))),
                                        (3, GeofenceUpsert("a", ("a", 1, True)))]

