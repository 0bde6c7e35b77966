"""Fences back from the geofences table: the rows the sink wrote become the records it read."""

import json

from guardstream.infra.restore import fence_records
from guardstream.records import GEOFENCE
from guardstream.schemas.codec import Codec
from guardstream.schemas.registry import FileRegistry
from guardstream.sinks.rows import geofence_row

SQUARE = {"type": "Polygon", "coordinates": [[[13.4, 52.5], [13.5, 52.5], [13.5, 52.6], [13.4, 52.5]]]}
CIRCLE = {"type": "Point", "coordinates": [13.4, 52.5]}


def test_a_restored_record_is_the_record_the_row_was_written_from():
    written = [{"fence_id": "hq", "tenant": "acme", "name": "HQ", "kind": "SITE",
                "geometry": json.dumps(SQUARE), "radius_m": None, "updated_ms": 1_795_000_000_000},
               {"fence_id": "pit", "tenant": "globex", "name": "Pit", "kind": "RESTRICTED",
                "geometry": json.dumps(CIRCLE), "radius_m": 25.0, "updated_ms": 1_795_000_000_001}]
    rows = [geofence_row(record) for record in written]  # geometry as jsonb gives it back: a dict
    restored = fence_records(rows)
    assert [{**r, "geometry": json.loads(r["geometry"])} for r in restored] == \
        [{**w, "geometry": json.loads(w["geometry"])} for w in written]
    codec = Codec(FileRegistry.load())
    assert [codec.decode(codec.encode(GEOFENCE, r))[1] for r in restored] == restored


def test_deleted_fences_do_not_come_back():
    rows = [("gone", "acme", "Gone", "SITE", SQUARE, None, 1, True),
            ("kept", "acme", "Kept", "SITE", SQUARE, None, 2, False)]
    assert [r["fence_id"] for r in fence_records(rows)] == ["kept"]


def test_no_rows_no_records():
    assert fence_records([]) == []


def test_a_restored_device_is_the_record_the_row_was_written_from():
    from guardstream.infra.restore import DEVICE_COLUMNS, device_records
    from guardstream.records import DEVICE, device
    written = [device(device_id="guard-07", tenant="acme", kind="GUARD", site_id="hq", updated_ms=5),
               device(device_id="door-3", tenant="globex", kind="SENSOR", enabled=False, updated_ms=6)]
    rows = [tuple(record[c] for c in DEVICE_COLUMNS) for record in written]
    restored = device_records(rows)
    assert restored == written
    codec = Codec(FileRegistry.load())
    assert [codec.decode(codec.encode(DEVICE, r))[1] for r in restored] == restored
