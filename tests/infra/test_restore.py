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


def test_the_geofence_state_is_inside_every_fence_whose_newest_event_is_an_enter():
    from guardstream.infra.restore import geofence_states
    from guardstream.streams.geofence_state import DeviceState, Membership
    # LAST_FENCE_EVENTS rows: device, tenant, fence, kind, transition, ts_ms, fence version (0: fence gone)
    events = [("g1", "acme", "hq", "SITE", "ENTER", 1_000, 7),
              ("g1", "acme", "pit", "RESTRICTED", "EXIT", 2_000, 8),  # left: not inside
              ("g2", "acme", "hq", "SITE", "ENTER", 3_000, 0)]
    # LAST_FIXES rows: device, tenant, ts_ms, lat, lon, violation
    fixes = [("g1", "acme", 5_000, 52.5, 13.4, False), ("g3", "globex", 6_000, 1.0, 2.0, True)]
    states = {s["device_id"]: DeviceState.from_dict(s) for s in geofence_states(events, fixes)}
    assert sorted(states) == ["g1", "g2", "g3"]
    g1, g2, g3 = states["g1"], states["g2"], states["g3"]
    assert list(g1.fences) == ["hq"] and g1.fences["hq"].state is Membership.INSIDE
    assert (g1.fences["hq"].entered_ms, g1.fences["hq"].version_ms, g1.fences["hq"].kind) == (1_000, 7, "SITE")
    assert (g1.last_applied_ts_ms, g1.last_lat, g1.last_lon, g1.violation_open) == (5_000, 52.5, 13.4, False)
    # inside with no fix on record: no last fix, so the next fix is applied whatever its time
    assert list(g2.fences) == ["hq"] and g2.last_applied_ts_ms is None and g2.tenant == "acme"
    # a violation open at the last fix stays open: it is not raised a second time
    assert g3.fences == {} and g3.violation_open and g3.tenant == "globex"
