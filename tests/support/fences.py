"""GeoJSON files of fences for the tests: one square site (or restricted zone) per id, written with ``fences import``."""

import json

from guardstream.schemas.codec import Codec
from guardstream.schemas.registry import FileRegistry
from guardstream.streams import fence_admin

CODEC = Codec(FileRegistry.load())
SQUARE = [[13.400, 52.519], [13.410, 52.519], [13.410, 52.523], [13.400, 52.523], [13.400, 52.519]]


def import_fences(settings, folder, tenant, ids, kind="site"):
    """Write a fence of ``kind`` for each id to the geofences topic; returns the ids written."""
    path = folder / f"{tenant}-{kind}.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"id": fence_id, "name": fence_id, "kind": kind},
         "geometry": {"type": "Polygon", "coordinates": [SQUARE]}} for fence_id in ids]}))
    return [record["fence_id"] for record in fence_admin.import_file(settings, CODEC, path, tenant)]
