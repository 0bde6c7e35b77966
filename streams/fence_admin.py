"""``guardstream fences import | list | delete``: the geofences topic, by hand.

The compacted ``geofences`` topic is the source of truth every worker loads;
these commands write to it and read it back. Importing checks every feature
first and writes nothing if one is bad.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

from guardstream.catalog import TOPICS
from guardstream.errors import InputError, UnavailableError
from guardstream.kafka import producer_config
from guardstream.records import GEOFENCE
from guardstream.schemas.codec import Codec
from guardstream.settings import Settings
from guardstream.streams.geofence import fences_from_geojson
from guardstream.topic_end import latest_values


def import_file(settings: Settings, codec: Codec, path: Path, tenant: str | None) -> list[dict[str, Any]]:
    """Every fence of the GeoJSON file, or none; ``tenant``: of the features that name none."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable GeoJSON file: {exc}", reason="bad_geojson") from exc
    records = fences_from_geojson(doc, tenant, time.time_ns() // 1_000_000)
    producer = Producer(producer_config(settings, "guardstream-fences-admin"))
    for record in records:
        producer.produce(TOPICS.geofences.name, codec.encode(GEOFENCE, record), record["fence_id"].encode())
    _flush(producer)
    return records


def delete(settings: Settings, fence_id: str) -> None:
    """A tombstone: workers drop the fence and send an exit for every guard inside it."""
    producer = Producer(producer_config(settings, "guardstream-fences-admin"))
    producer.produce(TOPICS.geofences.name, None, fence_id.encode())
    _flush(producer)


def _flush(producer: Producer) -> None:
    if producer.flush(30) > 0:
        raise UnavailableError("Kafka did not acknowledge the geofence records within 30 s")


def current(settings: Settings, codec: Codec, timeout_s: float = 30.0) -> dict[str, dict[str, Any]]:
    """Every live fence (the latest record per id, tombstones applied); :class:`UnavailableError`
    when the topic is missing or not read to its end within ``timeout_s``."""
    values = latest_values(settings, TOPICS.geofences.name, timeout_s, "guardstream-fences-admin")
    return {key.decode(): codec.decode(value)[1] for key, value in values.items()}
