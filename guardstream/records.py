"""The records of the Avro contracts in ``schemas/avro``, typed: for each, its name, its shape and its constructor.

Per ``.avsc`` file this module holds, once:

- the record's full name (``DEVICE_ALERT = "guardstream.DeviceAlert"``), which is
  also its Schema Registry subject: code that names a record imports it from here;
- a :class:`~typing.TypedDict` of the same name (``DeviceAlert``) with the fields of
  the schema, in schema order;
- one constructor (``device_alert(...)``) with a keyword per field, which every
  stage that makes such a record calls. A field with a default in the schema has
  the same default here, except the empty list and map defaults, which callers pass.

``tests/core/test_typed_records.py`` holds the three against the ``.avsc`` files, so
they cannot drift apart. An Avro enum is a ``str`` holding one of its symbols;
the symbols are written in the ``.avsc`` alone (``streams/validation`` reads them
from there).

Why dicts: the codec (fastavro) encodes dicts and the worker's hot path hands
them on, so a constructor that returns a dict literal costs nothing per event
beyond the dict itself (it measured faster than the ``{**head, ...}`` literals it
replaced); a dataclass or msgspec Struct would need a conversion per event.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypedDict

ALERT_ACTION = "guardstream.AlertAction"
COMMAND_OUTCOME = "guardstream.CommandOutcome"
DEAD_LETTER = "guardstream.DeadLetter"
DEVICE = "guardstream.Device"
DEVICE_ALERT = "guardstream.DeviceAlert"
DEVICE_COMMAND = "guardstream.DeviceCommand"
GEOFENCE = "guardstream.Geofence"
GEOFENCE_EVENT = "guardstream.GeofenceEvent"
GUARD_POSITION = "guardstream.GuardPosition"
SENSOR_READING = "guardstream.SensorReading"
SYSTEM_HEALTH = "guardstream.SystemHealth"
TELEMETRY = "guardstream.Telemetry"


# -- the events a device causes: each starts with the same five fields --------------------------

class Telemetry(TypedDict):
    event_id: str
    tenant: str
    device_id: str
    ts_ms: int
    received_ms: int
    battery_pct: float | None
    charging: bool | None
    signal_dbm: int | None
    temperature_c: float | None
    firmware: str | None
    signal_pct: float | None


def telemetry(*, event_id: str, tenant: str, device_id: str, ts_ms: int, received_ms: int,
              battery_pct: float | None = None, charging: bool | None = None, signal_dbm: int | None = None,
              temperature_c: float | None = None, firmware: str | None = None,
              signal_pct: float | None = None) -> Telemetry:
    return {"event_id": event_id, "tenant": tenant, "device_id": device_id, "ts_ms": ts_ms,
            "received_ms": received_ms, "battery_pct": battery_pct, "charging": charging, "signal_dbm": signal_dbm,
            "temperature_c": temperature_c, "firmware": firmware, "signal_pct": signal_pct}


class GuardPosition(TypedDict):
    event_id: str
    tenant: str
    device_id: str
    ts_ms: int
    received_ms: int
    lat: float
    lon: float
    accuracy_m: float | None
    speed_mps: float | None
    heading_deg: float | None
    altitude_m: float | None
    fences: list[str]
    in_site: bool | None
    violation: bool


def guard_position(*, event_id: str, tenant: str, device_id: str, ts_ms: int, received_ms: int, lat: float,
                   lon: float, accuracy_m: float | None = None, speed_mps: float | None = None,
                   heading_deg: float | None = None, altitude_m: float | None = None, fences: list[str],
                   in_site: bool | None = None, violation: bool = False) -> GuardPosition:
    return {"event_id": event_id, "tenant": tenant, "device_id": device_id, "ts_ms": ts_ms,
            "received_ms": received_ms, "lat": lat, "lon": lon, "accuracy_m": accuracy_m, "speed_mps": speed_mps,
            "heading_deg": heading_deg, "altitude_m": altitude_m, "fences": fences, "in_site": in_site,
            "violation": violation}


class SensorReading(TypedDict):
    event_id: str
    tenant: str
    device_id: str
    ts_ms: int
    received_ms: int
    kind: str  # enum SensorKind
    site_id: str | None
    value: float | None
    unit: str | None
    state: str | None


def sensor_reading(*, event_id: str, tenant: str, device_id: str, ts_ms: int, received_ms: int, kind: str,
                   site_id: str | None = None, value: float | None = None, unit: str | None = None,
                   state: str | None = None) -> SensorReading:
    return {"event_id": event_id, "tenant": tenant, "device_id": device_id, "ts_ms": ts_ms,
            "received_ms": received_ms, "kind": kind, "site_id": site_id, "value": value, "unit": unit,
            "state": state}


class DeviceAlert(TypedDict):
    event_id: str
    tenant: str
    device_id: str
    ts_ms: int
    received_ms: int
    kind: str  # enum AlertKind
    severity: str  # enum Severity
    lat: float | None
    lon: float | None
    message: str | None
    rule: str | None
    cause_event_id: str | None
    ts_source: str  # enum TsSource
    claimed_kind: str | None
    claimed_severity: str | None


def device_alert(*, event_id: str, tenant: str, device_id: str, ts_ms: int, received_ms: int, kind: str,
                 severity: str, lat: float | None = None, lon: float | None = None, message: str | None = None,
                 rule: str | None = None, cause_event_id: str | None = None, ts_source: str = "device",
                 claimed_kind: str | None = None, claimed_severity: str | None = None) -> DeviceAlert:
    return {"event_id": event_id, "tenant": tenant, "device_id": device_id, "ts_ms": ts_ms,
            "received_ms": received_ms, "kind": kind, "severity": severity, "lat": lat, "lon": lon,
            "message": message, "rule": rule, "cause_event_id": cause_event_id, "ts_source": ts_source,
            "claimed_kind": claimed_kind, "claimed_severity": claimed_severity}


class SystemHealth(TypedDict):
    event_id: str
    tenant: str
    device_id: str
    ts_ms: int
    received_ms: int
    status: str  # enum HealthStatus
    detail: str | None
    metrics: dict[str, float]
    ts_source: str  # enum TsSource


def system_health(*, event_id: str, tenant: str, device_id: str, ts_ms: int, received_ms: int, status: str,
                  detail: str | None = None, metrics: dict[str, float], ts_source: str = "device") -> SystemHealth:
    return {"event_id": event_id, "tenant": tenant, "device_id": device_id, "ts_ms": ts_ms,
            "received_ms": received_ms, "status": status, "detail": detail, "metrics": metrics,
            "ts_source": ts_source}


class GeofenceEvent(TypedDict):
    event_id: str
    tenant: str
    device_id: str
    ts_ms: int
    received_ms: int
    fence_id: str
    fence_kind: str  # enum FenceKind
    transition: str  # enum Transition
    lat: float
    lon: float
    dwell_ms: int | None
    cause: str | None


def geofence_event(*, event_id: str, tenant: str, device_id: str, ts_ms: int, received_ms: int, fence_id: str,
                   fence_kind: str, transition: str, lat: float, lon: float, dwell_ms: int | None = None,
                   cause: str | None = None) -> GeofenceEvent:
    return {"event_id": event_id, "tenant": tenant, "device_id": device_id, "ts_ms": ts_ms,
            "received_ms": received_ms, "fence_id": fence_id, "fence_kind": fence_kind, "transition": transition,
            "lat": lat, "lon": lon, "dwell_ms": dwell_ms, "cause": cause}


# -- geofences, the device registry, operators' actions, device commands -----------------------

class Geofence(TypedDict):
    fence_id: str
    tenant: str
    name: str
    kind: str  # enum FenceKind
    geometry: str  # GeoJSON text
    radius_m: float | None
    updated_ms: int


def geofence(*, fence_id: str, tenant: str, name: str, kind: str, geometry: str, radius_m: float | None = None,
             updated_ms: int) -> Geofence:
    return {"fence_id": fence_id, "tenant": tenant, "name": name, "kind": kind, "geometry": geometry,
            "radius_m": radius_m, "updated_ms": updated_ms}


class Device(TypedDict):
    device_id: str
    tenant: str
    kind: str  # enum DeviceKind
    site_id: str | None
    enabled: bool
    updated_ms: int


def device(*, device_id: str, tenant: str, kind: str, site_id: str | None = None, enabled: bool = True,
           updated_ms: int) -> Device:
    return {"device_id": device_id, "tenant": tenant, "kind": kind, "site_id": site_id, "enabled": enabled,
            "updated_ms": updated_ms}


class AlertAction(TypedDict):
    action_id: str
    tenant: str
    alert_event_id: str
    action: str  # enum AlertActionKind
    actor: str
    ts_ms: int
    note: str | None


def alert_action(*, action_id: str, tenant: str, alert_event_id: str, action: str, actor: str, ts_ms: int,
                 note: str | None = None) -> AlertAction:
    return {"action_id": action_id, "tenant": tenant, "alert_event_id": alert_event_id, "action": action,
            "actor": actor, "ts_ms": ts_ms, "note": note}


# The status an alert has after each action (every symbol of AlertActionKind).
ACTION_STATUS: Mapping[str, str] = {"ACKNOWLEDGE": "ACKNOWLEDGED", "RESOLVE": "RESOLVED",
                                    "FALSE_ALARM": "FALSE_ALARM"}


class DeviceCommand(TypedDict):
    command_id: str
    tenant: str
    device_id: str
    command: str
    arguments: dict[str, str]
    qos: int
    issued_ms: int
    expires_ms: int | None


def device_command(*, command_id: str, tenant: str, device_id: str, command: str, arguments: dict[str, str],
                   qos: int = 1, issued_ms: int, expires_ms: int | None = None) -> DeviceCommand:
    return {"command_id": command_id, "tenant": tenant, "device_id": device_id, "command": command,
            "arguments": arguments, "qos": qos, "issued_ms": issued_ms, "expires_ms": expires_ms}


class CommandOutcome(TypedDict):
    command_id: str
    tenant: str
    device_id: str
    outcome: str  # enum CommandOutcomeKind
    ts_ms: int
    detail: str | None


def command_outcome(*, command_id: str, tenant: str, device_id: str, outcome: str, ts_ms: int,
                    detail: str | None = None) -> CommandOutcome:
    return {"command_id": command_id, "tenant": tenant, "device_id": device_id, "outcome": outcome,
            "ts_ms": ts_ms, "detail": detail}


# -- what a stage could not process ---------------------------------------------------------

class DeadLetter(TypedDict):
    stage: str
    reason: str
    detail: str
    source_topic: str | None
    source_partition: int | None
    source_offset: int | None
    key: bytes | None
    payload: bytes
    ts_ms: int


def dead_letter(*, stage: str, reason: str, detail: str, source_topic: str | None = None,
                source_partition: int | None = None, source_offset: int | None = None, key: bytes | None = None,
                payload: bytes, ts_ms: int) -> DeadLetter:
    """The bare record; stages build theirs with ``schemas/dead_letters.dead_letter``, which cuts the detail."""
    return {"stage": stage, "reason": reason, "detail": detail, "source_topic": source_topic,
            "source_partition": source_partition, "source_offset": source_offset, "key": key, "payload": payload,
            "ts_ms": ts_ms}
