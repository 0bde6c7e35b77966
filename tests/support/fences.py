"""GeoJSON files of fences for the tests: one square site (or restricted zone) per id, written with ``fences import``."""

import json
import time

from confluent_kafka import Producer

from guardstream.catalog import TOPICS
from guardstream.schemas.codec import Codec
from guardstream.schemas.registry import FileRegistry
from guardstream.streams import fence_admin

CODEC = Codec(FileRegistry.load())
SQUARE = [[13.400, 52.519], [13.410, 52.519], [13.410, 52.523], [13.400, 52.523], [13.400, 52.519]]
INSIDE, FAR_OUT = (52.521, 13.405), (52.530, 13.430)  # (lat, lon) inside SQUARE, and far out of it


def import_fences(settings, folder, tenant, ids, kind="site"):
    """Write a fence of ``kind`` for each id to the geofences topic; returns the ids written."""
    path = folder / f"{tenant}-{kind}.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"id": fence_id, "name": fence_id, "kind": kind},
         "geometry": {"type": "Polygon", "coordinates": [SQUARE]}} for fence_id in ids]}))
    return [record["fence_id"] for record in fence_admin.import_file(settings, CODEC, path, tenant)]


def publish_patrols(settings, devices, fixes, tenant, base_s, per_second, done):
    """Each device: five fixes INSIDE, five FAR_OUT, over and over, at ``per_second`` in all;
    sets ``done`` once every fix is acknowledged."""
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers, "linger.ms": 5})
    started = time.monotonic()
    for seq in range(fixes):
        at = INSIDE if seq % 10 < 5 else FAR_OUT
        for device in devices:
            producer.produce(TOPICS.raw_guard.name, json.dumps(
                {"ts": base_s + seq, "lat": at[0], "lon": at[1], "accuracy_m": 4, "tenant": tenant}).encode(),
                device.encode(), headers=[("msg.id", f"{device}-{seq}".encode()),
                                          ("received_ms", str(time.time_ns() // 1_000_000).encode())])
        producer.poll(0)
        lag = (seq + 1) * len(devices) / per_second - (time.monotonic() - started)
        if lag > 0:
            done.wait(lag)  # pacing the load, not synchronising
    producer.flush(30)
    done.set()
