"""routing: which priority topic each validated record goes to, checked against the catalog."""

from __future__ import annotations

from typing import Any

import pytest

from guardstream.catalog import TOPICS, Priority, topic_for_priority
from guardstream.records import DEVICE_ALERT
from guardstream.schemas.contracts import current_contracts
from guardstream.streams.routing import PRIORITY_OF_SCHEMA, Emit, emit_for, route
from guardstream.streams.validation import SCHEMA_FOR_KIND, SEVERITIES


def record(schema: str, **fields: Any) -> dict[str, Any]:
    return {"event_id": "e1", "tenant": "acme", "device_id": "dev-1", "ts_ms": 1, "received_ms": 2, **fields}


@pytest.mark.parametrize(("schema", "priority"), [
    ("guardstream.GeofenceEvent", Priority.CRITICAL),
    ("guardstream.GuardPosition", Priority.HIGH),
    ("guardstream.SensorReading", Priority.NORMAL),
    ("guardstream.Telemetry", Priority.LOW),
    ("guardstream.SystemHealth", Priority.LOW),
])
def test_each_record_type_has_its_priority(schema: str, priority: Priority) -> None:
    assert route(schema, record(schema)) is priority


@pytest.mark.parametrize("severity", SEVERITIES)
def test_a_device_alert_goes_where_its_severity_says(severity: str) -> None:
    assert route(DEVICE_ALERT, record(DEVICE_ALERT, severity=severity)) is Priority[severity]


def test_every_severity_names_a_priority() -> None:
    assert list(SEVERITIES) == [p.name for p in Priority]


def test_every_validated_record_type_is_routed() -> None:
    routed = set(PRIORITY_OF_SCHEMA) | {DEVICE_ALERT}
    assert set(SCHEMA_FOR_KIND.values()) <= routed
    assert routed <= set(current_contracts())


def test_an_unknown_record_type_is_our_bug() -> None:
    with pytest.raises(ValueError):
        route("guardstream.Geofence", record("guardstream.Geofence"))


def test_emit_for_names_the_catalog_topic_and_keys_by_device() -> None:
    alert = record(DEVICE_ALERT, severity="CRITICAL")
    assert emit_for(DEVICE_ALERT, alert) == Emit(TOPICS.events_critical.name, "dev-1", DEVICE_ALERT, alert)
    position = record("guardstream.GuardPosition")
    assert emit_for("guardstream.GuardPosition", position).topic == TOPICS.events_high.name


ROUTES = [pytest.param(schema, record(schema), id=schema) for schema in PRIORITY_OF_SCHEMA] + [
    pytest.param(DEVICE_ALERT, record(DEVICE_ALERT, severity=severity), id=f"DeviceAlert-{severity}")
    for severity in SEVERITIES
]


@pytest.mark.parametrize(("schema", "value"), ROUTES)
def test_every_route_ends_on_a_topic_that_declares_the_record(schema: str, value: dict) -> None:
    topic = TOPICS.by_name(emit_for(schema, value).topic)
    assert topic in TOPICS.events()
    assert schema in topic.value_schemas
    assert topic is topic_for_priority(route(schema, value))
