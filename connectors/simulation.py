"""A simulated fleet of field-security devices: deterministic MQTT traffic; pure.

``Fleet(seed, devices, fences_doc, start_ms=..., rate=...)`` models guards
walking patrol routes through their tenant's sites (and now and then into a
restricted zone), radios and trackers with draining and recharging batteries, site sensors
(motion, door, smoke, temperature), panic and SOS alerts, system health, and a
share of malformed payloads. ``fleet.step(until_ms)`` returns every message
due up to that simulated time as :class:`Message` values (MQTT topic, payload
bytes, QoS and what the message is); it reads no clock and touches no network,
so the MQTT shell (``simulator.py``), the tests and the benchmarks drive it.

Simulated time is cut into slots of ``1 / rate`` seconds from ``start_ms``
and each slot carries exactly one message, so a fleet speaks at exactly
``rate`` messages per simulated second, and one seed, start and rate give the
same bytes however the caller slices time. A device reports about every
``devices / rate`` seconds.

Every well-formed payload carries ``seq``: the device's own message counter
(0, 1, 2 ... across all of its topics), so a consumer can check order and
completeness. Malformed payloads carry no ``seq`` and do not advance it.
Topic patterns and QoS come from the bridge's :data:`DEFAULT_RULES`.
"""

from __future__ import annotations

import bisect
import datetime as dt
import math
import random
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec
import shapely
from shapely.geometry.base import BaseGeometry

from guardstream.connectors.mapping import DEFAULT_RULES
from guardstream.streams.geofence import METRES_PER_DEGREE, fence_from_record, fences_from_geojson

# the first rule of each prefix (device telemetry, guard GPS ...), never a catch-all
RULES = {rule.prefix: rule for rule in reversed(DEFAULT_RULES) if not rule.is_catch_all}
KINDS = tuple(RULES)  # guard, device, sensor, alert, system: what a message is, by topic prefix
# Four guards, three radios or trackers, three sensors in every ten devices.
ROLE_CYCLE = ("guard", "radio", "sensor", "guard", "radio", "sensor", "guard", "radio", "sensor", "guard")
SENSOR_KINDS = ("motion", "door", "temperature", "smoke")
COMPONENTS = ("gateway-1", "gateway-2", "nvr-1")
HEALTH_PERIOD_S = 10.0  # how often each system component reports
# Malformed variants, and the reason validation gives each (streams/validation.py).
MALFORMED_REASONS = {"not_json": "not_json", "out_of_range": "out_of_range", "missing_ts": "missing_field",
                     "wrong_type": "wrong_type", "oversize": "too_large"}
# with "-guard-0001" appended, still an id both the bridge and validation accept
ID_PREFIX = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,31}")
OVERSIZE_PADDING = 70_000  # over validation's 64 KiB, under the bridge's 256 KiB: reaches dlq.validate


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    payload: bytes
    qos: int
    kind: str  # the topic prefix: guard, device, sensor, alert, system
    device_id: str
    seq: int | None  # None when malformed
    malformed: str | None  # a key of MALFORMED_REASONS, or None
    ts_ms: int  # the slot's simulated time


def demo_fence_records(doc: Mapping[str, Any], now_ms: int) -> list[dict[str, Any]]:
    """Geofence records of a FeatureCollection whose features name their ``tenant`` property."""
    by_tenant: dict[str, list[Any]] = {}
    for feature in doc.get("features", []):
        tenant = str((feature.get("properties") or {}).get("tenant", ""))
        by_tenant.setdefault(tenant, []).append(feature)
    records: list[dict[str, Any]] = []
    for tenant in sorted(by_tenant):
        records += fences_from_geojson({"type": "FeatureCollection", "features": by_tenant[tenant]}, tenant, now_ms)
    return records


def iso_utc(ts_ms: int) -> str:
    moment = dt.datetime.fromtimestamp(ts_ms / 1000, tz=dt.timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# -- geometry: a local metric plane and patrol routes ----------------------------------------

@dataclass(frozen=True)
class LocalPlane:
    """Equirectangular metres around an origin: exact enough across a city district."""

    lat0: float
    lon0: float

    @property
    def scale(self) -> tuple[float, float]:
        return METRES_PER_DEGREE * math.cos(math.radians(self.lat0)), METRES_PER_DEGREE

    def to_xy(self, geometry: BaseGeometry) -> BaseGeometry:
        sx, sy = self.scale
        return shapely.transform(geometry, lambda c: (c - (self.lon0, self.lat0)) * (sx, sy))

    def to_lat_lon(self, x: float, y: float) -> tuple[float, float]:
        sx, sy = self.scale
        return self.lat0 + y / sy, self.lon0 + x / sx


@dataclass(frozen=True)
class Route:
    """A closed loop through waypoints (local metres), walked at constant speed."""

    points: tuple[tuple[float, float], ...]
    cumulative: tuple[float, ...] = field(init=False)  # distance at each point, closing point included

    def __post_init__(self) -> None:
        total, marks = 0.0, [0.0]
        loop = self.points + self.points[:1]
        for (x1, y1), (x2, y2) in zip(loop, loop[1:]):
            total += math.hypot(x2 - x1, y2 - y1)
            marks.append(total)
        object.__setattr__(self, "cumulative", tuple(marks))

    @property
    def length_m(self) -> float:
        return self.cumulative[-1]

    def at(self, distance_m: float) -> tuple[float, float, float]:
        """(x, y, heading in degrees clockwise from north) after walking ``distance_m``."""
        d = distance_m % self.length_m
        i = min(bisect.bisect_right(self.cumulative, d) - 1, len(self.points) - 1)
        (x1, y1), (x2, y2) = self.points[i], self.points[(i + 1) % len(self.points)]
        seg = self.cumulative[i + 1] - self.cumulative[i]
        f = (d - self.cumulative[i]) / seg if seg > 0 else 0.0
        heading = math.degrees(math.atan2(x2 - x1, y2 - y1)) % 360.0
        return x1 + f * (x2 - x1), y1 + f * (y2 - y1), heading


def sample_inside(rng: random.Random, shape: BaseGeometry, avoid: BaseGeometry | None = None) -> tuple[float, float]:
    """A random point of ``shape`` (local metres) outside ``avoid``, by rejection."""
    west, south, east, north = shape.bounds
    for _ in range(1000):
        x, y = rng.uniform(west, east), rng.uniform(south, north)
        if shapely.contains_xy(shape, x, y) and (avoid is None or not shapely.contains_xy(avoid, x, y)):
            return x, y
    point = shape.representative_point()  # a sliver of a shape: its one sure interior point
    return point.x, point.y


@dataclass(frozen=True)
class TenantArea:
    """One tenant's fences in local metres: where its guards patrol and its sensors sit."""

    tenant: str
    site_ids: tuple[str, ...]
    sites: tuple[BaseGeometry, ...]  # shrunk a little, so a waypoint is clearly inside
    restricted: tuple[BaseGeometry, ...]
    restricted_union: BaseGeometry | None


def tenant_areas(records: list[dict[str, Any]], plane: LocalPlane) -> list[TenantArea]:
    shapes: dict[str, dict[str, list[tuple[str, BaseGeometry]]]] = {}
    for record in records:
        fence = fence_from_record(record)
        local = plane.to_xy(fence.geometry)
        if fence.is_circle:
            local = local.buffer(fence.radius_m)
        shapes.setdefault(fence.tenant, {"SITE": [], "RESTRICTED": []})[fence.kind].append((fence.fence_id, local))
    areas = []
    for tenant in sorted(shapes):
        sites, restricted = shapes[tenant]["SITE"], shapes[tenant]["RESTRICTED"]
        if not sites:
            continue
        shrunk = tuple(core if (core := s.buffer(-12)).area > 0 else s for _, s in sites)
        inner = tuple(r.buffer(-min(5.0, math.sqrt(r.area) / 6)) for _, r in restricted)
        areas.append(TenantArea(tenant, tuple(i for i, _ in sites), shrunk, inner,
                                shapely.union_all([r for _, r in restricted]) if restricted else None))
    return areas


def patrol_route(rng: random.Random, area: TenantArea, max_length_m: float = 3500.0) -> Route:
    """Three waypoints in each of two or three sites, sometimes one in a restricted zone."""
    count = min(len(area.sites), rng.choice((2, 3)))
    chosen = rng.sample(range(len(area.sites)), count)
    while True:
        points = [sample_inside(rng, area.sites[i], area.restricted_union) for i in chosen for _ in range(3)]
        if area.restricted and rng.random() < 0.35:
            zone = rng.choice(area.restricted)
            points.insert(3, sample_inside(rng, zone))  # on the way from the first site to the next
        route = Route(tuple(points))
        # a loop walked within the hour: every guard is both inside and outside its sites each hour
        if route.length_m <= max_length_m or len(chosen) <= 2:
            return route
        chosen = chosen[:2]


# -- devices: each builds the fields of its next report and keeps its own state ------------------

@dataclass
class Guard:
    device_id: str
    tenant: str
    route: Route
    speed_mps: float
    offset_m: float
    seq: int = 0

    def report(self, rng: random.Random, elapsed_s: float, ts_ms: int, plane: LocalPlane) -> dict[str, Any]:
        x, y, heading = self.route.at(self.offset_m + self.speed_mps * elapsed_s)
        if rng.random() < 0.02:  # an urban-canyon fix: poor accuracy, and an error to match
            accuracy, sigma = 150.0, 60.0
        else:
            accuracy, sigma = rng.uniform(3.0, 15.0), 5.0
        lat, lon = plane.to_lat_lon(x + rng.gauss(0, sigma), y + rng.gauss(0, sigma))
        heading = round(heading, 1)
        return {"ts": ts_ms, "lat": round(lat, 7), "lon": round(lon, 7), "accuracy_m": round(accuracy, 1),
                "speed_mps": round(max(0.0, rng.gauss(self.speed_mps, 0.15)), 2),
                "heading_deg": 0.0 if heading >= 360.0 else heading,
                "altitude_m": round(rng.gauss(74.0, 2.0), 1), "tenant": self.tenant}

    def alert(self, rng: random.Random, ts_ms: int, fix: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        kind, text = rng.choice((("panic", "panic button pressed"), ("panic", "panic button pressed"),
                                 ("sos", "SOS: guard requests assistance")))
        return kind, {"ts": ts_ms, "lat": fix["lat"], "lon": fix["lon"], "message": text, "tenant": self.tenant}


@dataclass
class Radio:
    device_id: str
    tenant: str
    battery_pct: float
    charging: bool
    drain_pct_per_h: float
    signal_dbm: float
    firmware: str
    last_ms: int
    seq: int = 0

    def report(self, rng: random.Random, ts_ms: int) -> dict[str, Any]:
        hours = max(0, ts_ms - self.last_ms) / 3_600_000
        self.last_ms = ts_ms
        if self.charging:
            self.battery_pct = min(100.0, self.battery_pct + 35.0 * hours)
            self.charging = self.battery_pct < 95.0
        else:
            self.battery_pct = max(0.0, self.battery_pct - self.drain_pct_per_h * hours)
            self.charging = self.battery_pct <= 12.0  # back on the charger
        self.signal_dbm = min(-45.0, max(-118.0, self.signal_dbm + rng.gauss(0, 2.0)))
        # older firmware: epoch seconds with a fraction, and client_id for the tenant
        return {"ts": round(ts_ms / 1000, 3), "battery_pct": round(self.battery_pct, 1), "charging": self.charging,
                "signal_dbm": round(self.signal_dbm), "temperature_c": round(rng.gauss(33.0, 3.0), 1),
                "firmware": self.firmware, "client_id": self.tenant}

    def alert(self, rng: random.Random, ts_ms: int) -> tuple[str, dict[str, Any]]:
        kind, text = rng.choice((("fall", "man down: no movement after an impact"), ("tamper", "case opened")))
        return kind, {"ts": ts_ms, "message": text, "tenant": self.tenant}


@dataclass
class Sensor:
    device_id: str
    tenant: str
    site_id: str
    kind: str  # one of SENSOR_KINDS
    door_open: bool = False
    heat_left: int = 0  # readings left in a heat episode
    seq: int = 0

    def report(self, rng: random.Random, ts_ms: int) -> dict[str, Any]:
        fields: dict[str, Any] = {"ts": iso_utc(ts_ms), "site_id": self.site_id, "tenant": self.tenant}
        if self.kind == "motion":
            fields["state"] = "detected" if rng.random() < 0.15 else "clear"
        elif self.kind == "door":
            self.door_open = self.door_open != (rng.random() < 0.1)
            fields["state"] = "open" if self.door_open else "closed"
        elif self.kind == "smoke":
            fields["state"] = "detected" if rng.random() < 0.0005 else "clear"
        else:
            if self.heat_left == 0 and rng.random() < 0.01:
                self.heat_left = rng.randint(3, 10)
            hot = self.heat_left > 0
            self.heat_left = max(0, self.heat_left - 1)
            fields["value"] = round(rng.uniform(46.0, 62.0) if hot else rng.gauss(21.5, 1.5), 1)
            fields["unit"] = "Cel"
        return fields


@dataclass
class Component:
    device_id: str
    seq: int = 0

    def report(self, rng: random.Random, ts_ms: int) -> dict[str, Any]:
        roll = rng.random()
        status, detail = ("down", "process not responding") if roll < 0.01 else \
            ("degraded", "queue backing up") if roll < 0.05 else ("ok", None)
        fields = {"ts": ts_ms, "status": status,
                  "metrics": {"cpu_pct": round(rng.uniform(3, 95), 1), "queue_depth": rng.randint(0, 1500),
                              "uptime_s": ts_ms // 1000 % 864_000}}
        if detail:
            fields["detail"] = detail
        return fields


# -- the fleet ------------------------------------------------------------------------------------

Device = Guard | Radio | Sensor | Component
_JSON = msgspec.json.Encoder()


def encode(fields: Mapping[str, Any]) -> bytes:
    return _JSON.encode(fields)


class Fleet:
    """Devices of two or more tenants speaking one message per slot; see the module docstring."""

    def __init__(self, seed: int, devices: int, fences_doc: Mapping[str, Any], *, start_ms: int,
                 rate: float = 100.0, malformed_share: float = 0.01, alert_share: float = 0.002,
                 id_prefix: str = "sim", qos_override: int | None = None) -> None:
        if devices < 1 or not 0 < rate < math.inf or not 0 <= malformed_share <= 1 or not 0 <= alert_share <= 1:
            raise ValueError("Fleet needs devices >= 1, rate > 0 and shares between 0 and 1")
        if qos_override not in (None, 0, 1, 2):
            raise ValueError(f"qos_override must be 0, 1 or 2, not {qos_override!r}")
        if not ID_PREFIX.fullmatch(id_prefix):
            raise ValueError(f"id prefix {id_prefix!r} is not 1-32 of A-Z a-z 0-9 _ . -")
        self.start_ms, self.rate = start_ms, rate
        self.malformed_share, self.alert_share, self.qos_override = malformed_share, alert_share, qos_override
        self._rng = random.Random(seed)
        records = demo_fence_records(fences_doc, start_ms)
        coords = shapely.get_coordinates([fence_from_record(r).geometry for r in records])
        if not len(coords):
            raise ValueError("Fleet needs fences: the document has none")
        self.plane = LocalPlane(float(coords[:, 1].mean()), float(coords[:, 0].mean()))
        areas = tenant_areas(records, self.plane)
        if not areas:
            raise ValueError("Fleet needs at least one tenant with a SITE fence")
        self.devices: tuple[Device, ...] = tuple(self._device(i, devices, id_prefix, areas) for i in range(devices))
        self.components = tuple(Component(f"{id_prefix}-{name}") for name in COMPONENTS)
        self._health_every = max(20, round(rate * HEALTH_PERIOD_S / len(COMPONENTS)))
        self._slot = 0
        self._order: list[int] = []

    def _device(self, i: int, count: int, prefix: str, areas: list[TenantArea]) -> Device:
        rng, area = self._rng, areas[i % len(areas)]
        number = f"{i + 1:0{max(4, len(str(count)))}d}"
        role = ROLE_CYCLE[i % len(ROLE_CYCLE)]
        if role == "guard":
            route = patrol_route(rng, area)
            return Guard(f"{prefix}-guard-{number}", area.tenant, route, rng.uniform(1.25, 1.55),
                         rng.uniform(0, route.length_m))
        if role == "radio":
            battery = rng.uniform(5.0, 100.0)
            return Radio(f"{prefix}-{'radio' if i % 2 else 'tracker'}-{number}", area.tenant, battery,
                         battery < 15.0, rng.uniform(4.0, 12.0), rng.uniform(-105.0, -60.0),
                         rng.choice(("2.4.1", "2.5.0")), self.start_ms)
        kind = SENSOR_KINDS[(i // len(ROLE_CYCLE) + i) % len(SENSOR_KINDS)]
        return Sensor(f"{prefix}-{kind}-{number}", area.tenant, rng.choice(area.site_ids), kind)

    @property
    def guards(self) -> tuple[Guard, ...]:
        return tuple(d for d in self.devices if isinstance(d, Guard))

    @property
    def next_due_ms(self) -> int:
        """Simulated time of the next message."""
        return self.start_ms + int(self._slot * 1000 / self.rate)

    def step(self, until_ms: int) -> list[Message]:
        """Every message due at or before ``until_ms``, in order."""
        out = []
        while self.next_due_ms <= until_ms:
            out.append(self._next())
        return out

    def take(self, count: int) -> list[Message]:
        """The next ``count`` messages, whatever their time."""
        return [self._next() for _ in range(count)]

    def __iter__(self) -> Iterator[Message]:
        while True:
            yield self._next()

    # -- one slot -------------------------------------------------------------------------

    def _next(self) -> Message:
        ts_ms, slot = self.next_due_ms, self._slot
        self._slot += 1
        rng = self._rng
        malformed = rng.random() < self.malformed_share
        if slot % self._health_every == self._health_every - 1:
            component = self.components[slot // self._health_every % len(self.components)]
            return self._emit(component, "system", {"component": component.device_id},
                              component.report(rng, ts_ms), ts_ms, malformed)
        device = self._next_device()
        if isinstance(device, Guard):
            fix = device.report(rng, (ts_ms - self.start_ms) / 1000, ts_ms, self.plane)
            if not malformed and rng.random() < self.alert_share:
                kind, fields = device.alert(rng, ts_ms, fix)
                return self._emit(device, "alert", {"kind": kind, "device_id": device.device_id}, fields, ts_ms)
            return self._emit(device, "guard", {"guard_id": device.device_id}, fix, ts_ms, malformed)
        if isinstance(device, Radio):
            telemetry = device.report(rng, ts_ms)
            if not malformed and rng.random() < self.alert_share:
                kind, fields = device.alert(rng, ts_ms)
                return self._emit(device, "alert", {"kind": kind, "device_id": device.device_id}, fields, ts_ms)
            return self._emit(device, "device", {"device_id": device.device_id}, telemetry, ts_ms, malformed)
        assert isinstance(device, Sensor)
        return self._emit(device, "sensor", {"sensor_id": device.device_id, "kind": device.kind},
                          device.report(rng, ts_ms), ts_ms, malformed)

    def _next_device(self) -> Device:
        if not self._order:
            # every device once per round, in a fresh order: report intervals vary like real ones
            self._order = list(range(len(self.devices)))
            self._rng.shuffle(self._order)
        return self.devices[self._order.pop()]

    def _emit(self, device: Device, prefix: str, values: dict[str, str], fields: dict[str, Any], ts_ms: int,
              malformed: bool = False) -> Message:
        rule = RULES[prefix]
        topic = rule.pattern.format(**values)
        qos = rule.qos if self.qos_override is None else self.qos_override
        if malformed:
            variant, payload = self._malformed(prefix, fields)
            return Message(topic, payload, qos, prefix, device.device_id, None, variant, ts_ms)
        seq = fields["seq"] = device.seq
        device.seq += 1
        return Message(topic, encode(fields), qos, prefix, device.device_id, seq, None, ts_ms)

    def _malformed(self, prefix: str, fields: dict[str, Any]) -> tuple[str, bytes]:
        ranged = prefix in ("guard", "device")  # kinds with a numeric range to break
        variant = self._rng.choice(("not_json", "missing_ts", "wrong_type", "oversize")
                                   + (("out_of_range",) if ranged else ()))
        if variant == "not_json":
            text = encode(fields)
            return variant, text[:len(text) // 2]  # a cut-off upload
        if variant == "out_of_range" and prefix == "guard":
            fields["lat"] = round(self._rng.uniform(90.5, 180.0), 4)  # lon and lat swapped, or worse
        elif variant == "out_of_range":
            fields["battery_pct"] = round(self._rng.uniform(101.0, 250.0), 1)
        elif variant == "missing_ts":
            del fields["ts"]
        elif variant == "wrong_type" and prefix == "guard":
            fields["lat"] = str(fields["lat"])
        elif variant == "wrong_type":
            fields["ts"] = True
        else:
            fields["padding"] = "x" * OVERSIZE_PADDING
        return variant, encode(fields)
