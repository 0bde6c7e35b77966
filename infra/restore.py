"""What the local stack brings back from PostgreSQL into an empty embedded Kafka.

The embedded broker keeps its topics in memory, so every ``guardstream up`` starts
with empty topics while PostgreSQL still holds what the sink wrote. Of that, the
``geofences`` table is the one the pipeline cannot do without: it materialises the
compacted topic of the same name, one row per fence, and without the topic the
workers know no fence and silently stop raising violations. So, when that topic is
empty and the table lists live fences, ``up`` writes them back before any component
starts. The sink reads them again and upserts the same rows (same ``updated_ms``).
The device registry comes back the same way, from the ``devices`` table into the
compacted ``devices`` topic.

The workers' geofence state (who is inside which fence, whether a violation is open,
the last fix applied) comes back into the state changelog from what the sink wrote of
it: the newest ``geofence_events`` row of each device and fence (an ENTER not followed
by an EXIT means inside) and each device's row of ``guard_last_positions``. So a guard
inside a site when the stack stopped still raises its EXIT, and an open violation is
not raised twice. What has no table stays lost: the rule engine's state (silent-device
timers, alert debouncing), the recent message ids of the duplicate filter, the dead
letters' topics and the event topics (the README says so). A fence LEAVING (outside,
not yet confirmed out) comes back INSIDE: its exit is then counted from the next fix.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from guardstream.errors import UnavailableError
from guardstream.settings import Settings

# The columns of the geofences table that make a Geofence record, in the record's field order.
FENCE_COLUMNS = ("fence_id", "tenant", "name", "kind", "geometry", "radius_m", "updated_ms")
# The columns of the devices table that make a Device record, in the record's field order.
DEVICE_COLUMNS = ("device_id", "tenant", "kind", "site_id", "enabled", "updated_ms")

# Each device's newest event per fence, with the fence's version (0 when the fence is gone).
LAST_FENCE_EVENTS = """
SELECT DISTINCT ON (e.device_id, e.fence_id)
       e.device_id, e.tenant, e.fence_id, e.fence_kind, e.transition,
       (extract(epoch FROM e.ts) * 1000)::bigint, coalesce(g.updated_ms, 0)
  FROM geofence_events e LEFT JOIN geofences g ON g.fence_id = e.fence_id AND NOT g.deleted
 ORDER BY e.device_id, e.fence_id, e.ts DESC, e.transition DESC"""
# Each guard's newest fix (over its tenants), as the worker enriched it.
LAST_FIXES = """
SELECT DISTINCT ON (device_id) device_id, tenant, (extract(epoch FROM ts) * 1000)::bigint, lat, lon, violation
  FROM guard_last_positions ORDER BY device_id, ts DESC"""


def fence_records(rows: Iterable[Sequence[Any]]) -> list[dict[str, Any]]:
    """Geofence records of ``geofences`` rows (``FENCE_COLUMNS`` then ``deleted``); deleted rows give none.

    The table holds the geometry as jsonb (a dict once read); the record as GeoJSON text.
    """
    records = []
    for row in rows:
        *values, deleted = row
        if deleted:
            continue
        record = dict(zip(FENCE_COLUMNS, values, strict=True))
        if not isinstance(record["geometry"], str):
            record["geometry"] = json.dumps(record["geometry"], separators=(",", ":"))
        records.append(record)
    return records


def device_records(rows: Iterable[Sequence[Any]]) -> list[dict[str, Any]]:
    """Device records of ``devices`` rows (``DEVICE_COLUMNS``): the sink deletes a row on a tombstone,
    so every row is a registered device."""
    return [dict(zip(DEVICE_COLUMNS, row, strict=True)) for row in rows]


def geofence_states(last_events: Iterable[Sequence[Any]], last_fixes: Iterable[Sequence[Any]]) -> list[dict[str, Any]]:
    """The worker's geofence state of each device (``DeviceState.to_dict`` form) from the rows of
    ``LAST_FENCE_EVENTS`` and ``LAST_FIXES``: inside every fence whose newest event is an ENTER."""
    from guardstream.streams.geofence_state import Action, DeviceState, FenceMembership, Membership
    fences: dict[str, dict[str, FenceMembership]] = {}
    tenants: dict[str, str] = {}
    for device, tenant, fence_id, kind, transition, ts_ms, version_ms in last_events:
        tenants.setdefault(device, tenant)
        if transition == Action.ENTER:
            fences.setdefault(device, {})[fence_id] = FenceMembership(Membership.INSIDE, kind, ts_ms,
                                                                      version_ms=version_ms)
    fixes = {row[0]: row for row in last_fixes}
    states = []
    for device in sorted(set(fences) | set(fixes)):
        _, tenant, ts_ms, lat, lon, violation = fixes.get(device, (device, tenants.get(device), None, None,
                                                                   None, False))
        states.append(DeviceState(device, tenant or tenants[device], fences.get(device, {}), ts_ms, lat, lon,
                                  bool(violation)).to_dict())
    return states


def _rows(database_url: str, query: str) -> list[tuple[Any, ...]]:
    import psycopg
    try:
        with psycopg.connect(database_url) as conn:
            return conn.execute(query).fetchall()
    except psycopg.Error as exc:
        raise UnavailableError(f"restoring from PostgreSQL ({query}): {exc}") from exc


def restore_fences(settings: Settings, timeout_s: float = 15.0) -> int:
    """Write the live fences of the geofences table to the geofences topic when that topic is empty;
    how many were written (0 when the topic had records or the table none)."""
    from guardstream.catalog import TOPICS
    from guardstream.records import GEOFENCE
    query = f"SELECT {', '.join(FENCE_COLUMNS)}, deleted FROM geofences WHERE NOT deleted ORDER BY fence_id"
    return _write_if_empty(settings, TOPICS.geofences, GEOFENCE, "fence_id",
                           lambda: fence_records(_rows(settings.database_url, query)), timeout_s)


def restore_devices(settings: Settings, timeout_s: float = 15.0) -> int:
    """The device registry from the devices table into the devices topic when that topic is empty:
    without it every device would be unknown after a restart (dead-lettered, or given the default
    tenant) until the fleet is imported again."""
    from guardstream.catalog import TOPICS
    from guardstream.records import DEVICE
    query = f"SELECT {', '.join(DEVICE_COLUMNS)} FROM devices ORDER BY device_id"
    return _write_if_empty(settings, TOPICS.devices, DEVICE, "device_id",
                           lambda: device_records(_rows(settings.database_url, query)), timeout_s)


def restore_geofence_state(settings: Settings, timeout_s: float = 15.0) -> int:
    """The workers' geofence state from PostgreSQL into the state changelog when that topic is
    empty; how many devices were written. Only for a raw guard topic of one partition (the
    embedded stack's): a changelog entry must sit on the partition of its device's raw records."""
    from guardstream.catalog import TOPICS
    from guardstream.streams.geofence_state import DeviceState
    from guardstream.streams.state_store import changelog_key, state_value
    from guardstream.topic_end import probe_end_offsets

    changelog = TOPICS.worker_state
    ends = probe_end_offsets(settings, [(changelog.name, p) for p in range(_partitions(settings, changelog.name))],
                             timeout_s)
    if any(end > 0 for _, end in ends.values()) or _partitions(settings, TOPICS.raw_guard.name) != 1:
        return 0
    states = geofence_states(_rows(settings.database_url, LAST_FENCE_EVENTS),
                             _rows(settings.database_url, LAST_FIXES))
    if not states:
        return 0
    # through the worker's own state type and encoder: the changelog's format has one definition
    return _produce_all(settings, changelog.name, [
        (changelog_key("geofence", TOPICS.raw_guard.name, state["device_id"]),
         state_value(DeviceState.from_dict(state)), 0) for state in states], timeout_s)


def _partitions(settings: Settings, topic: str) -> int:
    from confluent_kafka.admin import AdminClient

    from guardstream.kafka import admin_config
    metadata = AdminClient(admin_config(settings)).list_topics(topic, timeout=10)
    return len(metadata.topics[topic].partitions) if topic in metadata.topics else 0


def _write_if_empty(settings: Settings, topic: Any, record_name: str, key_field: str,
                    records: Callable[[], list[dict[str, Any]]], timeout_s: float) -> int:
    from guardstream.schemas.codec import Codec
    from guardstream.schemas.registry import registry_from_settings
    from guardstream.topic_end import probe_end_offsets

    ends = probe_end_offsets(settings, [(topic.name, p) for p in range(topic.partitions)], timeout_s)
    if any(end > 0 for _, end in ends.values()):
        return 0
    found = records()
    if not found:
        return 0
    codec = Codec(registry_from_settings(settings))
    return _produce_all(settings, topic.name, [(record[key_field].encode(), codec.encode(record_name, record), -1)
                                               for record in found], timeout_s)


def _produce_all(settings: Settings, topic: str, records: list[tuple[bytes, bytes, int]], timeout_s: float) -> int:
    """Write (key, value, partition) records (partition -1: the partitioner's choice) and wait until
    Kafka acknowledged every one; how many. :class:`UnavailableError` when it does not in time."""
    from confluent_kafka import KafkaException, Producer

    from guardstream.kafka import produce, producer_config
    producer = Producer(producer_config(settings, "guardstream-restore"))
    try:
        for key, value, partition in records:
            produce(producer, topic, value, key, partition=partition)
        left = producer.flush(timeout_s)
    except KafkaException as exc:
        raise UnavailableError(f"restoring {topic}: {exc}") from exc
    if left:
        raise UnavailableError(f"{left} restored record(s) of {topic} not acknowledged within {timeout_s:.0f}s")
    return len(records)
