"""What the PostgreSQL sink writes for each record; pure, no I/O.

:func:`plan_write` takes one Kafka record (its topic, key, coordinates and the
decoded Avro value) and returns what to do with it: a row for an event table
(:class:`InsertRow`), a geofence upsert or tombstone, an alert action, or a
refusal (:class:`~guardstream.refusal.Refused`) that becomes a dead letter. The
record's schema name picks its table, so a priority topic may carry several
record types.

Tables and their columns (:data:`TABLES`) mirror ``infra/migrations``; each
column carries its PostgreSQL type so the shell can type its (binary) COPY.
A field a record written with an older schema version lacks takes its schema default
(``ts_source`` ``device``, the rest null).
Times arrive as epoch milliseconds UTC and leave as aware ``datetime`` values
(timestamptz); the ``*_ms`` columns keep the exact milliseconds. JSON columns
get parsed values (a dict, a GeoJSON object).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import msgspec

from guardstream.catalog import TOPICS
from guardstream.errors import InputError
from guardstream.records import ACTION_STATUS
from guardstream.refusal import Refused
from guardstream import records

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[tuple[str, str], ...]  # (column, PostgreSQL type) in COPY order
    conflict: tuple[str, ...]  # the unique key a replayed row collides on

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.columns)

    @property
    def column_types(self) -> tuple[str, ...]:
        return tuple(kind for _, kind in self.columns)


_EVENT_HEAD = (("event_id", "text"), ("tenant", "text"), ("device_id", "text"),
               ("ts", "timestamptz"), ("received_at", "timestamptz"))


def _event_table(name: str, *columns: tuple[str, str]) -> Table:
    return Table(name, _EVENT_HEAD + columns, ("event_id",))


DEVICE_TELEMETRY = _event_table("device_telemetry", ("battery_pct", "float8"), ("charging", "bool"),
                                ("signal_dbm", "int4"), ("temperature_c", "float8"), ("firmware", "text"),
                                ("signal_pct", "float8"))
GUARD_POSITIONS = _event_table("guard_positions", ("lat", "float8"), ("lon", "float8"), ("accuracy_m", "float8"),
                               ("speed_mps", "float8"), ("heading_deg", "float8"), ("altitude_m", "float8"),
                               ("fences", "text[]"), ("in_site", "bool"), ("violation", "bool"))
SENSOR_READINGS = _event_table("sensor_readings", ("kind", "text"), ("site_id", "text"), ("value", "float8"),
                               ("unit", "text"), ("state", "text"))
SYSTEM_HEALTH = _event_table("system_health", ("status", "text"), ("detail", "text"), ("metrics", "jsonb"),
                             ("ts_source", "text"))
DEVICE_ALERTS = _event_table("device_alerts", ("kind", "text"), ("severity", "text"), ("lat", "float8"),
                             ("lon", "float8"), ("message", "text"), ("rule", "text"), ("cause_event_id", "text"),
                             ("ts_source", "text"), ("claimed_kind", "text"), ("claimed_severity", "text"))
GEOFENCE_EVENTS = _event_table("geofence_events", ("fence_id", "text"), ("fence_kind", "text"),
                               ("transition", "text"), ("lat", "float8"), ("lon", "float8"), ("dwell_ms", "int8"),
                               ("cause", "text"))
# The geofences table materialises the compacted topic of the same name: one row per key.
GEOFENCES = Table(TOPICS.geofences.name,
                  (("fence_id", "text"), ("tenant", "text"), ("name", "text"), ("kind", "text"), ("geometry", "jsonb"),
                   ("radius_m", "float8"), ("updated_ms", "int8"), ("deleted", "bool")),
                  ("fence_id",))
# The devices table materialises the compacted topic of the same name (the device registry).
DEVICES = Table(TOPICS.devices.name,
                (("device_id", "text"), ("tenant", "text"), ("kind", "text"), ("site_id", "text"),
                 ("enabled", "bool"), ("updated_ms", "int8")),
                ("device_id",))
DEAD_LETTERS = Table("dead_letters", (("dlq_topic", "text"), ("dlq_partition", "int4"), ("dlq_offset", "int8"),
                                      ("stage", "text"), ("reason", "text"), ("detail", "text"),
                                      ("source_topic", "text"), ("source_partition", "int4"),
                                      ("source_offset", "int8"), ("key", "bytea"), ("payload", "bytea"),
                                      ("ts", "timestamptz")),
                     ("dlq_topic", "dlq_partition", "dlq_offset"))

# The tables written with COPY + INSERT ... ON CONFLICT, in the order a batch writes them.
TABLES: tuple[Table, ...] = (DEVICE_ALERTS, GEOFENCE_EVENTS, GUARD_POSITIONS, SENSOR_READINGS, DEVICE_TELEMETRY,
                             SYSTEM_HEALTH, GEOFENCES, DEVICES, DEAD_LETTERS)


# -- what a record becomes -------------------------------------------------------------

class InsertRow(msgspec.Struct, frozen=True):
    """One row for an insert-once table (a replay collides on ``table.conflict``)."""
    table: Table
    row: tuple[Any, ...]


@dataclass(frozen=True)
class GeofenceUpsert:
    fence_id: str
    row: tuple[Any, ...]  # a GEOFENCES row with deleted = false


@dataclass(frozen=True)
class GeofenceTombstone:
    fence_id: str


@dataclass(frozen=True)
class DeviceUpsert:
    device_id: str
    row: tuple[Any, ...]  # a DEVICES row


@dataclass(frozen=True)
class DeviceTombstone:
    device_id: str


@dataclass(frozen=True)
class AlertStatusChange:
    """An operator's action on an alert, as the columns it sets."""
    action_id: str
    alert_event_id: str
    tenant: str
    status: str
    actor: str
    ts_ms: int
    status_at: datetime
    note: str | None


# A record the sink cannot write is Refused: it becomes a dead letter with that reason code.
Write = InsertRow | GeofenceUpsert | GeofenceTombstone | DeviceUpsert | DeviceTombstone | AlertStatusChange | Refused


def timestamp(ms: int) -> datetime:
    """Epoch milliseconds UTC as an aware datetime; :class:`InputError` past year 9999."""
    try:
        return _EPOCH + timedelta(milliseconds=ms)
    except OverflowError as exc:
        raise InputError(f"epoch milliseconds {ms} out of range", reason="out_of_range") from exc


def _head(record: Mapping[str, Any]) -> tuple[Any, ...]:
    return (record["event_id"], record["tenant"], record["device_id"], timestamp(record["ts_ms"]),
            timestamp(record["received_ms"]))


def _telemetry(r: Mapping[str, Any]) -> tuple[Any, ...]:
    return _head(r) + (r.get("battery_pct"), r.get("charging"), r.get("signal_dbm"), r.get("temperature_c"),
                       r.get("firmware"), r.get("signal_pct"))


def _guard_position(r: Mapping[str, Any]) -> tuple[Any, ...]:
    return _head(r) + (r["lat"], r["lon"], r.get("accuracy_m"), r.get("speed_mps"), r.get("heading_deg"),
                       r.get("altitude_m"), list(r.get("fences") or ()), r.get("in_site"),
                       bool(r.get("violation", False)))


def _sensor_reading(r: Mapping[str, Any]) -> tuple[Any, ...]:
    return _head(r) + (r["kind"], r.get("site_id"), r.get("value"), r.get("unit"), r.get("state"))


def _system_health(r: Mapping[str, Any]) -> tuple[Any, ...]:
    return _head(r) + (r["status"], r.get("detail"), dict(r.get("metrics") or {}),
                       r.get("ts_source", "device"))


def _device_alert(r: Mapping[str, Any]) -> tuple[Any, ...]:
    return _head(r) + (r["kind"], r["severity"], r.get("lat"), r.get("lon"), r.get("message"), r.get("rule"),
                       r.get("cause_event_id"), r.get("ts_source", "device"), r.get("claimed_kind"),
                       r.get("claimed_severity"))


def _geofence_event(r: Mapping[str, Any]) -> tuple[Any, ...]:
    return _head(r) + (r["fence_id"], r["fence_kind"], r["transition"], r["lat"], r["lon"], r.get("dwell_ms"),
                       r.get("cause"))


# Record names are the records' own; the table names are the tables' (SYSTEM_HEALTH is a table here).
EVENT_ROWS = {
    records.TELEMETRY: (DEVICE_TELEMETRY, _telemetry),
    records.GUARD_POSITION: (GUARD_POSITIONS, _guard_position),
    records.SENSOR_READING: (SENSOR_READINGS, _sensor_reading),
    records.SYSTEM_HEALTH: (SYSTEM_HEALTH, _system_health),
    records.DEVICE_ALERT: (DEVICE_ALERTS, _device_alert),
    records.GEOFENCE_EVENT: (GEOFENCE_EVENTS, _geofence_event),
}


def geofence_row(r: Mapping[str, Any]) -> tuple[Any, ...]:
    try:
        geometry = json.loads(r["geometry"])
    except ValueError as exc:
        raise InputError(f"geometry of fence {r['fence_id']} is not JSON: {exc}", reason="bad_geometry") from exc
    return (r["fence_id"], r["tenant"], r["name"], r["kind"], geometry, r.get("radius_m"), r["updated_ms"], False)


def device_row(r: Mapping[str, Any]) -> tuple[Any, ...]:
    return (r["device_id"], r["tenant"], r["kind"], r.get("site_id"), bool(r["enabled"]), r["updated_ms"])


def alert_status_change(r: Mapping[str, Any]) -> AlertStatusChange:
    status = ACTION_STATUS.get(r["action"])
    if status is None:
        raise InputError(f"unknown alert action {r['action']!r}", reason="unknown_action")
    return AlertStatusChange(r["action_id"], r["alert_event_id"], r["tenant"], status, r["actor"], r["ts_ms"],
                             timestamp(r["ts_ms"]), r.get("note"))


def _text_without_nul(value: str | None) -> str | None:
    # PostgreSQL text cannot hold NUL; dead_letters is the catch-all table, so it must take anything
    return None if value is None else value.replace("\x00", "\ufffd")


def dead_letter_row(r: Mapping[str, Any], dlq_topic: str, dlq_partition: int, dlq_offset: int) -> tuple[Any, ...]:
    """A dead_letters row for a DeadLetter read at (dlq_topic, dlq_partition, dlq_offset)."""
    return (dlq_topic, dlq_partition, dlq_offset, _text_without_nul(r["stage"]), _text_without_nul(r["reason"]),
            _text_without_nul(r["detail"]), _text_without_nul(r.get("source_topic")), r.get("source_partition"),
            r.get("source_offset"), r.get("key"), r["payload"], timestamp(r["ts_ms"]))


DEAD_LETTER_TOPICS = frozenset(t.name for t in TOPICS.dead_letters())
SINK_STAGE = "sink"


def plan_write(topic: str, partition: int, offset: int, key: bytes | None,
               full_name: str | None, record: Mapping[str, Any] | None) -> Write:
    """What to write for one decoded record; ``record`` is None for a tombstone."""
    try:
        return _plan(topic, partition, offset, key, full_name, record)
    except InputError as exc:
        return Refused.of(exc)


def _plan(topic: str, partition: int, offset: int, key: bytes | None,
          full_name: str | None, record: Mapping[str, Any] | None) -> Write:
    if record is None:
        if topic == TOPICS.geofences.name and key and b"\x00" not in key:
            return GeofenceTombstone(key.decode("utf-8", "replace"))
        if topic == TOPICS.devices.name and key and b"\x00" not in key:
            return DeviceTombstone(key.decode("utf-8", "replace"))
        return Refused("empty_value", f"record without a value on {topic}")
    expected = _expected_record(topic)
    if expected is not None and full_name != expected:
        return Refused("unexpected_record", f"{full_name} on {topic}, which carries {expected}")
    if topic == TOPICS.geofences.name:
        return GeofenceUpsert(record["fence_id"], geofence_row(record))
    if topic == TOPICS.devices.name:
        return DeviceUpsert(record["device_id"], device_row(record))
    if topic == TOPICS.alerts_actions.name:
        return alert_status_change(record)
    if topic in DEAD_LETTER_TOPICS:
        return InsertRow(DEAD_LETTERS, dead_letter_row(record, topic, partition, offset))
    mapping = EVENT_ROWS.get(full_name or "")
    if mapping is None:
        return Refused("unexpected_record", f"{full_name} has no table")
    table, to_row = mapping
    return InsertRow(table, to_row(record))


def _expected_record(topic: str) -> str | None:
    if topic == TOPICS.geofences.name:
        return records.GEOFENCE
    if topic == TOPICS.devices.name:
        return records.DEVICE
    if topic == TOPICS.alerts_actions.name:
        return records.ALERT_ACTION
    if topic in DEAD_LETTER_TOPICS:
        return records.DEAD_LETTER
    return None


FenceWrite = GeofenceUpsert | GeofenceTombstone
K = TypeVar("K")


def latest_geofences(writes: Sequence[tuple[K, FenceWrite]]) -> list[tuple[K, FenceWrite]]:
    """A batch's net effect on the geofences table: one write per fence, the same as writing one by one.

    ``writes`` are (reference, write) pairs in log order; each result keeps the reference of the
    fence's last write. A tombstone after an upsert in the same batch becomes that upsert with
    ``deleted`` set, so the fence ends up present and deleted wherever the batch was cut.
    """
    last: dict[str, tuple[K, FenceWrite]] = {}
    for ref, write in writes:
        before = last.pop(write.fence_id, None)  # re-insert so the result keeps the order of last writes
        if isinstance(write, GeofenceTombstone) and before is not None and isinstance(before[1], GeofenceUpsert):
            write = GeofenceUpsert(write.fence_id, before[1].row[:-1] + (True,))
        last[write.fence_id] = (ref, write)
    return list(last.values())


DeviceWrite = DeviceUpsert | DeviceTombstone


def latest_devices(writes: Sequence[tuple[K, DeviceWrite]]) -> list[tuple[K, DeviceWrite]]:
    """A batch's net effect on the devices table: the last write per device, in the order of last writes
    (one INSERT ... ON CONFLICT DO UPDATE cannot touch a row twice)."""
    last: dict[str, tuple[K, DeviceWrite]] = {}
    for ref, write in writes:
        last.pop(write.device_id, None)
        last[write.device_id] = (ref, write)
    return list(last.values())
