"""The topic catalog: the one place that declares every Kafka topic.

Code never spells a topic name; it asks the catalog (``TOPICS.raw_guard.name``,
``topic_for_priority(Priority.CRITICAL)``). ``guardstream topics apply`` creates
what is declared here, ``topics list`` shows it, and the documentation table in
the README is printed from it (``guardstream topics list --catalog``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from guardstream.records import (ALERT_ACTION, COMMAND_OUTCOME, DEAD_LETTER, DEVICE, DEVICE_ALERT, DEVICE_COMMAND,
                                  GEOFENCE, GEOFENCE_EVENT, GUARD_POSITION, SENSOR_READING, SYSTEM_HEALTH,
                                  TELEMETRY)

DAY_MS = 24 * 3600 * 1000


class Priority(enum.Enum):
    CRITICAL = "critical"
    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"


RAW_BYTES = "raw bytes (payload exactly as received over MQTT; see schemas/HEADERS.md)"
INTERNAL_JSON = "JSON (internal state of the stream worker; not a contract)"


@dataclass(frozen=True)
class Topic:
    name: str
    partitions: int
    retention_ms: int  # -1: keep forever
    cleanup_policy: str  # "delete" or "compact"
    key: str
    value_schemas: tuple[str, ...]  # Avro full names, or (RAW_BYTES,)
    description: str
    priority: Priority | None = None
    replication_factor: int = 3

    @property
    def configs(self) -> dict[str, str]:
        """Topic-level configs that ``topics apply`` keeps in line."""
        return {"cleanup.policy": self.cleanup_policy, "retention.ms": str(self.retention_ms)}

    @property
    def is_raw(self) -> bool:
        return self.value_schemas == (RAW_BYTES,)


def _raw(name: str, key: str, what: str) -> Topic:
    return Topic(name, 6, 7 * DAY_MS, "delete", key, (RAW_BYTES,), f"{what}, as received by the bridge")


def _events(priority: Priority, schemas: tuple[str, ...], what: str, retention_days: int) -> Topic:
    return Topic(f"events.{priority.value}", 6, retention_days * DAY_MS, "delete", "device id (UTF-8)",
                 schemas, what, priority=priority)


def _dlq(stage: str, what: str) -> Topic:
    return Topic(f"dlq.{stage}", 1, 30 * DAY_MS, "delete", "source record key, unchanged",
                 (DEAD_LETTER,), f"dead letters of the {what}; headers follow Kafka Connect's"
                 " __connect.errors.* convention")


@dataclass(frozen=True)
class Catalog:
    raw_device: Topic = _raw("raw.device", "device id (UTF-8)", "device telemetry")
    raw_guard: Topic = _raw("raw.guard", "guard id (UTF-8)", "guard GPS fixes")
    raw_sensor: Topic = _raw("raw.sensor", "sensor id (UTF-8)", "site sensor readings")
    raw_alert: Topic = _raw("raw.alert", "device id (UTF-8)", "panic / SOS and other device alerts")
    raw_system: Topic = _raw("raw.system", "component name (UTF-8)", "system health reports")
    events_critical: Topic = _events(Priority.CRITICAL, (DEVICE_ALERT, GEOFENCE_EVENT),
                                     "alerts and geofence violations; consumed first, in small batches", 30)
    # A DeviceAlert goes to the topic of its severity, so every priority topic may carry one.
    events_high: Topic = _events(Priority.HIGH, (GUARD_POSITION, DEVICE_ALERT),
                                 "enriched guard positions; high-severity alerts (low battery, heat)", 14)
    events_normal: Topic = _events(Priority.NORMAL, (SENSOR_READING, DEVICE_ALERT),
                                   "validated sensor readings; normal-severity alerts", 14)
    events_low: Topic = _events(Priority.LOW, (TELEMETRY, SYSTEM_HEALTH, DEVICE_ALERT),
                                "device telemetry and system health; low-severity alerts", 7)
    geofences: Topic = Topic("geofences", 1, -1, "compact", "fence id (UTF-8); tombstone deletes",
                             (GEOFENCE,), "every tenant's geofences; loaded by every worker")
    devices: Topic = Topic("devices", 1, -1, "compact", "device id (UTF-8); tombstone forgets",
                           (DEVICE,), "the device registry: tenant, kind, site, enabled; loaded by every worker")
    alerts_actions: Topic = Topic("alerts.actions", 3, 90 * DAY_MS, "delete", "alert event id (UTF-8)",
                                  (ALERT_ACTION,), "acknowledge / resolve / false alarm, by whom")
    commands_device: Topic = Topic("commands.device", 3, 1 * DAY_MS, "delete", "device id (UTF-8)",
                                   (DEVICE_COMMAND,), "commands to publish to devices over MQTT")
    commands_outcomes: Topic = Topic("commands.outcomes", 3, 7 * DAY_MS, "delete", "device id (UTF-8)",
                                     (COMMAND_OUTCOME,), "sent / expired / failed, per command")
    dlq_bridge: Topic = _dlq("bridge", "MQTT bridge (oversize, refused topics)")
    dlq_validate: Topic = _dlq("validate", "validation stage (bad payloads)")
    dlq_sink: Topic = _dlq("sink", "PostgreSQL sink (rows the database refused)")
    dlq_notify: Topic = _dlq("notify", "notifier (notifications no provider took after every attempt)")
    # Changelog of the stream worker's per-device state; partition p holds the state of
    # the devices of raw partition p, so it needs as many partitions as the raw topics.
    worker_state: Topic = Topic("guardstream-worker-state-changelog", 6, -1, "compact",
                                "store|raw topic|device id (UTF-8); tombstone forgets",
                                (INTERNAL_JSON,), "per-device geofence and rule state of the stream worker")

    def all(self) -> tuple[Topic, ...]:
        return tuple(getattr(self, name) for name in self.__dataclass_fields__)

    def by_name(self, name: str) -> Topic:
        for topic in self.all():
            if topic.name == name:
                return topic
        raise KeyError(name)

    def raw(self) -> tuple[Topic, ...]:
        return tuple(t for t in self.all() if t.is_raw)

    def events(self) -> tuple[Topic, ...]:
        """The priority topics, most urgent first."""
        return tuple(topic_for_priority(p) for p in Priority)

    def dead_letters(self) -> tuple[Topic, ...]:
        """Every stage's dead-letter topic (each carries guardstream.DeadLetter records)."""
        return (self.dlq_bridge, self.dlq_validate, self.dlq_sink, self.dlq_notify)


TOPICS = Catalog()


_BY_PRIORITY = {p: getattr(TOPICS, f"events_{p.value}") for p in Priority}


def topic_for_priority(priority: Priority) -> Topic:
    return _BY_PRIORITY[priority]  # once per event on the worker's path: looked up, not built
