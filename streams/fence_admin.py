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

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from guardstream.catalog import TOPICS
from guardstream.errors import InputError, UnavailableError
from guardstream.kafka import common_config, producer_config
from guardstream.schemas.codec import Codec
from guardstream.schemas.records import GEOFENCE
from guardstream.settings import Settings
from guardstream.streams.geofence import fences_from_geojson


def import_file(settings: Settings, codec: Codec, path: Path, tenant: str) -> list[dict[str, Any]]:
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
    """Every live fence (the latest record per id, tombstones applied)."""
    consumer = Consumer(common_config(settings, "guardstream-fences-admin") | {
        "group.id": "guardstream-fences-admin", "enable.auto.commit": False, "enable.partition.eof": True})
    topic = TOPICS.geofences.name
    try:
        metadata = consumer.list_topics(topic, timeout=10)
        if topic not in metadata.topics or metadata.topics[topic].error is not None:
            raise UnavailableError(f"topic {topic} is missing: run `guardstream topics apply`")
        partitions = set(metadata.topics[topic].partitions)
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        fences: dict[str, dict[str, Any]] = {}
        deadline = time.monotonic() + timeout_s
        while partitions and time.monotonic() < deadline:
            for message in consumer.consume(1000, 0.5):
                if message.error() is not None:
                    if message.error().code() == KafkaError._PARTITION_EOF:
                        partitions.discard(message.partition())
                    continue
                key = (message.key() or b"").decode()
                if message.value() is None:
                    fences.pop(key, None)
                else:
                    fences[key] = codec.decode(message.value())[1]
        return fences
    finally:
        consumer.close()
