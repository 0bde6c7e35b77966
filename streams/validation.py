"""Validation of raw device payloads: bytes in, an Avro-ready record or a reason out; pure.

``validate(kind, payload, meta, policy)`` returns ``Valid`` (a dict with every
field of the output Avro record, the record's full name and the Kafka key) or
``Refused`` (a stable reason code of ``REASONS`` and a short detail naming the
field, at most ``MAX_DETAIL_CHARS``, never the whole payload). It
never reads the clock (``policy.now_ms`` is passed in), never raises for bad
input, and raises for nothing but our own bugs. The payload contracts, one
example per kind, are in ``docs/payloads.md``.

Reason codes (``REASONS``), checked in this order:

    too_large      payload longer than ``policy.max_payload_bytes``
    not_utf8       payload bytes are not UTF-8
    too_deep       JSON nested deeper than ``policy.max_depth``
    not_json       not one JSON document (also: empty payload)
    not_object     JSON, but not an object
    missing_field  a required field is absent (``ts``, ``lat``/``lon``, ``status``, the device id ...)
    wrong_type     a field has the wrong JSON type (``true`` for a number, ``"13.4"`` for a number ...)
    not_finite     a number is NaN or infinite (``NaN`` literals, ``1e999``)
    out_of_range   a number is outside its documented range
    conflict       two spellings of one field disagree (``lat`` and ``latitude``, ``tenant`` and ``client_id``)
    key_mismatch   the payload's ``device_id`` differs from the id in the MQTT topic (the record key)
    bad_id         a tenant, device, site id or metric name does not match its pattern
    unknown_enum   a kind, severity or status that is not a symbol of the Avro enum
    bad_timestamp  ``ts`` is negative, or a string that is not ISO-8601 with a UTC offset
    clock_skew     ``ts`` lies too far ahead of or behind ``policy.now_ms``

Free-text fields (``message``, ``detail``, ``firmware``, ``unit``, ``state``) are
never a reason to refuse a record: control characters are removed and the text is
cut to ``policy.max_text_len`` characters. Unknown fields are ignored, so devices
may send more than the contract names.

Why msgspec: ``bench/validation_libs.py`` decoded and range-checked 200,000 guard GPS
payloads (10 % invalid), best of 3, on Python 3.11.7, msgspec 0.22.0, pydantic 2.14.3,
on a shared 2-CPU machine (absolute rates varied by +-30 % between runs; the ratio
stayed at about 4:1):

    msgspec  json.Decoder(Struct)            994,000 events/s
    pydantic model_validate_json (strict)    246,000 events/s
    guardstream validate() end to end         92,000 events/s

so the hot path decodes straight into typed msgspec Structs (the ``_*Wire``
classes below). A payload those refuse is decoded a second time, slowly, with the
standard library, to find the precise reason: the slow path walks the same Struct
type information, so the types and ranges live in one place.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

import msgspec
import msgspec.inspect as mi

from guardstream.catalog import TOPICS, Topic
from guardstream.errors import InputError
from guardstream.refusal import Refused
from guardstream.schemas.contracts import current_contracts
from guardstream.records import (
    DEVICE_ALERT, GUARD_POSITION, SENSOR_READING, SYSTEM_HEALTH, TELEMETRY, DeviceAlert, GuardPosition,
    SensorReading, SystemHealth, Telemetry, device_alert, guard_position, sensor_reading, system_health, telemetry,
)

REASONS = frozenset({
    "too_large", "not_utf8", "too_deep", "not_json", "not_object", "missing_field", "wrong_type",
    "not_finite", "out_of_range", "conflict", "key_mismatch", "bad_id", "unknown_enum", "bad_timestamp",
    "clock_skew",
})
MAX_DETAIL_CHARS = 300
DEVICE_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")  # the bridge passes the same set (MAC-style ids)
TENANT_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")
# Epoch seconds stay below 1e11 until the year 5138; epoch milliseconds passed it in 1973.
SECONDS_LIMIT = 1e11


def _symbols(schema: str, field_name: str) -> tuple[str, ...]:
    """The enum symbols of one field of a contract: the .avsc files are the one truth."""
    for entry in current_contracts()[schema].schema["fields"]:
        if entry["name"] == field_name:
            return tuple(entry["type"]["symbols"])
    raise LookupError(f"{schema} has no enum field {field_name}")


SENSOR_KINDS = _symbols(SENSOR_READING, "kind")
ALERT_KINDS = _symbols(DEVICE_ALERT, "kind")
SEVERITIES = _symbols(DEVICE_ALERT, "severity")
HEALTH_STATUSES = _symbols(SYSTEM_HEALTH, "status")
# Severity of a device alert that names none. A person in danger or a fire is
# critical; a kind added to the schema later defaults to HIGH until listed here.
DEFAULT_SEVERITY = {
    "PANIC": "CRITICAL", "SOS": "CRITICAL", "FALL": "CRITICAL", "TAMPER": "CRITICAL", "SMOKE": "CRITICAL",
    "FIRE": "CRITICAL", "GEOFENCE_VIOLATION": "CRITICAL", "LOW_BATTERY": "HIGH", "HIGH_TEMPERATURE": "HIGH",
    "DEVICE_SILENT": "HIGH", "SYSTEM_DEGRADED": "NORMAL",
}


class RawKind(enum.Enum):
    """What a raw topic carries; the value names the topic's field in the catalog."""

    DEVICE = "raw_device"
    GUARD = "raw_guard"
    SENSOR = "raw_sensor"
    ALERT = "raw_alert"
    SYSTEM = "raw_system"

    @property
    def topic(self) -> Topic:
        return getattr(TOPICS, self.value)


def kind_for_topic(topic_name: str) -> RawKind:
    """The kind of a raw topic, by its name in the catalog (``ValueError`` for any other topic)."""
    kind = _KIND_BY_TOPIC.get(topic_name)
    if kind is None:
        raise ValueError(f"{topic_name!r} is not a raw topic of the catalog")
    return kind


# asked once per record: a dict, not a walk over the enum
_KIND_BY_TOPIC = {kind.topic.name: kind for kind in RawKind}


@dataclass(frozen=True, kw_only=True)
class RawMeta:
    """Where a raw record came from: the Kafka record and the bridge's headers."""

    key: str | None  # device id from the MQTT topic (the record key)
    mqtt_topic: str | None
    msg_id: str  # the bridge's message id; becomes the event_id
    received_ms: int  # when the bridge received the MQTT message
    source_topic: str | None = None
    partition: int | None = None
    offset: int | None = None


@dataclass(frozen=True, kw_only=True)
class Policy:
    """Limits of validation; build one per batch, since it carries the time."""

    now_ms: int
    default_tenant: str = "default"
    max_payload_bytes: int = 65_536
    max_depth: int = 8
    max_text_len: int = 500
    max_future_skew_ms: int = 5 * 60_000
    max_past_skew_ms: int = 7 * 24 * 3_600_000


@dataclass(frozen=True)
class Valid:
    record: dict[str, Any]  # every field of the Avro record ``schema``, enums as symbol strings
    schema: str  # Avro full name, e.g. guardstream.GuardPosition
    key: str  # device id: the Kafka key of the output record


# -- the wire contracts: what devices send, as typed Structs -------------------------

Latitude = Annotated[float, msgspec.Meta(ge=-90, le=90)]
Longitude = Annotated[float, msgspec.Meta(ge=-180, le=180)]
NonNegative = Annotated[float, msgspec.Meta(ge=0)]


class _Wire(msgspec.Struct, kw_only=True):
    ts: int | float | str
    tenant: str | None = None
    client_id: str | None = None  # older firmware's name for the tenant
    device_id: str | None = None


class _PositionWire(_Wire):
    lat: Latitude | None = None
    lon: Longitude | None = None
    latitude: Latitude | None = None  # the long spellings some trackers send
    longitude: Longitude | None = None


class _GuardWire(_PositionWire):
    accuracy_m: NonNegative | None = None
    speed_mps: NonNegative | None = None
    heading_deg: Annotated[float, msgspec.Meta(ge=0, lt=360)] | None = None
    altitude_m: float | None = None


class _TelemetryWire(_Wire):
    battery_pct: Annotated[float, msgspec.Meta(ge=0, le=100)] | None = None
    charging: bool | None = None
    # Some modems report fractional dBm; the record keeps whole dBm.
    signal_dbm: Annotated[float, msgspec.Meta(ge=-150, le=0)] | None = None
    temperature_c: Annotated[float, msgspec.Meta(ge=-60, le=100)] | None = None
    firmware: str | None = None


class _SensorWire(_Wire):
    kind: str | None = None
    value: float | None = None
    unit: str | None = None
    state: str | None = None
    site_id: str | None = None


class _AlertWire(_PositionWire):
    kind: str | None = None
    severity: str | None = None
    message: str | None = None


class _SystemWire(_Wire):
    status: str
    detail: str | None = None
    metrics: dict[str, float] | None = None


# -- the entry point ------------------------------------------------------------------

def validate(kind: RawKind, payload: bytes, meta: RawMeta, policy: Policy) -> Valid | Refused:
    """Check one raw payload against the contract of ``kind`` and build its output record."""
    contract = _CONTRACTS[kind]
    try:
        _check_envelope(payload, policy)
        try:
            wire = contract.decoder.decode(payload)
        except (msgspec.MsgspecError, RecursionError):
            # Refused on the fast path: decode again, slowly, to name the reason.
            wire = _decode_slowly(payload, contract)
        record = contract.build(wire, meta, policy)
    except InputError as exc:
        return Refused(exc.reason, _clip(exc.detail))
    return Valid(record, contract.schema, record["device_id"])


def _reject(reason: str, detail: str) -> InputError:
    return InputError(detail, reason=reason)


def _clip(text: str, limit: int = MAX_DETAIL_CHARS) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _show(value: Any) -> str:
    """A short repr of a payload value for a detail text."""
    return _clip(repr(value), 40)


def _check_envelope(payload: bytes, policy: Policy) -> None:
    if len(payload) > policy.max_payload_bytes:
        raise _reject("too_large", f"payload is {len(payload)} bytes, over the limit of {policy.max_payload_bytes}")
    if not payload.isascii():
        try:
            payload.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _reject("not_utf8", f"payload is not UTF-8 (byte {exc.start})") from exc
    # Every container opens with { or [, so few brackets cannot nest deeply: the
    # exact scan runs only for payloads that have many.
    if payload.count(b"{") + payload.count(b"[") > policy.max_depth:
        depth = json_depth(payload)
        if depth > policy.max_depth:
            raise _reject("too_deep", f"JSON nests {depth} levels deep, over the limit of {policy.max_depth}")


# A string runs to its closing quote or, unterminated, to the end of the payload:
# a string that could end nowhere would be rescanned from every later quote.
_STRING_OR_BRACKET = re.compile(rb'"(?:[^"\\]|\\.)*(?:"|\\?\Z)|[\[\]{}]', re.DOTALL)


def json_depth(payload: bytes) -> int:
    """How deep the containers of a JSON text nest, brackets inside strings not counted."""
    depth = deepest = 0
    for match in _STRING_OR_BRACKET.finditer(payload):
        token = match.group()
        if token in (b"{", b"["):
            depth += 1
            deepest = max(deepest, depth)
        elif token in (b"}", b"]"):
            depth -= 1
    return deepest


# -- the slow path: standard-library JSON, then the Struct's types checked one by one ----

def _parse_int(text: str) -> int | float:
    # Python refuses to convert more than 4300 digits; such a number is out of any range anyway.
    return int(text) if len(text) <= 400 else float(text)


def _decode_slowly(payload: bytes, contract: _Contract) -> _Wire:
    try:
        data = json.loads(payload.decode("utf-8"), parse_int=_parse_int)
    except json.JSONDecodeError as exc:
        raise _reject("not_json", f"payload is not JSON: {exc.msg} at character {exc.pos}") from exc
    except (ValueError, RecursionError) as exc:
        raise _reject("not_json", f"payload is not JSON ({type(exc).__name__})") from exc
    if not isinstance(data, dict):
        raise _reject("not_object", f"payload is a JSON {_json_type(data)}, not an object")
    for wire_field in contract.fields:
        name = wire_field.encode_name
        if name in data:
            _check_value(name, data[name], wire_field.type)
        elif wire_field.required:
            raise _reject("missing_field", f"field {name!r} is missing")
    try:
        return msgspec.convert(data, contract.wire_type)
    except msgspec.ValidationError as exc:
        # The checks above mirror msgspec's; should they miss a case, msgspec still decides.
        raise _reject("wrong_type", f"payload does not fit the contract: {exc}") from exc


# The JSON values each msgspec type accepts, and how a detail names it.
_WIRE_TYPES: dict[type, tuple[tuple[type, ...], str]] = {
    mi.NoneType: ((type(None),), "null"), mi.BoolType: ((bool,), "true or false"),
    mi.IntType: ((int,), "an integer"), mi.FloatType: ((int, float), "a number"),
    mi.StrType: ((str,), "a string"), mi.DictType: ((dict,), "an object"),
}


def _matches(value: Any, expected: mi.Type) -> bool:
    accepted, _ = _WIRE_TYPES[type(expected)]
    # bool is an int to Python but not a number to JSON
    return isinstance(value, accepted) and (not isinstance(value, bool) or bool in accepted)


def _check_value(name: str, value: Any, expected: mi.Type) -> None:
    members = expected.types if isinstance(expected, mi.UnionType) else (expected,)
    for member in members:
        if _matches(value, member):
            break
    else:
        words = " or ".join(_WIRE_TYPES[type(m)][1] for m in members)
        raise _reject("wrong_type", f"{name} must be {words}, not {_json_type(value)}")
    if isinstance(member, (mi.IntType, mi.FloatType)):
        _check_number(name, value, member)
    elif isinstance(member, mi.DictType):
        for key, item in value.items():
            _check_value(f"{name}[{_show(key)}]", item, member.value_type)


def _check_number(name: str, value: float, bounds: mi.IntType | mi.FloatType) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise _reject("not_finite", f"{name} is not a finite number")
    if ((bounds.ge is not None and value < bounds.ge) or (bounds.gt is not None and value <= bounds.gt)
            or (bounds.le is not None and value > bounds.le) or (bounds.lt is not None and value >= bounds.lt)):
        low = f"[{bounds.ge}" if bounds.ge is not None else f"({bounds.gt}" if bounds.gt is not None else "(-inf"
        high = f"{bounds.le}]" if bounds.le is not None else f"{bounds.lt})" if bounds.lt is not None else "inf)"
        raise _reject("out_of_range", f"{name} {_show(value)} is outside {low}, {high}")


def _json_type(value: Any) -> str:
    words = {bool: "boolean", int: "number", float: "number", str: "string", list: "array", dict: "object"}
    return words.get(type(value), "null")  # json.loads makes exactly these types


# -- normalising fields shared by every kind ----------------------------------------------

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_ONE_MS = dt.timedelta(milliseconds=1)
_LINE_BREAKS = re.compile(r"[\t\n\r]+")
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")  # controls; lone surrogates break UTF-8


def _one_of(first: Any, second: Any, names: str) -> Any:
    """The value of a field that has two accepted spellings."""
    if first is not None and second is not None and first != second:
        raise _reject("conflict", f"{names} disagree")
    return first if first is not None else second


def _tenant(wire: _Wire, policy: Policy) -> str:
    tenant = _one_of(wire.tenant, wire.client_id, "tenant and client_id")
    if tenant is None:
        return policy.default_tenant
    if not TENANT_ID.fullmatch(tenant):
        raise _reject("bad_id", f"tenant {_show(tenant)} is not 1-64 of A-Z a-z 0-9 _ . -")
    return tenant


def _device_id(wire: _Wire, meta: RawMeta) -> str:
    if meta.key is not None and wire.device_id is not None and wire.device_id != meta.key:
        raise _reject("key_mismatch", f"device_id {_show(wire.device_id)} differs from the topic's {_show(meta.key)}")
    device_id = meta.key if meta.key is not None else wire.device_id
    if device_id is None:
        raise _reject("missing_field", "field 'device_id' is missing and the record has no key")
    if not DEVICE_ID.fullmatch(device_id):
        raise _reject("bad_id", f"device id {_show(device_id)} is not 1-128 of A-Z a-z 0-9 _ . -")
    return device_id


def _ts_ms(ts: int | float | str, policy: Policy) -> int:
    if isinstance(ts, str):
        ts_ms = _iso_ms(ts)
    elif ts < 0:
        raise _reject("bad_timestamp", f"ts {_show(ts)} is negative")
    else:
        ts_ms = round(ts * 1000) if ts < SECONDS_LIMIT else round(ts)
    if ts_ms > policy.now_ms + policy.max_future_skew_ms:
        raise _reject("clock_skew", f"ts is {ts_ms - policy.now_ms} ms in the future")
    if ts_ms < policy.now_ms - policy.max_past_skew_ms:
        raise _reject("clock_skew", f"ts is {policy.now_ms - ts_ms} ms in the past")
    return ts_ms


def _iso_ms(text: str) -> int:
    if len(text) > 40:
        raise _reject("bad_timestamp", "ts string is too long for an ISO-8601 time")
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError as exc:
        raise _reject("bad_timestamp", f"ts {_show(text)} is not an ISO-8601 time") from exc
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise _reject("bad_timestamp", f"ts {_show(text)} has no UTC offset")
    return (moment - _EPOCH) // _ONE_MS


def _text(value: str | None, policy: Policy) -> str | None:
    """Free text made safe to store and show: no control characters, bounded length."""
    if value is None:
        return None
    text = _UNPRINTABLE.sub("", _LINE_BREAKS.sub(" ", value)).strip()[:policy.max_text_len].rstrip()
    return text or None


def _symbol(name: str, value: str | None, symbols: tuple[str, ...]) -> str | None:
    """An Avro enum symbol from lenient input: any case, '-' or ' ' for '_'."""
    if value is None:
        return None
    symbol = value.strip().upper().replace("-", "_").replace(" ", "_")
    if symbol not in symbols:
        raise _reject("unknown_enum", f"{name} {_show(value)} is not one of {', '.join(symbols)}")
    return symbol


def _topic_segment(mqtt_topic: str | None, from_end: int) -> str | None:
    """A segment of a three-level MQTT topic, counted from the end (1: the last)."""
    parts = (mqtt_topic or "").split("/")
    return parts[-from_end] if len(parts) >= 3 and parts[-from_end] else None


def _required(name: str, value: Any) -> Any:
    if value is None:
        raise _reject("missing_field", f"field {name!r} is missing")
    return value


def _position(wire: _PositionWire) -> tuple[float | None, float | None]:
    lat = _one_of(wire.lat, wire.latitude, "lat and latitude")
    lon = _one_of(wire.lon, wire.longitude, "lon and longitude")
    if (lat is None) != (lon is None):
        raise _reject("missing_field", "field 'lon' is missing" if lon is None else "field 'lat' is missing")
    return lat, lon


# -- one builder per kind: wire Struct in, output record out ---------------------------------
#
# Each passes the five fields every event starts with first, in schema order, so their
# checks run in that order (tenant, device id, ts) and before the record's own ``_required``.

def _guard_position(wire: _GuardWire, meta: RawMeta, policy: Policy) -> GuardPosition:
    lat, lon = _position(wire)
    return guard_position(
        event_id=meta.msg_id, tenant=_tenant(wire, policy), device_id=_device_id(wire, meta),
        ts_ms=_ts_ms(wire.ts, policy), received_ms=meta.received_ms,
        lat=_required("lat", lat), lon=lon, accuracy_m=wire.accuracy_m, speed_mps=wire.speed_mps,
        heading_deg=wire.heading_deg, altitude_m=wire.altitude_m,
        # filled in by geofence enrichment
        fences=[], in_site=None, violation=False)


def _telemetry(wire: _TelemetryWire, meta: RawMeta, policy: Policy) -> Telemetry:
    signal = None if wire.signal_dbm is None else round(wire.signal_dbm)
    return telemetry(
        event_id=meta.msg_id, tenant=_tenant(wire, policy), device_id=_device_id(wire, meta),
        ts_ms=_ts_ms(wire.ts, policy), received_ms=meta.received_ms,
        battery_pct=wire.battery_pct, charging=wire.charging, signal_dbm=signal, temperature_c=wire.temperature_c,
        firmware=_text(wire.firmware, policy))


def _sensor_reading(wire: _SensorWire, meta: RawMeta, policy: Policy) -> SensorReading:
    kind = _symbol("kind", wire.kind or _topic_segment(meta.mqtt_topic, 1), SENSOR_KINDS)
    if wire.site_id is not None and not DEVICE_ID.fullmatch(wire.site_id):
        raise _reject("bad_id", f"site_id {_show(wire.site_id)} is not 1-128 of A-Z a-z 0-9 _ . -")
    state = _text(wire.state, policy)
    return sensor_reading(
        event_id=meta.msg_id, tenant=_tenant(wire, policy), device_id=_device_id(wire, meta),
        ts_ms=_ts_ms(wire.ts, policy), received_ms=meta.received_ms,
        kind=_required("kind", kind), site_id=wire.site_id, value=wire.value, unit=_text(wire.unit, policy),
        state=state and state.lower())


def _device_alert(wire: _AlertWire, meta: RawMeta, policy: Policy) -> DeviceAlert:
    kind = _required("kind", _symbol("kind", wire.kind or _topic_segment(meta.mqtt_topic, 2), ALERT_KINDS))
    severity = _symbol("severity", wire.severity, SEVERITIES) or DEFAULT_SEVERITY.get(kind, "HIGH")
    lat, lon = _position(wire)
    return device_alert(
        event_id=meta.msg_id, tenant=_tenant(wire, policy), device_id=_device_id(wire, meta),
        ts_ms=_ts_ms(wire.ts, policy), received_ms=meta.received_ms,
        kind=kind, severity=severity, lat=lat, lon=lon, message=_text(wire.message, policy), rule=None,
        cause_event_id=None)


_METRIC_NAME = re.compile(r"[A-Za-z0-9_.:/-]{1,128}")


def _system_health(wire: _SystemWire, meta: RawMeta, policy: Policy) -> SystemHealth:
    metrics = wire.metrics or {}
    for name in metrics:
        if not _METRIC_NAME.fullmatch(name):
            raise _reject("bad_id", f"metric name {_show(name)} is not 1-128 of A-Z a-z 0-9 _ . : / -")
    return system_health(
        event_id=meta.msg_id, tenant=_tenant(wire, policy), device_id=_device_id(wire, meta),
        ts_ms=_ts_ms(wire.ts, policy), received_ms=meta.received_ms,
        status=_symbol("status", wire.status, HEALTH_STATUSES), detail=_text(wire.detail, policy),
        metrics=dict(metrics))


@dataclass(frozen=True)
class _Contract:
    """One kind's wire Struct, output record, builder, fast decoder and fields for the slow path."""

    wire_type: type[_Wire]
    schema: str
    build: Callable[[Any, RawMeta, Policy], dict[str, Any]]
    decoder: msgspec.json.Decoder = field(init=False)
    fields: tuple[mi.Field, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "decoder", msgspec.json.Decoder(self.wire_type))
        object.__setattr__(self, "fields", mi.type_info(self.wire_type).fields)


_CONTRACTS: dict[RawKind, _Contract] = {
    RawKind.DEVICE: _Contract(_TelemetryWire, TELEMETRY, _telemetry),
    RawKind.GUARD: _Contract(_GuardWire, GUARD_POSITION, _guard_position),
    RawKind.SENSOR: _Contract(_SensorWire, SENSOR_READING, _sensor_reading),
    RawKind.ALERT: _Contract(_AlertWire, DEVICE_ALERT, _device_alert),
    RawKind.SYSTEM: _Contract(_SystemWire, SYSTEM_HEALTH, _system_health),
}
SCHEMA_FOR_KIND = {kind: contract.schema for kind, contract in _CONTRACTS.items()}
