"""The history API's questions, as typed queries parsed from a URL's parameters. Pure.

Every parameter is checked here; a bad one is a :class:`BadParameter` whose
reason code the API answers with 400. Times are the project's TIME syntax
(``guardstream.timespec``: ``-2h``, ISO-8601, epoch milliseconds). Pages are
keyset pages: a cursor is the (time, event id) of the last row sent, opaque
to the client, so rows written while a client pages never shift a page and
no row comes twice. A track may instead come whole and simplified
(Douglas–Peucker, :func:`simplify_track`), capped at a number of points.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import msgspec
import numpy as np
import shapely

from guardstream.errors import InputError
from guardstream.timespec import parse_time

ID = re.compile(r"[A-Za-z0-9_.:\-]{1,128}")
KIND = re.compile(r"[A-Z_]{1,40}")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
TRACK_PAGE = (1000, 10_000)  # default and largest page of fixes
ALERT_PAGE = (100, 1000)
NEAR_LIMIT = (500, 10_000)
MAX_RADIUS_M = 100_000.0
MAX_TRACK_POINTS = 200_000  # the most fixes a simplified track is computed from
DEFAULT_TRACK_SPAN = "-1h"
DEFAULT_ALERT_SPAN = "-7d"
# status= values and the alert statuses each stands for
STATUSES: Mapping[str, tuple[str, ...]] = {
    "open": ("NEW", "ACKNOWLEDGED"), "new": ("NEW",), "acknowledged": ("ACKNOWLEDGED",),
    "resolved": ("RESOLVED", "FALSE_ALARM")}
ALL_STATUSES = ("NEW", "ACKNOWLEDGED", "RESOLVED", "FALSE_ALARM")
_METRES_PER_DEGREE = 111_320.0
FINEST_HALVINGS = 24  # a cap never asks for a tolerance finer than the track's extent / 2**24


class BadParameter(InputError):
    reason = "bad_parameter"


@dataclass(frozen=True)
class Cursor:
    ts: datetime
    event_id: str


def encode_cursor(ts: datetime, event_id: str) -> str:
    micros = (ts - _EPOCH) // timedelta(microseconds=1)
    return base64.urlsafe_b64encode(msgspec.json.encode([micros, event_id])).decode().rstrip("=")


def decode_cursor(text: str) -> Cursor:
    try:
        micros, event_id = msgspec.json.decode(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        if not isinstance(micros, int) or not isinstance(event_id, str):
            raise ValueError("not [int, str]")
        return Cursor(_EPOCH + timedelta(microseconds=micros), event_id)
    except (ValueError, TypeError, OverflowError, binascii.Error, msgspec.DecodeError) as exc:
        raise BadParameter("cursor: not a cursor this API handed out", reason="bad_cursor") from exc


@dataclass(frozen=True)
class TrackQuery:
    guard: str
    start: datetime
    end: datetime
    limit: int
    cursor: Cursor | None
    simplify_m: float | None  # Douglas–Peucker tolerance; with max_points, the whole track in one answer
    max_points: int | None

    @property
    def simplified(self) -> bool:
        return self.simplify_m is not None or self.max_points is not None


@dataclass(frozen=True)
class AlertQuery:
    statuses: tuple[str, ...]
    kind: str | None
    start: datetime
    end: datetime
    limit: int
    cursor: Cursor | None


@dataclass(frozen=True)
class NearQuery:
    lat: float
    lon: float
    radius_m: float
    limit: int

    def latitude_band(self) -> tuple[float, float]:
        """(south, north) degrees holding every point within the radius (a metre of latitude is
        never shorter than 1/110,574 of a degree)."""
        delta = self.radius_m / 110_574.0
        return max(-90.0, self.lat - delta), min(90.0, self.lat + delta)


Params = Mapping[str, Sequence[str]]  # parse_qs's answer


def _one(params: Params, name: str) -> str | None:
    values = params.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise BadParameter(f"{name}: given {len(values)} times", reason="repeated_parameter")
    return values[0]


def _unknown(params: Params, known: set[str]) -> None:
    extra = sorted(set(params) - known - {"token"})
    if extra:
        raise BadParameter(f"unknown parameter {extra[0]!r}: use {', '.join(sorted(known))}",
                           reason="unknown_parameter")


def _time(params: Params, name: str, default: str, now_ms: int) -> datetime:
    text = _one(params, name) or default
    try:
        return _EPOCH + timedelta(milliseconds=parse_time(text, now_ms))
    except (InputError, OverflowError) as exc:
        raise BadParameter(f"{name}: {text!r} is not a time: -15m, -2h, ISO-8601 or epoch milliseconds",
                           reason="bad_time") from exc


def _span(params: Params, default_from: str, now_ms: int) -> tuple[datetime, datetime]:
    start, end = _time(params, "from", default_from, now_ms), _time(params, "to", "now", now_ms)
    if start >= end:
        raise BadParameter("from must be before to", reason="bad_time_range")
    return start, end


def _int(params: Params, name: str, low: int, high: int, default: int | None) -> int | None:
    text = _one(params, name)
    if text is None:
        return default
    if not re.fullmatch(r"\d{1,9}", text) or not low <= int(text) <= high:
        raise BadParameter(f"{name}: a whole number from {low} to {high}", reason=f"bad_{name}")
    return int(text)


def _float(params: Params, name: str, low: float, high: float, required: bool = True) -> float | None:
    text = _one(params, name)
    if text is None:
        if required:
            raise BadParameter(f"{name} is required", reason=f"missing_{name}")
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or not low <= value <= high:
        raise BadParameter(f"{name}: a number from {low:g} to {high:g}", reason=f"bad_{name}")
    return value


def _identifier(value: str | None, name: str) -> str:
    if value is None:
        raise BadParameter(f"{name} is required", reason=f"missing_{name}")
    if not ID.fullmatch(value):
        raise BadParameter(f"{name}: 1 to 128 of A-Z a-z 0-9 _ . : -", reason=f"bad_{name}")
    return value


def _cursor(params: Params) -> Cursor | None:
    text = _one(params, "cursor")
    return None if text is None else decode_cursor(text)


def track_query(params: Params, now_ms: int) -> TrackQuery:
    _unknown(params, {"guard", "from", "to", "limit", "cursor", "simplify_m", "max_points"})
    guard = _identifier(_one(params, "guard"), "guard")
    start, end = _span(params, DEFAULT_TRACK_SPAN, now_ms)
    limit = _int(params, "limit", 1, TRACK_PAGE[1], TRACK_PAGE[0])
    simplify_m = _float(params, "simplify_m", 0.0, 100_000.0, required=False)
    max_points = _int(params, "max_points", 2, MAX_TRACK_POINTS, None)
    cursor = _cursor(params)
    if cursor is not None and (simplify_m is not None or max_points is not None):
        raise BadParameter("a simplified track comes whole: no cursor", reason="bad_cursor")
    assert limit is not None
    return TrackQuery(guard, start, end, limit, cursor, simplify_m, max_points)


def alert_query(params: Params, now_ms: int) -> AlertQuery:
    _unknown(params, {"status", "kind", "from", "to", "limit", "cursor"})
    statuses: tuple[str, ...] = ALL_STATUSES
    status = _one(params, "status")
    if status is not None:
        wanted = [s.strip() for s in status.split(",")]
        if not all(s in STATUSES for s in wanted):
            raise BadParameter(f"status: one or more of {', '.join(STATUSES)}", reason="bad_status")
        statuses = tuple(dict.fromkeys(s for w in wanted for s in STATUSES[w]))
    kind = _one(params, "kind")
    if kind is not None and not KIND.fullmatch(kind):
        raise BadParameter("kind: an alert kind such as PANIC or GEOFENCE_VIOLATION", reason="bad_kind")
    start, end = _span(params, DEFAULT_ALERT_SPAN, now_ms)
    limit = _int(params, "limit", 1, ALERT_PAGE[1], ALERT_PAGE[0])
    assert limit is not None
    return AlertQuery(statuses, kind, start, end, limit, _cursor(params))


def near_query(params: Params) -> NearQuery:
    _unknown(params, {"lat", "lon", "radius_m", "limit"})
    lat = _float(params, "lat", -90.0, 90.0)
    lon = _float(params, "lon", -180.0, 180.0)
    radius = _float(params, "radius_m", 0.0, MAX_RADIUS_M)
    limit = _int(params, "limit", 1, NEAR_LIMIT[1], NEAR_LIMIT[0])
    assert lat is not None and lon is not None and radius is not None and limit is not None
    return NearQuery(lat, lon, radius, limit)


def fence_id(text: str) -> str:
    return _identifier(text or None, "fence")


def alert_id(text: str) -> str:
    return _identifier(text or None, "alert")


def shown_address(channel: str, address: str) -> str:
    """A notification's address as the API shows it: an email address or a phone number whole; a
    webhook URL as its scheme and host only, since the rest of it (a Slack-style path, a query
    token, a user:password) is often the receiver's secret."""
    if channel != "webhook":
        return address
    parts = urlsplit(address)
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:  # not a port: nothing of it is shown
        port = ""
    return f"{parts.scheme}://{parts.hostname or '?'}{port}/…"


def no_parameters(params: Params) -> None:
    _unknown(params, set())


# -- tracks ----------------------------------------------------------------------------------

def simplify_track(points: Sequence[tuple[int, float, float]] | np.ndarray, tolerance_m: float | None,
                   max_points: int | None) -> tuple[list[tuple[int, float, float]], float]:
    """Douglas–Peucker over (ts_ms, lat, lon) fixes in time order, in metres on a local flat
    projection. Returns the kept fixes (always the first and the last) and the tolerance used:
    ``tolerance_m``, or with a cap, the finest power-of-two fraction of the track's extent (down to
    ``tolerance_m``) that keeps at most ``max_points``."""
    tolerance = tolerance_m or 0.0
    table = np.asarray(points, dtype=float).reshape(-1, 3)  # a day of fixes: arrays, not 86,400 tuples
    if len(table) <= 2 or (tolerance == 0.0 and (max_points is None or len(table) <= max_points)):
        return _fixes(table), tolerance
    lat0 = math.radians(float(table[:, 1].mean()))
    # z carries each fix's index through the simplification
    coords = np.column_stack((table[:, 2] * (_METRES_PER_DEGREE * math.cos(lat0)), table[:, 1] * _METRES_PER_DEGREE,
                              np.arange(len(table), dtype=float)))
    line = shapely.linestrings(coords)

    def simplified(on: shapely.LineString, tolerance: float) -> shapely.LineString:
        return shapely.simplify(on, tolerance, preserve_topology=False)

    def fixes_of(kept: shapely.LineString) -> list[tuple[int, float, float]]:
        return _fixes(table[shapely.get_coordinates(kept, include_z=True)[:, 2].astype(np.intp)])

    if max_points is None:
        return fixes_of(simplified(line, tolerance)), tolerance
    # the finest extent / 2**k (k <= FINEST_HALVINGS, not below tolerance_m) that keeps at most
    # max_points, by bisection over k. Douglas–Peucker at a coarser tolerance splits where a finer
    # one did and stops sooner, so run on a finer one's result it keeps exactly what it keeps run
    # on the whole track: only the first pass (the finest) reads every fix, the others run on the
    # finest result that did not fit, and a track that fits at the finest takes one pass.
    xmin, ymin, xmax, ymax = shapely.bounds(line)
    extent = max(math.hypot(xmax - xmin, ymax - ymin), tolerance, 1e-6)
    finest = FINEST_HALVINGS
    while finest > 0 and extent / 2 ** finest < tolerance:
        finest -= 1
    base = simplified(line, extent / 2 ** finest)
    if shapely.get_num_coordinates(base) <= max_points:
        return fixes_of(base), extent / 2 ** finest
    fits, best = 0, None  # the whole extent keeps the two ends only
    low, high = 1, finest - 1
    while low <= high:
        k = (low + high) // 2
        kept = simplified(base, extent / 2 ** k)
        if shapely.get_num_coordinates(kept) <= max_points:
            fits, best, low = k, kept, k + 1
        else:
            base, high = kept, k - 1
    return (_fixes(table[[0, -1]]) if best is None else fixes_of(best)), extent / 2 ** fits


def _fixes(table: np.ndarray) -> list[tuple[int, float, float]]:
    return [(int(ts), lat, lon) for ts, lat, lon in table.tolist()]
