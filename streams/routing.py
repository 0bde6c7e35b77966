"""Routing: which priority topic a validated record goes to, and the write that puts it there; pure.

    record                        priority topic
    guardstream.DeviceAlert       the one its ``severity`` names (CRITICAL -> events.critical ...)
    guardstream.GeofenceEvent     CRITICAL
    guardstream.GuardPosition     HIGH
    guardstream.SensorReading     NORMAL
    guardstream.Telemetry         LOW
    guardstream.SystemHealth      LOW

Topic names come from the catalog. The worker turns each ``Emit`` returned
here into a produce to its ``topic``.
"""

from __future__ import annotations

from typing import Any

import msgspec

from guardstream.catalog import Priority, topic_for_priority
from guardstream.records import (DEVICE_ALERT, GEOFENCE_EVENT, GUARD_POSITION, SENSOR_READING,
                                         SYSTEM_HEALTH, TELEMETRY)

PRIORITY_OF_SCHEMA: dict[str, Priority] = {
    GEOFENCE_EVENT: Priority.CRITICAL,
    GUARD_POSITION: Priority.HIGH,
    SENSOR_READING: Priority.NORMAL,
    TELEMETRY: Priority.LOW,
    SYSTEM_HEALTH: Priority.LOW,
}


class Emit(msgspec.Struct, frozen=True):
    """Write ``value`` (a record of the Avro ``schema``) to ``topic`` under ``key``."""

    topic: str
    key: str
    schema: str
    value: dict[str, Any]


def route(schema: str, record: dict[str, Any]) -> Priority:
    """The priority of a validated record; ``ValueError`` for a record type nobody routes (our bug)."""
    if schema == DEVICE_ALERT:
        # Severity symbols are the Priority names: the DeviceAlert schema says so.
        return Priority[record["severity"]]
    try:
        return PRIORITY_OF_SCHEMA[schema]
    except KeyError as exc:
        raise ValueError(f"no priority topic carries {schema}") from exc


def emit_for(schema: str, record: dict[str, Any]) -> Emit:
    """The write of a validated record to its priority topic, keyed by its device id."""
    return Emit(topic_for_priority(route(schema, record)).name, record["device_id"], schema, record)
