"""What the local stack brings back from PostgreSQL into an empty embedded Kafka.

The embedded broker keeps its topics in memory, so every ``guardstream up`` starts
with empty topics while PostgreSQL still holds what the sink wrote. Of that, the
``geofences`` table is the one the pipeline cannot do without: it materialises the
compacted topic of the same name, one row per fence, and without the topic the
workers know no fence and silently stop raising violations. So, when that topic is
empty and the table lists live fences, ``up`` writes them back before any component
starts. The sink reads them again and upserts the same rows (same ``updated_ms``).

Nothing else has a table to come back from: the workers' state changelog (who is
inside which fence, recent message ids), the dead letters' topics and the event
topics start empty (the README says so).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from guardstream.errors import UnavailableError
from guardstream.settings import Settings

# The columns of the geofences table that make a Geofence record, in the record's field order.
FENCE_COLUMNS = ("fence_id", "tenant", "name", "kind", "geometry", "radius_m", "updated_ms")


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


def live_fence_rows(database_url: str) -> list[tuple[Any, ...]]:
    import psycopg
    query = f"SELECT {', '.join(FENCE_COLUMNS)}, deleted FROM geofences WHERE NOT deleted ORDER BY fence_id"
    try:
        with psycopg.connect(database_url) as conn:
            return conn.execute(query).fetchall()
    except psycopg.Error as exc:
        raise UnavailableError(f"reading the geofences table: {exc}") from exc


def restore_fences(settings: Settings, timeout_s: float = 15.0) -> int:
    """Write the live fences of the geofences table to the geofences topic when that topic is empty;
    how many were written (0 when the topic had records or the table none)."""
    from confluent_kafka import KafkaException, Producer

    from guardstream.catalog import TOPICS
    from guardstream.kafka import produce, producer_config
    from guardstream.records import GEOFENCE
    from guardstream.schemas.codec import Codec
    from guardstream.schemas.registry import registry_from_settings
    from guardstream.topic_end import probe_end_offsets

    topic = TOPICS.geofences.name
    ends = probe_end_offsets(settings, [(topic, p) for p in range(TOPICS.geofences.partitions)], timeout_s)
    if any(end > 0 for _, end in ends.values()):
        return 0
    records = fence_records(live_fence_rows(settings.database_url))
    if not records:
        return 0
    codec = Codec(registry_from_settings(settings))
    producer = Producer(producer_config(settings, "guardstream-fence-restore"))
    try:
        for record in records:
            produce(producer, topic, codec.encode(GEOFENCE, record), record["fence_id"].encode())
        left = producer.flush(timeout_s)
    except KafkaException as exc:
        raise UnavailableError(f"restoring fences to {topic}: {exc}") from exc
    if left:
        raise UnavailableError(f"{left} restored fence(s) not acknowledged by Kafka within {timeout_s:.0f}s")
    return len(records)
