"""Validation of raw device payloads: bytes in, an Avro-ready record or a reason out; pure.

``validate(kind, payload, meta, policy)`` returns ``Valid`` (a dict with every
field of the output Avro record, the record's full name and the Kafka key) or
``Refused`` (a stable reason code of ``REASONS`` and a short detail naming the
field, at most ``MAX_DETAIL_CHARS``, never the whole payload). It
never reads the clock (``policy.now_ms`` is passed in), never raises for bad
input, and raises for nothing but our own bugs. The payload contracts, one
example per kind, are in ``docs/payloads.md``.

Reason codes (``REASONS``), checked in this order:

    unknown_kind   the bridge forwarded the record under a catch-all rule (an MQTT topic no contract names)
    too_large      payload longer than ``policy.max_payload_bytes``
    not_utf8       payload bytes are not UTF-8
    too_deep       JSON nested deeper than ``policy.max_depth``
    not_json       not one JSON document (also: empty payload)
    not_object     JSON, but not an object
    duplicate_key  a field the contract names appears twice in the object (JSON decoders keep the last)
    missing_field  a required field is absent (``ts``, ``lat``/``lon``, ``status``, the device id ...)
    wrong_type     a field has the wrong JSON type (``true`` for a number, ``"13.4"`` for a number ...)
    not_finite     a number is NaN or infinite (``NaN`` literals, ``1e999``)
    out_of_range   a number is outside its documented range
    conflict       two spellings of one field disagree (``lat`` and ``latitude``, ``tenant`` and ``client_id``)
    key_mismatch   the payload's ``device_id`` differs from the id in the MQTT topic (the record key)
    bad_id         a tenant, device, site id or metric name does not match its pattern
    unknown_enum   a kind, severity or status that is not a symbol of the Avro enum
    bad_timestamp  ``ts`` is negative, or a string that is not ISO-8601 with a UTC offset (or holds a control character)
    clock_skew     ``ts`` lies too far ahead of or behind ``policy.now_ms``

A device alert is never refused for its clock: without a usable ``ts`` (missing, of
the wrong type, unparseable, skewed) it takes the bridge's receipt time and
``ts_source`` ``received``. On ``alert/{kind}/...`` the topic's kind wins over the
payload's, which is kept in ``claimed_kind``; a life-safety kind (one whose default
severity is CRITICAL), or a kind the payload contradicted, is never given a lower
severity than its default (the payload's is kept in ``claimed_severity``), and an
unknown severity takes the default instead of refusing the alert.

The older fleet's dialect is accepted beside today's names (``docs/payloads.md``):
``timestamp`` for ``ts``, ``accuracy`` for ``accuracy_m``, ``battery`` for
``battery_pct``, ``signal`` (percent) as ``signal_pct``, ``alert_type`` for ``kind``,
``guard_id`` for ``device_id``, and integer ids carried as their decimal string.

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
from guardstream.streams.payload_checks import (  # noqa: F401  (json_depth: part of this module's interface)
    MAX_DETAIL_CHARS, check_envelope, check_no_duplicates, clip, decode_slowly, json_depth, json_type, reject, show,
)
from guardstream.records import (
    DEVICE_ALERT, GUARD_POSITION, SENSOR_READING, SYSTEM_HEALTH, TELEMETRY, DeviceAlert, GuardPosition,
    SensorReading, SystemHealth, Telemetry, device_alert, guard_position, sensor_reading, system_health, telemetry,
)

REASONS = frozenset({
    "too_large", "not_utf8", "too_deep", "not_json", "not_object", "missing_field", "wrong_type",
    "not_finite", "out_of_range", "conflict", "key_mismatch", "bad_id", "unknown_enum", "bad_timestamp",
    "clock_skew", "duplicate_key", "unknown_kind",
})
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
# Kinds where a person or a site is in danger: never given less than CRITICAL.
LIFE_SAFETY_KINDS = frozenset(kind for kind, severity in DEFAULT_SEVERITY.items() if severity == "CRITICAL")
_SEVERITY_RANK = {severity: rank for rank, severity in enumerate(reversed(SEVERITIES))}  # LOW 0 .. CRITICAL 3
# What the topic of an MQTT presence message (a last will) says about the device.
PRESENCE_STATUS = {"online": "OK", "offline": "DOWN"}


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


class RawMeta(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """Where a raw record came from: the Kafka record and the bridge's headers."""

    key: str | None  # device id from the MQTT topic (the record key)
    mqtt_topic: str | None
    msg_id: str  # the bridge's message id; becomes the event_id
    received_ms: int  # when the bridge received the MQTT message
    source_topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    catch_all: str | None = None  # the catch-all bridge rule that forwarded it (header ``bridge.catch_all``)


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


class Valid(msgspec.Struct, frozen=True):
    record: dict[str, Any]  # every field of the Avro record ``schema``, enums as symbol strings
    schema: str  # Avro full name, e.g. guardstream.GuardPosition
    key: str  # device id: the Kafka key of the output record


# -- the wire contracts: what devices send, as typed Structs -------------------------

Latitude = Annotated[float, msgspec.Meta(ge=-90, le=90)]
Longitude = Annotated[float, msgspec.Meta(ge=-180, le=180)]
NonNegative = Annotated[float, msgspec.Meta(ge=0)]


# The older fleet sends integer ids; they are carried as their decimal string.
Id = str | int


class _Wire(msgspec.Struct, kw_only=True):
    ts: int | float | str | None = None  # required, as ts or timestamp: checked by the builders
    timestamp: int | float | str | None = None  # the older fleet's name for ts
    tenant: str | None = None
    client_id: Id | None = None  # older firmware's name for the tenant
    device_id: Id | None = None
    guard_id: Id | None = None  # the older fleet's name for a guard device's id


class _PositionWire(_Wire):
    lat: Latitude | None = None
    lon: Longitude | None = None
    latitude: Latitude | None = None  # the long spellings some trackers send
    longitude: Longitude | None = None


class _GuardWire(_PositionWire):
    accuracy_m: NonNegative | None = None
    accuracy: NonNegative | None = None  # the older fleet's name for accuracy_m
    speed_mps: NonNegative | None = None
    heading_deg: Annotated[float, msgspec.Meta(ge=0, lt=360)] | None = None
    altitude_m: float | None = None


Percent = Annotated[float, msgspec.Meta(ge=0, le=100)]


class _TelemetryWire(_Wire):
    battery_pct: Percent | None = None
    battery: Percent | None = None  # the older fleet's name for battery_pct
    signal: Percent | None = None  # the older fleet's signal quality in percent: kept as signal_pct
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
    # An alert is never refused for its clock or for what its payload claims beside the
    # topic: these take any JSON value, and the builder decides what a bad one means.
    ts: Any = None
    timestamp: Any = None
    kind: Any = None
    alert_type: Any = None  # the older fleet's name for kind
    severity: Any = None
    message: str | None = None


class _PresenceWire(_Wire):
    """What a presence message (``.../online``, ``.../offline``) may carry besides its topic."""

    status: str | None = None  # online or offline, when the topic does not say


class _SystemWire(_Wire):
    status: str
    detail: str | None = None
    metrics: dict[str, float] | None = None


# -- the entry point ------------------------------------------------------------------

def validate(kind: RawKind, payload: bytes, meta: RawMeta, policy: Policy) -> Valid | Refused:
    """Check one raw payload against the contract of ``kind`` and build its output record."""
    contract = _CONTRACTS[kind]
    try:
        if meta.catch_all is not None and not contract.takes_any_topic:
            # A catch-all rule forwards what no rule names, so that it is decided here, not lost
            # at the bridge; an alert still has a contract, anything else has none.
            raise reject("unknown_kind", f"MQTT topic {show(meta.mqtt_topic)} has no payload contract")
        if contract.has_presence and _presence(meta.mqtt_topic) is not None:
            contract = _PRESENCE
        check_envelope(payload, policy)
        if contract is _PRESENCE and not payload.lstrip().startswith(b"{"):
            wire = _PresenceWire()  # a last will is often bare text ("offline") or nothing
        else:
            try:
                wire = contract.decoder.decode(payload)
            except (msgspec.MsgspecError, RecursionError):
                word = payload.strip().lower().decode("ascii", "replace") if contract.bare_presence else ""
                if word in PRESENCE_STATUS:  # a last will on a telemetry topic: bare "offline"
                    contract, wire = _PRESENCE, _PresenceWire(status=word)
                else:
                    # Refused on the fast path: decode again, slowly, to name the reason.
                    wire = decode_slowly(payload, contract)
            else:
                # (inline: the fast path pays for every call)
                values = msgspec.structs.astuple(wire)
                colons = payload.count(b":")
                if colons != len(values) - values.count(None):
                    check_no_duplicates(payload, wire, values, colons, contract)
        record = contract.build(wire, meta, policy)
    except InputError as exc:
        return Refused(exc.reason, clip(exc.detail))
    return Valid(record, contract.schema, record["device_id"])




# -- normalising fields shared by every kind ----------------------------------------------

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_ONE_MS = dt.timedelta(milliseconds=1)
_LINE_BREAKS = re.compile(r"[\t\n\r]+")
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")  # controls; lone surrogates break UTF-8


def _one_of(first: Any, second: Any, names: str) -> Any:
    """The value of a field that has two accepted spellings."""
    if first is not None and second is not None and first != second:
        raise reject("conflict", f"{names} disagree")
    return first if first is not None else second


# Ids already seen to match their pattern: a fleet sends the same few thousand ids again and
# again, and a set lookup costs a fraction of the match (which paid for the duplicate-key check).
_GOOD_TENANTS: set[str] = set()
_GOOD_DEVICE_IDS: set[str] = set()
_GOOD_IDS_MAX = 100_000


def _remember(good: set[str], text: str) -> None:
    if len(good) >= _GOOD_IDS_MAX:
        good.clear()
    good.add(text)


def _tenant(wire: _Wire, policy: Policy) -> str:
    tenant = wire.tenant
    client_id = wire.client_id
    if client_id is not None:  # inline rather than a helper per id: this runs for every record
        tenant = _one_of(tenant, client_id if client_id.__class__ is str else str(client_id), "tenant and client_id")
    if tenant is None:
        return policy.default_tenant
    if tenant not in _GOOD_TENANTS:
        if not TENANT_ID.fullmatch(tenant):
            raise reject("bad_id", f"tenant {show(tenant)} is not 1-64 of A-Z a-z 0-9 _ . -")
        _remember(_GOOD_TENANTS, tenant)
    return tenant


def _device_id(wire: _Wire, meta: RawMeta) -> str:
    named = wire.device_id
    if named is not None and named.__class__ is not str:
        named = str(named)  # the older fleet's integer ids are carried as their decimal string
    guard_id = wire.guard_id
    if guard_id is not None:
        named = _one_of(named, guard_id if guard_id.__class__ is str else str(guard_id), "device_id and guard_id")
    if meta.key is not None and named is not None and named != meta.key:
        raise reject("key_mismatch", f"device_id {show(named)} differs from the topic's {show(meta.key)}")
    device_id = meta.key if meta.key is not None else named
    if device_id is None:
        raise reject("missing_field", "field 'device_id' is missing and the record has no key")
    if device_id not in _GOOD_DEVICE_IDS:
        if not DEVICE_ID.fullmatch(device_id):
            raise reject("bad_id", f"device id {show(device_id)} is not 1-128 of A-Z a-z 0-9 _ . -")
        _remember(_GOOD_DEVICE_IDS, device_id)
    return device_id


def _device_ts_ms(wire: _Wire, policy: Policy) -> int:
    """The device's time of the event, from ``ts`` or ``timestamp``."""
    return _ts_ms(wire.ts if wire.timestamp is None else _either_ts(wire), policy)


def _either_ts(wire: _Wire) -> Any:
    return _one_of(wire.ts, wire.timestamp, "ts and timestamp")


def _ts_ms(ts: Any, policy: Policy) -> int:
    kind = ts.__class__
    if kind is str:
        ts_ms = _iso_ms(ts)
    elif kind is not int and (kind is not float or not math.isfinite(ts)):  # an alert's ts may be any JSON value
        if ts is None:
            raise reject("missing_field", "field 'ts' is missing")
        if kind is float:
            raise reject("not_finite", "ts is not a finite number")
        raise reject("wrong_type", f"ts must be a number or a string, not {json_type(ts)}")
    elif ts < 0:
        raise reject("bad_timestamp", f"ts {show(ts)} is negative")
    else:
        ts_ms = round(ts * 1000) if ts < SECONDS_LIMIT else round(ts)
    if ts_ms > policy.now_ms + policy.max_future_skew_ms:
        raise reject("clock_skew", f"ts is {ts_ms - policy.now_ms} ms in the future")
    if ts_ms < policy.now_ms - policy.max_past_skew_ms:
        raise reject("clock_skew", f"ts is {policy.now_ms - ts_ms} ms in the past")
    return ts_ms


def _iso_ms(text: str) -> int:
    if len(text) > 40:
        raise reject("bad_timestamp", "ts string is too long for an ISO-8601 time")
    if _UNPRINTABLE.search(text):
        # datetime.fromisoformat stops reading at a NUL: "...Z\x00garbage" would pass
        raise reject("bad_timestamp", "ts string holds a control character")
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError as exc:
        raise reject("bad_timestamp", f"ts {show(text)} is not an ISO-8601 time") from exc
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise reject("bad_timestamp", f"ts {show(text)} has no UTC offset")
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
        raise reject("unknown_enum", f"{name} {show(value)} is not one of {', '.join(symbols)}")
    return symbol


def _topic_segment(mqtt_topic: str | None, from_end: int) -> str | None:
    """A segment of a three-level MQTT topic, counted from the end (1: the last)."""
    parts = (mqtt_topic or "").split("/")
    return parts[-from_end] if len(parts) >= 3 and parts[-from_end] else None


def _required(name: str, value: Any) -> Any:
    if value is None:
        raise reject("missing_field", f"field {name!r} is missing")
    return value


def _position(wire: _PositionWire) -> tuple[float | None, float | None]:
    lat = _one_of(wire.lat, wire.latitude, "lat and latitude")
    lon = _one_of(wire.lon, wire.longitude, "lon and longitude")
    if (lat is None) != (lon is None):
        raise reject("missing_field", "field 'lon' is missing" if lon is None else "field 'lat' is missing")
    return lat, lon


# -- one builder per kind: wire Struct in, output record out ---------------------------------
#
# Each passes the five fields every event starts with first, in schema order, so their
# checks run in that order (tenant, device id, ts) and before the record's own ``_required``.

def _guard_position(wire: _GuardWire, meta: RawMeta, policy: Policy) -> GuardPosition:
    lat, lon = _position(wire)
    return guard_position(
        event_id=meta.msg_id, tenant=_tenant(wire, policy), device_id=_device_id(wire, meta),
        ts_ms=_ts_ms(wire.ts if wire.timestamp is None else _either_ts(wire), policy), received_ms=meta.received_ms,
        lat=_required("lat", lat), lon=lon, accuracy_m=wire.accuracy_m if wire.accuracy is None else _one_of(
            wire.accuracy_m, wire.accuracy, "accuracy_m and accuracy"),
        speed_mps=wire.speed_mps,
        heading_deg=wire.heading_deg, altitude_m=wire.altitude_m,
        # filled in by geofence enrichment
        fences=[], in_site=None, violation=False)


def _telemetry(wire: _TelemetryWire, meta: RawMeta, policy: Policy) -> Telemetry:
    signal = None if wire.signal_dbm is None else round(wire.signal_dbm)
    return telemetry(
        event_id=meta.msg_id, tenant=_tenant(wire, policy), device_id=_device_id(wire, meta),
        ts_ms=_ts_ms(wire.ts if wire.timestamp is None else _either_ts(wire), policy), received_ms=meta.received_ms,
        battery_pct=wire.battery_pct if wire.battery is None else _one_of(
            wire.battery_pct, wire.battery, "battery_pct and battery"), charging=wire.charging,
        signal_dbm=signal, temperature_c=wire.temperature_c, firmware=_text(wire.firmware, policy),
        signal_pct=wire.signal)


def _sensor_reading(wire: _SensorWire, meta: RawMeta, policy: Policy) -> SensorReading:
    kind = _symbol("kind", wire.kind or _topic_segment(meta.mqtt_topic, 1), SENSOR_KINDS)
    if wire.site_id is not None and not DEVICE_ID.fullmatch(wire.site_id):
        raise reject("bad_id", f"site_id {show(wire.site_id)} is not 1-128 of A-Z a-z 0-9 _ . -")
    state = _text(wire.state, policy)
    return sensor_reading(
        event_id=meta.msg_id, tenant=_tenant(wire, policy), device_id=_device_id(wire, meta),
        ts_ms=_ts_ms(wire.ts if wire.timestamp is None else _either_ts(wire), policy), received_ms=meta.received_ms,
        kind=_required("kind", kind), site_id=wire.site_id, value=wire.value, unit=_text(wire.unit, policy),
        state=state and state.lower())


def _device_alert(wire: _AlertWire, meta: RawMeta, policy: Policy) -> DeviceAlert:
    kind, claimed_kind = _alert_kind(wire, meta)
    severity, claimed_severity = _alert_severity(wire.severity, kind, contradicted=claimed_kind is not None)
    lat, lon = _position(wire)
    tenant, device_id = _tenant(wire, policy), _device_id(wire, meta)
    ts_ms, ts_source = _ts_or_received(wire, meta, policy)
    return device_alert(
        event_id=meta.msg_id, tenant=tenant, device_id=device_id, ts_ms=ts_ms, received_ms=meta.received_ms,
        kind=kind, severity=severity, lat=lat, lon=lon, message=_text(wire.message, policy), rule=None,
        cause_event_id=None, ts_source=ts_source, claimed_kind=_claim(claimed_kind, policy),
        claimed_severity=_claim(claimed_severity, policy))


def _ts_or_received(wire: _Wire, meta: RawMeta, policy: Policy) -> tuple[int, str]:
    """The device's time and ``device``, or, when it sent none that is usable, the bridge's and ``received``."""
    try:
        return _device_ts_ms(wire, policy), "device"
    except InputError:
        return meta.received_ms, "received"


def _known_symbol(value: Any, symbols: tuple[str, ...]) -> str | None:
    if value.__class__ is not str:
        return None
    symbol = value.strip().upper().replace("-", "_").replace(" ", "_")
    return symbol if symbol in symbols else None


def _alert_topic_kind(mqtt_topic: str | None) -> str | None:
    """The kind segment of an alert's MQTT topic: ``alert/{kind}/...``, or the middle one of another rule's."""
    parts = (mqtt_topic or "").split("/")
    if parts[0] == "alert" and len(parts) >= 2:
        return parts[1] or None
    return _topic_segment(mqtt_topic, 2)


def _alert_kind(wire: _AlertWire, meta: RawMeta) -> tuple[str, Any]:
    """The alert's kind, and what the payload claimed instead (None when it agreed or said nothing).

    The topic's kind wins: a payload must not turn a panic into something less.
    Without a known kind in the topic, the payload decides; of two payload spellings
    that disagree, the one with the higher default severity.
    """
    claims = [value for value in (wire.kind, wire.alert_type) if value is not None]
    from_topic = _alert_topic_kind(meta.mqtt_topic)
    kind = _known_symbol(from_topic, ALERT_KINDS)
    if kind is None:
        known = [symbol for value in claims if (symbol := _known_symbol(value, ALERT_KINDS))]
        if not known:
            if claims:
                if claims[0].__class__ is not str:
                    raise reject("wrong_type", f"kind must be a string, not {json_type(claims[0])}")
                raise reject("unknown_enum", f"kind {show(claims[0])} is not one of {', '.join(ALERT_KINDS)}")
            _symbol("kind", from_topic, ALERT_KINDS)  # an unknown kind in the topic: unknown_enum
            raise reject("missing_field", "field 'kind' is missing")
        kind = max(known, key=lambda k: _SEVERITY_RANK[DEFAULT_SEVERITY.get(k, "HIGH")])
    return kind, next((value for value in claims if _known_symbol(value, ALERT_KINDS) != kind), None)


def _alert_severity(claimed: Any, kind: str, contradicted: bool) -> tuple[str, Any]:
    """The alert's severity, and the payload's when it was not used (unknown, or below the floor).

    A life-safety kind, or one the payload contradicted, never gets less than its default.
    """
    default = DEFAULT_SEVERITY.get(kind, "HIGH")
    severity = _known_symbol(claimed, SEVERITIES)
    if severity is None:
        return default, claimed
    if (kind in LIFE_SAFETY_KINDS or contradicted) and _SEVERITY_RANK[severity] < _SEVERITY_RANK[default]:
        return default, claimed
    return severity, None


def _claim(value: Any, policy: Policy) -> str | None:
    """What a payload claimed, kept as text: any JSON value, made safe to store."""
    if value is None:
        return None
    return _text(value if value.__class__ is str else json.dumps(value), policy)


_METRIC_NAME = re.compile(r"[A-Za-z0-9_.:/-]{1,128}")


def _system_health(wire: _SystemWire, meta: RawMeta, policy: Policy) -> SystemHealth:
    metrics = wire.metrics or {}
    for name in metrics:
        if not _METRIC_NAME.fullmatch(name):
            raise reject("bad_id", f"metric name {show(name)} is not 1-128 of A-Z a-z 0-9 _ . : / -")
    return system_health(
        event_id=meta.msg_id, tenant=_tenant(wire, policy), device_id=_device_id(wire, meta),
        ts_ms=_ts_ms(wire.ts if wire.timestamp is None else _either_ts(wire), policy), received_ms=meta.received_ms,
        status=_symbol("status", wire.status, HEALTH_STATUSES), detail=_text(wire.detail, policy),
        metrics=dict(metrics))


def _presence(mqtt_topic: str | None) -> str | None:
    """``online`` or ``offline`` for a presence message's topic (``device/{id}/online`` ...), else None."""
    last = (mqtt_topic or "").rpartition("/")[2]
    return last if last in PRESENCE_STATUS else None


def _presence_health(wire: _PresenceWire, meta: RawMeta, policy: Policy) -> SystemHealth:
    """A device's last will or birth message: its topic says online or offline (or, on a
    telemetry topic such as ``device/{id}/status``, its bare text payload).

    A last will is stored by the broker when the device connects, so any time it carries is
    stale or absent: without a usable one, the bridge's receipt time (``ts_source`` received).
    """
    presence = _presence(meta.mqtt_topic) or (wire.status if wire.status in PRESENCE_STATUS else "offline")
    tenant, device_id = _tenant(wire, policy), _device_id(wire, meta)
    ts_ms, ts_source = _ts_or_received(wire, meta, policy)
    return system_health(
        event_id=meta.msg_id, tenant=tenant, device_id=device_id, ts_ms=ts_ms, received_ms=meta.received_ms,
        status=PRESENCE_STATUS[presence], detail=presence, metrics={}, ts_source=ts_source)


@dataclass(frozen=True)
class _Contract:
    """One kind's wire Struct, output record, builder, fast decoder and fields for the slow path."""

    wire_type: type[_Wire]
    schema: str
    build: Callable[[Any, RawMeta, Policy], dict[str, Any]]
    takes_any_topic: bool = False  # records of a catch-all bridge rule still fit (alerts name their kind)
    has_presence: bool = False  # records of presence topics (.../online, .../offline) have their own contract
    bare_presence: bool = False  # a bare "online" or "offline" payload is a presence message
    decoder: msgspec.json.Decoder = field(init=False)
    fields: tuple[mi.Field, ...] = field(init=False)
    names: frozenset[str] = field(init=False)  # the payload fields the contract names
    key_pattern: re.Pattern[bytes] = field(init=False)  # finds '"name":' of each of them

    def __post_init__(self) -> None:
        object.__setattr__(self, "decoder", msgspec.json.Decoder(self.wire_type))
        object.__setattr__(self, "fields", mi.type_info(self.wire_type).fields)
        object.__setattr__(self, "names", frozenset(f.encode_name for f in self.fields))
        keys = b"|".join(re.escape(name.encode()) for name in sorted(self.names))
        object.__setattr__(self, "key_pattern", re.compile(b'"(' + keys + b')"[ \t\n\r]*:'))


_CONTRACTS: dict[RawKind, _Contract] = {
    RawKind.DEVICE: _Contract(_TelemetryWire, TELEMETRY, _telemetry, bare_presence=True),
    RawKind.GUARD: _Contract(_GuardWire, GUARD_POSITION, _guard_position),
    RawKind.SENSOR: _Contract(_SensorWire, SENSOR_READING, _sensor_reading),
    RawKind.ALERT: _Contract(_AlertWire, DEVICE_ALERT, _device_alert, takes_any_topic=True),
    RawKind.SYSTEM: _Contract(_SystemWire, SYSTEM_HEALTH, _system_health, has_presence=True),
}
SCHEMA_FOR_KIND = {kind: contract.schema for kind, contract in _CONTRACTS.items()}


def payload_fields(kind: RawKind) -> frozenset[str]:
    """The payload fields the contract of ``kind`` reads, in either dialect."""
    return _CONTRACTS[kind].names


# raw.system records whose MQTT topic ends in /online or /offline
_PRESENCE = _Contract(_PresenceWire, SYSTEM_HEALTH, _presence_health)
