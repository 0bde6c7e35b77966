"""Fence parsing and the spatial index, tested with real Berlin coordinates."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import shapely

from guardstream.errors import InputError
from guardstream.streams.geofence import (
    EARTH_RADIUS_M,
    Fence,
    FenceIndex,
    fence_from_record,
    fences_from_geojson,
    haversine_m,
    stable_fence_id,
)

# A city block by Alexanderplatz, about 135 m (east-west) by 111 m; GeoJSON [lon, lat].
BLOCK = [[13.400, 52.520], [13.402, 52.520], [13.402, 52.521], [13.400, 52.521], [13.400, 52.520]]
# The block one street further east, for a MultiPolygon.
EAST_BLOCK = [[13.404, 52.520], [13.406, 52.520], [13.406, 52.521], [13.404, 52.521], [13.404, 52.520]]
GATE = (52.5163, 13.3777)  # Brandenburg Gate (lat, lon)
M_PER_DEG_LON = math.pi / 180 * EARTH_RADIUS_M * math.cos(math.radians(52.5205))


def polygon(*rings: list[list[float]]) -> str:
    return json.dumps({"type": "Polygon", "coordinates": list(rings)})


def point(lat: float, lon: float) -> str:
    return json.dumps({"type": "Point", "coordinates": [lon, lat]})


def record(fence_id: str, geometry: str, *, kind: str = "SITE", tenant: str = "acme",
           radius_m: float | None = None) -> dict:
    return {"fence_id": fence_id, "tenant": tenant, "name": fence_id.title(), "kind": kind,
            "geometry": geometry, "radius_m": radius_m, "updated_ms": 1_700_000_000_000}


def destination(lat: float, lon: float, bearing_deg: float, distance_m: float) -> tuple[float, float]:
    """The point at a great-circle distance and bearing (spherical direct problem)."""
    phi, lam, theta = math.radians(lat), math.radians(lon), math.radians(bearing_deg)
    delta = distance_m / EARTH_RADIUS_M
    phi2 = math.asin(math.sin(phi) * math.cos(delta) + math.cos(phi) * math.sin(delta) * math.cos(theta))
    lam2 = lam + math.atan2(math.sin(theta) * math.sin(delta) * math.cos(phi),
                            math.cos(delta) - math.sin(phi) * math.sin(phi2))
    return math.degrees(phi2), math.degrees(lam2)


def contains(fence_record: dict, lat: float, lon: float) -> bool:
    index = FenceIndex.build([fence_from_record(fence_record)])
    [hits] = index.containing([fence_record["tenant"]], [lat], [lon])
    return fence_record["fence_id"] in hits


@pytest.mark.parametrize(("lat", "lon", "expected"), [
    (52.5205, 13.4010, True),  # centre of the block
    (52.52001, 13.40001, True),  # just inside the south-west corner
    (52.5205, 13.4020, True),  # exactly on the east edge: borders count as inside
    (52.5205, 13.4021, False),  # about 7 m east of the block
    (52.5212, 13.4010, False),  # about 22 m north
    (GATE[0], GATE[1], False),  # two kilometres away
])
def test_polygon_in_out(lat: float, lon: float, expected: bool) -> None:
    assert contains(record("block", polygon(BLOCK)), lat, lon) is expected


@pytest.mark.parametrize(("lat", "lon", "expected"), [
    (52.5205, 13.4010, True),  # west block
    (52.5205, 13.4050, True),  # east block
    (52.5205, 13.4030, False),  # the street between them
])
def test_multipolygon_in_out(lat: float, lon: float, expected: bool) -> None:
    geometry = json.dumps({"type": "MultiPolygon", "coordinates": [[BLOCK], [EAST_BLOCK]]})
    assert contains(record("two-blocks", geometry), lat, lon) is expected


def test_polygon_hole_is_outside() -> None:
    courtyard = [[13.4005, 52.5203], [13.4015, 52.5203], [13.4015, 52.5207], [13.4005, 52.5207], [13.4005, 52.5203]]
    fence = record("courtyard-block", polygon(BLOCK, courtyard))
    assert not contains(fence, 52.5205, 13.4010)
    assert contains(fence, 52.52015, 13.4010)


@pytest.mark.parametrize("bearing", [0, 45, 90, 135, 180, 270, 333])
@pytest.mark.parametrize(("offset_m", "expected"), [(-0.5, True), (0.5, False), (-99.0, True), (50.0, False)])
def test_circle_is_geodesic_near_its_radius(bearing: float, offset_m: float, expected: bool) -> None:
    radius = 100.0
    lat, lon = destination(*GATE, bearing, radius + offset_m)
    assert contains(record("gate", point(*GATE), radius_m=radius), lat, lon) is expected


def test_tenants_with_overlapping_fences_are_isolated() -> None:
    index = FenceIndex.build([
        fence_from_record(record("acme-block", polygon(BLOCK), tenant="acme")),
        fence_from_record(record("globex-block", polygon(BLOCK), tenant="globex")),
        fence_from_record(record("globex-gate", point(52.5205, 13.401), tenant="globex", radius_m=50)),
    ])
    hits = index.containing(["acme", "globex", "initech"], [52.5205] * 3, [13.401] * 3)
    assert hits == [frozenset({"acme-block"}), frozenset({"globex-block", "globex-gate"}), frozenset()]


BOW_TIE = [[13.400, 52.520], [13.402, 52.521], [13.402, 52.520], [13.400, 52.521], [13.400, 52.520]]


@pytest.mark.parametrize(("changes", "reason"), [
    ({"geometry": "{not json"}, "bad_json"),
    ({"geometry": '"Polygon"'}, "unsupported_geometry"),
    ({"geometry": json.dumps({"type": "LineString", "coordinates": BLOCK})}, "unsupported_geometry"),
    ({"geometry": polygon(BOW_TIE)}, "bad_geometry"),
    ({"geometry": polygon(BLOCK[:3])}, "bad_geometry"),
    ({"geometry": json.dumps({"type": "Polygon", "coordinates": []})}, "bad_geometry"),
    ({"geometry": json.dumps({"type": "Polygon", "coordinates": "x"})}, "bad_geometry"),
    ({"geometry": polygon([[lon, lat + 40] for lon, lat in BLOCK])}, "bad_coordinates"),
    ({"geometry": polygon([[lon + 180, lat] for lon, lat in BLOCK])}, "bad_coordinates"),
    ({"geometry": point(95.0, 13.4), "radius_m": 50.0}, "bad_coordinates"),
    ({"geometry": point(*GATE)}, "bad_radius"),
    ({"geometry": point(*GATE), "radius_m": 0.0}, "bad_radius"),
    ({"geometry": point(*GATE), "radius_m": -10.0}, "bad_radius"),
    ({"geometry": point(*GATE), "radius_m": 5e6}, "bad_radius"),
    ({"radius_m": 30.0}, "bad_radius"),  # a radius on a polygon is a mistake
    ({"kind": "PARKING"}, "bad_kind"),
    ({"fence_id": ""}, "bad_field"),
])
def test_bad_fence_records_raise_input_error_with_reason(changes: dict, reason: str) -> None:
    bad = {**record("block", polygon(BLOCK)), **changes}
    with pytest.raises(InputError) as caught:
        fence_from_record(bad)
    assert caught.value.reason == reason


def test_missing_field_raises_input_error() -> None:
    incomplete = record("block", polygon(BLOCK))
    del incomplete["geometry"]
    with pytest.raises(InputError) as caught:
        fence_from_record(incomplete)
    assert caught.value.reason == "missing_field"


def test_fence_from_record_builds_circle_and_polygon() -> None:
    circle = fence_from_record(record("gate", point(*GATE), radius_m=120))
    block = fence_from_record(record("block", json.dumps({"type": "Polygon", "coordinates": [
        [[lon, lat, 34.0] for lon, lat in BLOCK]]})))
    assert circle.is_circle and circle.radius_m == 120.0 and isinstance(circle.radius_m, float)
    assert (circle.geometry.x, circle.geometry.y) == (GATE[1], GATE[0])
    assert not block.is_circle and block.radius_m is None and not block.geometry.has_z


def feature(geometry: dict, **properties) -> dict:
    return {"type": "Feature", "geometry": geometry, "properties": properties}


def test_fences_from_geojson_makes_valid_records_with_stable_ids() -> None:
    doc = {"type": "FeatureCollection", "features": [
        feature({"type": "Polygon", "coordinates": [BLOCK]}, id="alex-1", name="Alexanderplatz", kind="site"),
        feature({"type": "Point", "coordinates": [GATE[1], GATE[0]]}, name="Gate", kind="Restricted", radius_m=80),
    ]}
    records = fences_from_geojson(doc, "acme", now_ms=42)
    assert [r["fence_id"] for r in records] == ["alex-1", stable_fence_id("acme", "Gate")]
    assert [r["kind"] for r in records] == ["SITE", "RESTRICTED"]
    assert records[1]["radius_m"] == 80.0 and records[0]["radius_m"] is None
    assert all(r["tenant"] == "acme" and r["updated_ms"] == 42 for r in records)
    assert fences_from_geojson(doc, "acme", now_ms=99)[1]["fence_id"] == records[1]["fence_id"]
    assert fences_from_geojson(doc, "globex", now_ms=42)[1]["fence_id"] != records[1]["fence_id"]
    for fence_record in records:
        assert isinstance(fence_record["geometry"], str)
        assert isinstance(fence_from_record(fence_record), Fence)


@pytest.mark.parametrize(("doc", "reason"), [
    ({"type": "Feature"}, "bad_geojson"),
    ({"type": "FeatureCollection", "features": [{"type": "Polygon"}]}, "bad_geojson"),
    ({"type": "FeatureCollection", "features": [
        feature({"type": "Polygon", "coordinates": [BLOCK]}, name="A", kind="office")]}, "bad_kind"),
    ({"type": "FeatureCollection", "features": [
        feature({"type": "Polygon", "coordinates": [BLOCK]}, kind="site")]}, "missing_field"),
    ({"type": "FeatureCollection", "features": [
        feature({"type": "Point", "coordinates": [13.4, 52.52]}, name="A", kind="site")]}, "bad_radius"),
    ({"type": "FeatureCollection", "features": [
        feature({"type": "Point", "coordinates": [13.4, 52.52]}, name="A", kind="site", radius_m="50")]},
     "bad_radius"),
    ({"type": "FeatureCollection", "features": [
        feature({"type": "Polygon", "coordinates": [BOW_TIE]}, name="A", kind="site")]}, "bad_geometry"),
    ({"type": "FeatureCollection", "features": [
        feature({"type": "Polygon", "coordinates": [BLOCK]}, id="x", name="A", kind="site"),
        feature({"type": "Polygon", "coordinates": [EAST_BLOCK]}, id="x", name="B", kind="site")]},
     "duplicate_fence"),
])
def test_fences_from_geojson_rejects_bad_documents(doc: dict, reason: str) -> None:
    with pytest.raises(InputError) as caught:
        fences_from_geojson(doc, "acme", now_ms=1)
    assert caught.value.reason == reason


def test_a_feature_names_its_own_tenant_and_the_given_one_is_for_the_rest() -> None:
    doc = {"type": "FeatureCollection", "features": [
        feature({"type": "Polygon", "coordinates": [BLOCK]}, name="A", kind="site", tenant="globex"),
        feature({"type": "Polygon", "coordinates": [EAST_BLOCK]}, name="B", kind="site")]}
    assert [r["tenant"] for r in fences_from_geojson(doc, "acme", now_ms=1)] == ["globex", "acme"]
    records = fences_from_geojson(doc, "acme", now_ms=1)
    assert records[0]["fence_id"] == stable_fence_id("globex", "A")
    with pytest.raises(InputError, match="feature 1: feature names no tenant") as caught:
        fences_from_geojson(doc, None, now_ms=1)
    assert caught.value.reason == "missing_tenant"
    named = {"type": "FeatureCollection", "features": doc["features"][:1]}
    assert [r["tenant"] for r in fences_from_geojson(named, None, now_ms=1)] == ["globex"]
    blank = {"type": "FeatureCollection", "features": [
        feature({"type": "Polygon", "coordinates": [BLOCK]}, name="A", kind="site", tenant=" ")]}
    with pytest.raises(InputError) as caught:
        fences_from_geojson(blank, "acme", now_ms=1)
    assert caught.value.reason == "bad_tenant"


def test_geojson_error_names_the_feature() -> None:
    doc = {"type": "FeatureCollection", "features": [
        feature({"type": "Polygon", "coordinates": [BLOCK]}, name="ok", kind="site"),
        feature({"type": "Polygon", "coordinates": [BOW_TIE]}, name="bad", kind="site")]}
    with pytest.raises(InputError, match="feature 1"):
        fences_from_geojson(doc, "acme", now_ms=1)


@pytest.mark.parametrize(("lat", "lon", "expected_m"), [
    (52.5205, 13.4010, 0.0),  # inside
    (52.5205, 13.4020, 0.0),  # on the border
    (52.5205, 13.4025, 0.0005 * M_PER_DEG_LON),  # east of the block
    (52.5215, 13.4010, 0.0005 * math.pi / 180 * EARTH_RADIUS_M),  # north of the block
])
def test_distance_outside_polygon(lat: float, lon: float, expected_m: float) -> None:
    index = FenceIndex.build([fence_from_record(record("block", polygon(BLOCK)))])
    assert index.distance_outside_m("block", lat, lon) == pytest.approx(expected_m, rel=1e-3, abs=1e-6)


@pytest.mark.parametrize(("distance_m", "expected_m"), [(0.0, 0.0), (99.0, 0.0), (130.0, 30.0), (1000.0, 900.0)])
def test_distance_outside_circle(distance_m: float, expected_m: float) -> None:
    index = FenceIndex.build([fence_from_record(record("gate", point(*GATE), radius_m=100))])
    lat, lon = destination(*GATE, 60, distance_m)
    assert index.distance_outside_m("gate", lat, lon) == pytest.approx(expected_m, abs=1e-6)


def test_index_lookups() -> None:
    site = fence_from_record(record("block", polygon(BLOCK)))
    vault = fence_from_record(record("vault", point(52.5205, 13.401), kind="RESTRICTED", radius_m=15))
    other = fence_from_record(record("gate", point(*GATE), kind="RESTRICTED", tenant="initech", radius_m=50))
    index = FenceIndex.build([site, vault, other])
    assert len(index) == 3 and "vault" in index and "nope" not in index
    assert index.get("block") is site and index.get("nope") is None
    assert index.fences_of("acme") == (site, vault) and index.fences_of("nobody") == ()
    assert index.has_sites("acme") and not index.has_sites("initech")
    with pytest.raises(KeyError):
        index.distance_outside_m("nope", *GATE)


def test_index_edge_cases() -> None:
    empty = FenceIndex.build([])
    assert len(empty) == 0 and empty.containing(["acme"], [52.52], [13.4]) == [frozenset()]
    index = FenceIndex.build([fence_from_record(record("block", polygon(BLOCK)))])
    assert index.containing([], [], []) == []
    with pytest.raises(ValueError):
        index.containing(["acme", "acme"], [52.52], [13.4])
    with pytest.raises(ValueError):
        FenceIndex.build([index.get("block"), index.get("block")])


def test_circle_near_pole_and_antimeridian() -> None:
    index = FenceIndex.build([
        fence_from_record(record("pole", point(89.9999, 0.0), radius_m=1000)),
        fence_from_record(record("dateline", point(0.0, 179.9999), radius_m=1000)),
    ])
    hits = index.containing(["acme"] * 3, [89.9999, 0.0, 0.0], [180.0, -179.9995, 179.0])
    assert hits == [frozenset({"pole"}), frozenset({"dateline"}), frozenset()]


def naive_containing(fences: list[Fence], tenant: str, lat: float, lon: float) -> frozenset[str]:
    """One fence at a time, the obvious way: the oracle for the vectorised index."""
    hits = set()
    for fence in fences:
        if fence.tenant != tenant:
            continue
        if fence.is_circle:
            inside = haversine_m(fence.geometry.y, fence.geometry.x, lat, lon) <= fence.radius_m
        else:
            inside = fence.geometry.intersects(shapely.Point(lon, lat))
        if inside:
            hits.add(fence.fence_id)
    return frozenset(hits)


def random_fences(rng: np.random.Generator, count: int) -> list[Fence]:
    fences = []
    for i in range(count):
        lat, lon = 52.52 + rng.uniform(-0.01, 0.01), 13.40 + rng.uniform(-0.015, 0.015)
        tenant = ["acme", "globex", "initech"][i % 3]
        if i % 2:
            geometry, radius = point(lat, lon), float(rng.uniform(10, 300))
        else:
            w, h = rng.uniform(0.0003, 0.004), rng.uniform(0.0002, 0.003)
            ring = [[lon, lat], [lon + w, lat], [lon + w / 2, lat + h], [lon, lat]]
            geometry, radius = polygon(ring), None
        fences.append(fence_from_record(record(f"f{i}", geometry, tenant=tenant, radius_m=radius)))
    return fences


def test_batch_containing_matches_one_fence_at_a_time() -> None:
    rng = np.random.default_rng(20240601)
    fences = random_fences(rng, 400)
    index = FenceIndex.build(fences)
    lats = 52.52 + rng.uniform(-0.012, 0.012, 300)
    lons = 13.40 + rng.uniform(-0.018, 0.018, 300)
    tenants = [["acme", "globex", "initech", "umbrella"][i % 4] for i in range(300)]
    hits = index.containing(tenants, lats, lons)
    expected = [naive_containing(fences, t, lat, lon) for t, lat, lon in zip(tenants, lats, lons)]
    assert hits == expected
    assert sum(map(len, hits)) > 50  # the sample really exercises overlaps
