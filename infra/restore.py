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

Nothing else has a table to come back from: the workers' state changelog (who is
inside which fence, recent message ids), the dead letters' topics and the event
topics start empty (the README says so).
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


def _write_if_empty(settings: Settings, topic: Any, record_name: str, key_field: str,
                    records: Callable[[], list[dict[str, Any]]], timeout_s: float) -> int:
    from confluent_kafka import KafkaException, Producer

    from guardstream.kafka import produce, producer_config
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
    producer = Producer(producer_config(settings, "guardstream-restore"))
    try:
        for record in found:
            produce(producer, topic.name, codec.encode(record_name, record), record[key_field].encode())
        left = producer.flush(timeout_s)
    except KafkaException as exc:
        raise UnavailableError(f"restoring {topic.name}: {exc}") from exc
    if left:
        raise UnavailableError(f"{left} restored record(s) of {topic.name} not acknowledged within {timeout_s:.0f}s")
    return len(found)
