"""validation: payload bytes in, an Avro-ready record or a stable reason code out."""

from __future__ import annotations

import datetime as dt
import io
import json
import re
from pathlib import Path
from typing import Any

import fastavro
import fastavro.validation
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from guardstream.catalog import TOPICS
from guardstream.refusal import Refused
from guardstream.schemas.contracts import current_contracts
from guardstream.streams import validation
from guardstream.streams.dedup import DedupWindow
from guardstream.streams.validation import (
    ALERT_KINDS,
    DEFAULT_SEVERITY,
    MAX_DETAIL_CHARS,
    REASONS,
    SCHEMA_FOR_KIND,
    SEVERITIES,
    Policy,
    RawKind,
    RawMeta,
    Valid,
    json_depth,
    kind_for_topic,
    validate,
)

ROOT = Path(__file__).resolve().parents[2]
NOW_MS = 1_795_000_000_000  # 2026-11-18T11:06:40Z
NOW_S = NOW_MS // 1000
DAY_MS = 24 * 3_600_000
POLICY = Policy(now_ms=NOW_MS, default_tenant="fallback")
KEY = "dev-07"
MQTT_TOPIC = {
    RawKind.GUARD: f"guard/{KEY}/gps",
    RawKind.DEVICE: f"device/{KEY}/telemetry",
    RawKind.SENSOR: f"sensor/{KEY}/smoke",
    RawKind.ALERT: f"alert/panic/{KEY}",
    RawKind.SYSTEM: f"system/{KEY}/health",
}
PARSED = {name: fastavro.parse_schema(contract.schema) for name, contract in current_contracts().items()}
DROP = object()  # marks a field to leave out of a payload


def meta(kind: RawKind, **changes: Any) -> RawMeta:
    fields = {"key": KEY, "mqtt_topic": MQTT_TOPIC[kind], "msg_id": "msg-1", "received_ms": NOW_MS + 40,
              "source_topic": kind.topic.name, "partition": 0, "offset": 7, **changes}
    return RawMeta(**fields)


def encode(payload: dict[str, Any] | bytes) -> bytes:
    if isinstance(payload, bytes):
        return payload
    return json.dumps({k: v for k, v in payload.items() if v is not DROP}).encode()


def run(kind: RawKind, payload: dict[str, Any] | bytes, policy: Policy = POLICY, **meta_changes: Any):
    return validate(kind, encode(payload), meta(kind, **meta_changes), policy)


def assert_valid_record(result: Valid | Refused) -> Valid:
    """The record has exactly the schema's fields, in order, validates, and encodes."""
    assert isinstance(result, Valid), result
    schema = current_contracts()[result.schema].schema
    assert list(result.record) == [f["name"] for f in schema["fields"]]
    fastavro.validation.validate(result.record, PARSED[result.schema], raise_errors=True)
    fastavro.schemaless_writer(io.BytesIO(), PARSED[result.schema], result.record)
    assert result.key == result.record["device_id"]
    return result


def assert_outcome(result: Valid | Refused) -> None:
    if isinstance(result, Valid):
        assert_valid_record(result)
    else:
        assert isinstance(result, Refused)
        assert result.reason in REASONS
        assert 0 < len(result.detail) <= MAX_DETAIL_CHARS


# -- good payloads --------------------------------------------------------------------------

GOOD = [
    pytest.param(RawKind.GUARD,
                 {"ts": NOW_S, "lat": 52.52, "lon": 13.405, "accuracy_m": 4.5, "speed_mps": 0,
                  "heading_deg": 359.9, "altitude_m": -12.5, "tenant": "acme", "device_id": KEY},
                 {"lat": 52.52, "lon": 13.405, "accuracy_m": 4.5, "speed_mps": 0.0, "heading_deg": 359.9,
                  "altitude_m": -12.5, "tenant": "acme", "ts_ms": NOW_MS, "fences": [], "in_site": None,
                  "violation": False}, id="gps-all-fields"),
    pytest.param(RawKind.GUARD, {"ts": NOW_MS, "latitude": -90, "longitude": 180, "extra": {"x": [1]}},
                 {"lat": -90.0, "lon": 180.0, "tenant": "fallback", "accuracy_m": None}, id="gps-long-names-edges"),
    pytest.param(RawKind.GUARD, {"ts": NOW_MS, "lat": 1, "latitude": 1.0, "lon": 2, "longitude": None},
                 {"lat": 1.0, "lon": 2.0}, id="gps-both-spellings-agree"),
    pytest.param(RawKind.DEVICE,
                 {"ts": NOW_S + 0.25, "battery_pct": 100, "charging": True, "signal_dbm": -87.6,
                  "temperature_c": -60, "firmware": "2.4.1", "client_id": "acme"},
                 {"ts_ms": NOW_MS + 250, "battery_pct": 100.0, "charging": True, "signal_dbm": -88,
                  "temperature_c": -60.0, "firmware": "2.4.1", "tenant": "acme"}, id="telemetry-all-fields"),
    pytest.param(RawKind.DEVICE, {"ts": "2026-11-18T11:06:40Z"},
                 {"ts_ms": NOW_MS, "battery_pct": None, "charging": None, "signal_dbm": None, "firmware": None},
                 id="telemetry-only-ts"),
    pytest.param(RawKind.SENSOR, {"ts": NOW_MS, "state": "DETECTED", "site_id": "acme-hq"},
                 {"kind": "SMOKE", "state": "detected", "site_id": "acme-hq", "value": None},
                 id="sensor-kind-from-topic"),
    pytest.param(RawKind.SENSOR, {"ts": NOW_MS, "kind": "glass-break", "value": 1},
                 {"kind": "GLASS_BREAK", "value": 1.0}, id="sensor-lenient-enum"),
    pytest.param(RawKind.SENSOR, {"ts": NOW_MS, "kind": "Temperature", "value": 21.5, "unit": "Cel"},
                 {"kind": "TEMPERATURE", "value": 21.5, "unit": "Cel"}, id="sensor-temperature"),
    pytest.param(RawKind.ALERT, {"ts": NOW_MS},
                 {"kind": "PANIC", "severity": "CRITICAL", "lat": None, "lon": None, "rule": None,
                  "cause_event_id": None}, id="alert-kind-from-topic"),
    pytest.param(RawKind.ALERT, {"ts": NOW_MS, "kind": "low_battery", "lat": 1, "lon": 2, "message": "12 %"},
                 {"kind": "PANIC", "severity": "CRITICAL", "lat": 1.0, "lon": 2.0, "message": "12 %",
                  "claimed_kind": "low_battery", "claimed_severity": None, "ts_source": "device"},
                 id="alert-topic-kind-wins-over-the-payload"),
    pytest.param(RawKind.ALERT, {"ts": NOW_MS, "kind": "sos", "severity": "low"},
                 {"kind": "PANIC", "severity": "CRITICAL", "claimed_kind": "sos", "claimed_severity": "low"},
                 id="alert-severity-never-below-a-life-safety-default"),
    pytest.param(RawKind.SYSTEM,
                 {"ts": "2026-11-18T12:06:40+01:00", "status": "degraded", "detail": "slow",
                  "metrics": {"cpu_ratio": 0.5, "queue_depth": 3}},
                 {"status": "DEGRADED", "detail": "slow", "metrics": {"cpu_ratio": 0.5, "queue_depth": 3.0},
                  "ts_ms": NOW_MS}, id="health-all-fields"),
    pytest.param(RawKind.SYSTEM, {"ts": NOW_MS, "status": "OK", "metrics": None},
                 {"status": "OK", "detail": None, "metrics": {}}, id="health-minimal"),
]


@pytest.mark.parametrize(("kind", "payload", "expected"), GOOD)
def test_good_payload_gives_the_avro_record(kind: RawKind, payload: dict, expected: dict) -> None:
    result = assert_valid_record(run(kind, payload))
    assert result.schema == SCHEMA_FOR_KIND[kind]
    assert result.key == KEY
    assert result.record["event_id"] == "msg-1"
    assert result.record["received_ms"] == NOW_MS + 40
    assert {k: result.record[k] for k in expected} == expected


def test_every_kind_has_a_good_example() -> None:
    assert {p.values[0] for p in GOOD} == set(RawKind)


@pytest.mark.parametrize(("ts", "expected_ms"), [
    (NOW_S, NOW_MS),
    (NOW_S + 0.5, NOW_MS + 500),
    (NOW_MS, NOW_MS),
    (float(NOW_MS + 1), NOW_MS + 1),
    ("2026-11-18T11:06:40Z", NOW_MS),
    ("2026-11-18T11:06:40.123+00:00", NOW_MS + 123),
    ("2026-11-18T13:06:40+02:00", NOW_MS),
    ("2026-11-18T06:06:40-05:00", NOW_MS),
    (NOW_MS + 5 * 60_000, NOW_MS + 5 * 60_000),  # the furthest future allowed
    (NOW_MS - 7 * DAY_MS, NOW_MS - 7 * DAY_MS),  # the furthest past allowed
])
def test_timestamp_forms_normalise_to_epoch_ms(ts: Any, expected_ms: int) -> None:
    result = assert_valid_record(run(RawKind.GUARD, {"ts": ts, "lat": 0, "lon": 0}))
    assert result.record["ts_ms"] == expected_ms


def test_key_from_payload_when_the_record_has_none() -> None:
    result = assert_valid_record(run(RawKind.DEVICE, {"ts": NOW_MS, "device_id": "radio-1"}, key=None))
    assert result.key == "radio-1"


def test_free_text_loses_control_characters_and_is_cut() -> None:
    message = "  Help\x00 me\nnow\t\u0007 \\ud800 " + "x" * 600
    raw = json.dumps({"ts": NOW_MS, "message": message}).encode().replace(b"\\\\ud800", b"\\ud800")
    result = assert_valid_record(validate(RawKind.ALERT, raw, meta(RawKind.ALERT), POLICY))
    text = result.record["message"]
    assert text.startswith("Help me now  ") and len(text) == 500
    assert not re.search(r"[\x00-\x1f\ud800-\udfff]", text)
    short = Policy(now_ms=NOW_MS, max_text_len=4)
    assert run(RawKind.DEVICE, {"ts": NOW_MS, "firmware": "2.4.1-beta"}, short).record["firmware"] == "2.4."
    assert run(RawKind.DEVICE, {"ts": NOW_MS, "firmware": " \x01 "}).record["firmware"] is None


def test_same_input_same_output() -> None:
    payload = {"ts": NOW_S, "lat": 1, "lon": 2}
    assert run(RawKind.GUARD, payload) == run(RawKind.GUARD, payload)


# -- bad payloads -----------------------------------------------------------------------------

GPS = {"ts": NOW_MS, "lat": 1.0, "lon": 2.0}


def gps(**changes: Any) -> dict[str, Any]:
    return {**GPS, **changes}


BAD = [
    (RawKind.GUARD, b"{" + b" " * 70_000 + b"}", {}, "too_large"),
    (RawKind.GUARD, b'{"ts": "\xff", "lat": 1, "lon": 2}', {}, "not_utf8"),
    (RawKind.GUARD, b'{"ts": 1, "x": ' + b"[" * 8 + b"]" * 8 + b"}", {}, "too_deep"),
    (RawKind.GUARD, b"", {}, "not_json"),
    (RawKind.GUARD, b'{"ts": 1795000000000', {}, "not_json"),
    (RawKind.GUARD, b'{"ts": 1795000000000} {}', {}, "not_json"),
    (RawKind.GUARD, b"\xef\xbb\xbf{}", {}, "not_json"),
    (RawKind.GUARD, b"{'ts': 1}", {}, "not_json"),
    (RawKind.GUARD, b"[1, 2]", {}, "not_object"),
    (RawKind.GUARD, b"null", {}, "not_object"),
    (RawKind.GUARD, b'"text"', {}, "not_object"),
    (RawKind.GUARD, gps(ts=DROP), {}, "missing_field"),
    (RawKind.GUARD, gps(lat=DROP), {}, "missing_field"),
    (RawKind.GUARD, gps(lon=None), {}, "missing_field"),
    (RawKind.ALERT, {"ts": NOW_MS, "lat": 1.0}, {}, "missing_field"),
    (RawKind.DEVICE, {"ts": NOW_MS}, {"key": None}, "missing_field"),
    (RawKind.SYSTEM, {"ts": NOW_MS}, {}, "missing_field"),
    (RawKind.SENSOR, {"ts": NOW_MS}, {"mqtt_topic": None}, "missing_field"),
    (RawKind.ALERT, {"ts": NOW_MS}, {"mqtt_topic": "alert"}, "missing_field"),
    (RawKind.GUARD, gps(lat="52.5"), {}, "wrong_type"),
    (RawKind.GUARD, gps(lat=True), {}, "wrong_type"),
    (RawKind.GUARD, gps(ts=True), {}, "wrong_type"),
    (RawKind.GUARD, gps(ts=[NOW_MS]), {}, "wrong_type"),
    (RawKind.GUARD, gps(tenant=5), {}, "wrong_type"),
    (RawKind.DEVICE, {"ts": NOW_MS, "charging": "yes"}, {}, "wrong_type"),
    (RawKind.SYSTEM, {"ts": NOW_MS, "status": "OK", "metrics": [1]}, {}, "wrong_type"),
    (RawKind.SYSTEM, {"ts": NOW_MS, "status": "OK", "metrics": {"cpu": "high"}}, {}, "wrong_type"),
    (RawKind.GUARD, b'{"ts": 1795000000000, "lat": NaN, "lon": 2}', {}, "not_finite"),
    (RawKind.GUARD, b'{"ts": 1795000000000, "lat": 1, "lon": -Infinity}', {}, "not_finite"),
    (RawKind.GUARD, b'{"ts": 1795000000000, "lat": 1, "lon": 2, "altitude_m": 1e999}', {}, "not_finite"),
    (RawKind.GUARD, b'{"ts": 1e999, "lat": 1, "lon": 2}', {}, "not_finite"),
    (RawKind.SENSOR, b'{"ts": 1795000000000, "value": NaN}', {}, "not_finite"),
    (RawKind.GUARD, gps(lat=90.0001), {}, "out_of_range"),
    (RawKind.GUARD, gps(lon=-180.5), {}, "out_of_range"),
    (RawKind.GUARD, gps(accuracy_m=-1), {}, "out_of_range"),
    (RawKind.GUARD, gps(speed_mps=-0.1), {}, "out_of_range"),
    (RawKind.GUARD, gps(heading_deg=360), {}, "out_of_range"),
    (RawKind.DEVICE, {"ts": NOW_MS, "battery_pct": 100.5}, {}, "out_of_range"),
    (RawKind.DEVICE, {"ts": NOW_MS, "signal_dbm": 5}, {}, "out_of_range"),
    (RawKind.DEVICE, {"ts": NOW_MS, "temperature_c": -61}, {}, "out_of_range"),
    (RawKind.ALERT, {"ts": NOW_MS, "lat": 91, "lon": 0}, {}, "out_of_range"),
    (RawKind.GUARD, gps(latitude=1.5), {}, "conflict"),
    (RawKind.GUARD, gps(tenant="acme", client_id="other"), {}, "conflict"),
    (RawKind.GUARD, gps(device_id="dev-08"), {}, "key_mismatch"),
    (RawKind.GUARD, gps(tenant="acme corp"), {}, "bad_id"),
    (RawKind.GUARD, gps(tenant="t" * 65), {}, "bad_id"),
    (RawKind.GUARD, gps(tenant=""), {}, "bad_id"),
    (RawKind.GUARD, gps(), {"key": "guard/07"}, "bad_id"),
    (RawKind.GUARD, gps(device_id="gärd"), {"key": None}, "bad_id"),
    (RawKind.GUARD, gps(device_id="d" * 129), {"key": None}, "bad_id"),
    (RawKind.SENSOR, {"ts": NOW_MS, "site_id": "hq 1"}, {}, "bad_id"),
    (RawKind.SYSTEM, {"ts": NOW_MS, "status": "OK", "metrics": {"cpu load": 1}}, {}, "bad_id"),
    (RawKind.SENSOR, {"ts": NOW_MS, "kind": "laser"}, {}, "unknown_enum"),
    (RawKind.SENSOR, {"ts": NOW_MS}, {"mqtt_topic": f"sensor/{KEY}/laser"}, "unknown_enum"),
    (RawKind.ALERT, {"ts": NOW_MS, "kind": "intrusion"}, {"mqtt_topic": None}, "unknown_enum"),
    (RawKind.SYSTEM, {"ts": NOW_MS, "status": "fine"}, {}, "unknown_enum"),
    (RawKind.GUARD, gps(ts=-1), {}, "bad_timestamp"),
    (RawKind.GUARD, gps(ts="yesterday"), {}, "bad_timestamp"),
    (RawKind.GUARD, gps(ts="1795000000"), {}, "bad_timestamp"),
    (RawKind.GUARD, gps(ts="2026-11-18T11:06:40"), {}, "bad_timestamp"),
    (RawKind.GUARD, gps(ts="2026-11-18T11:06:40Z" + "0" * 40), {}, "bad_timestamp"),
    (RawKind.GUARD, gps(ts=NOW_MS + 5 * 60_000 + 1), {}, "clock_skew"),
    (RawKind.GUARD, gps(ts=NOW_MS - 7 * DAY_MS - 1), {}, "clock_skew"),
    (RawKind.GUARD, gps(ts=0), {}, "clock_skew"),
    (RawKind.GUARD, gps(ts=10 ** 30), {}, "clock_skew"),
    (RawKind.GUARD, gps(ts="9999-12-31T23:59:59-12:00"), {}, "clock_skew"),
    (RawKind.GUARD, b'{"ts": 1795000000000, "lat": 91, "lat": 52.0, "lon": 2}', {}, "duplicate_key"),
    (RawKind.DEVICE, {"ts": NOW_MS}, {"mqtt_topic": f"device/{KEY}/x", "catch_all": "device/{device_id}/#"},
     "unknown_kind"),
    (RawKind.GUARD, gps(ts="0001-01-01T00:00:00+14:00"), {}, "clock_skew"),
]


@pytest.mark.parametrize(("kind", "payload", "meta_changes", "reason"), BAD)
def test_bad_payload_gives_its_reason(kind: RawKind, payload: Any, meta_changes: dict, reason: str) -> None:
    result = run(kind, payload, **meta_changes)
    assert isinstance(result, Refused), result
    assert result.reason == reason, result.detail
    assert 0 < len(result.detail) <= MAX_DETAIL_CHARS


def test_the_bad_table_covers_every_reason() -> None:
    assert {reason for *_, reason in BAD} == REASONS


def test_every_reason_is_documented() -> None:
    docs = (ROOT / "docs" / "payloads.md").read_text()
    for reason in REASONS:
        assert f"| `{reason}` |" in docs, reason
        assert f"    {reason} " in validation.__doc__, reason


def test_detail_names_the_field_but_never_echoes_the_payload() -> None:
    secret = "s3cret-" + "y" * 2000
    result = run(RawKind.SYSTEM, {"ts": NOW_MS, "status": secret, "detail": secret})
    assert result.reason == "unknown_enum"
    assert "status" in result.detail and secret not in result.detail
    assert len(result.detail) <= MAX_DETAIL_CHARS
    assert "lat" in run(RawKind.GUARD, gps(lat=100)).detail


def test_policy_limits_apply() -> None:
    assert run(RawKind.GUARD, GPS, Policy(now_ms=NOW_MS, max_payload_bytes=10)).reason == "too_large"
    nested = gps(extra={"a": {"b": 1}})
    assert run(RawKind.GUARD, nested, Policy(now_ms=NOW_MS, max_depth=2)).reason == "too_deep"
    assert isinstance(run(RawKind.GUARD, nested, Policy(now_ms=NOW_MS, max_depth=3)), Valid)
    tight = Policy(now_ms=NOW_MS, max_future_skew_ms=0, max_past_skew_ms=0)
    assert isinstance(run(RawKind.GUARD, GPS, tight), Valid)
    assert run(RawKind.GUARD, gps(ts=NOW_MS - 1), tight).reason == "clock_skew"


def test_deep_nesting_far_past_the_recursion_limit_is_refused_not_raised() -> None:
    payload = b'{"ts": 1, "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    huge = Policy(now_ms=NOW_MS, max_payload_bytes=1_000_000, max_depth=1_000_000)
    assert run(RawKind.GUARD, payload, huge).reason in {"not_json", "too_deep"}


def test_many_escaped_quotes_in_an_unterminated_string_are_scanned_once() -> None:
    # Scanning from every quote again would take minutes on this 64 KiB payload.
    payload = b"[" * 9 + b'"' + b'\\"' * 32_000
    assert json_depth(payload) == 9
    assert run(RawKind.GUARD, payload).reason == "too_deep"


@pytest.mark.parametrize(("payload", "depth"), [
    (b"", 0), (b"1", 0), (b"{}", 1), (b"[[]]", 2), (b'{"a": [{"b": []}]}', 4),
    (b'{"a": "[[[[{{{"}', 1), (b'{"a": "\\"[[[", "b": [1]}', 2),
    (b'[["unterminated [[[', 2), (b'[["ends in a backslash \\', 2), (b'["a\\\n[", []]', 2),
])
def test_json_depth_ignores_brackets_in_strings(payload: bytes, depth: int) -> None:
    assert json_depth(payload) == depth


# -- kinds, topics and enums --------------------------------------------------------------------

def test_every_raw_topic_has_a_kind() -> None:
    assert {kind_for_topic(topic.name) for topic in TOPICS.raw()} == set(RawKind)
    for kind in RawKind:
        assert kind_for_topic(kind.topic.name) is kind


def test_a_topic_that_is_not_raw_has_no_kind() -> None:
    with pytest.raises(ValueError):
        kind_for_topic(TOPICS.events_high.name)


def test_every_alert_kind_has_a_default_severity() -> None:
    assert set(ALERT_KINDS) <= set(DEFAULT_SEVERITY)
    assert set(DEFAULT_SEVERITY.values()) <= set(SEVERITIES)
    assert all(DEFAULT_SEVERITY[k] == "CRITICAL" for k in ("PANIC", "SOS", "FALL", "SMOKE", "FIRE", "TAMPER"))


DOC_EXAMPLE = re.compile(r"MQTT topic `([^`]+)`:\n\n```json\n(.*?)\n```", re.DOTALL)
KIND_OF_PREFIX = {"guard": RawKind.GUARD, "device": RawKind.DEVICE, "sensor": RawKind.SENSOR,
                  "alert": RawKind.ALERT, "system": RawKind.SYSTEM}


def test_the_examples_in_the_payload_docs_are_valid() -> None:
    examples = DOC_EXAMPLE.findall((ROOT / "docs" / "payloads.md").read_text())
    kinds = set()
    for mqtt_topic, text in examples:
        parts = mqtt_topic.split("/")
        kind = KIND_OF_PREFIX[parts[0]]
        key = parts[2] if kind is RawKind.ALERT else parts[1]
        result = validate(kind, text.encode(), meta(kind, key=key, mqtt_topic=mqtt_topic), POLICY)
        assert_valid_record(result)
        kinds.add(kind)
    assert kinds == set(RawKind)


# -- properties: never raises; Valid always fits the schema ---------------------------------------

JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20))
JSON_VALUES = st.recursive(JSON_SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)), max_leaves=20)
TIMESTAMPS = st.one_of(
    st.integers(NOW_MS - 8 * DAY_MS, NOW_MS + 10 * 60_000),
    st.floats(NOW_S - 8 * 86_400, NOW_S + 600),
    st.builds(lambda moment, offset: moment.isoformat() + offset,
              st.datetimes(dt.datetime(2026, 11, 10), dt.datetime(2026, 11, 19)),
              st.sampled_from(["Z", "+01:00", "-05:30", ""])),
    JSON_SCALARS,
)
IDS = st.one_of(st.from_regex(r"[A-Za-z0-9_.-]{1,20}", fullmatch=True), st.text(max_size=10))
SYMBOLS = st.sampled_from([*ALERT_KINDS, *SEVERITIES, "motion", "smoke", "temperature", "glass-break", "ok",
                           "degraded", "DOWN", "unknown"])
FIELD_VALUES = {
    "ts": TIMESTAMPS,
    "lat": st.one_of(st.floats(-91, 91), JSON_SCALARS), "lon": st.one_of(st.floats(-181, 181), JSON_SCALARS),
    "latitude": st.floats(-90, 90), "longitude": st.floats(-180, 180),
    "accuracy_m": st.one_of(st.floats(-1, 100), JSON_SCALARS), "speed_mps": st.floats(-1, 50),
    "heading_deg": st.floats(-1, 361), "altitude_m": st.floats(), "battery_pct": st.floats(-1, 101),
    "charging": JSON_SCALARS, "signal_dbm": st.one_of(st.integers(-160, 10), st.floats(-151, 1)),
    "temperature_c": st.floats(-70, 110), "firmware": st.text(), "kind": SYMBOLS, "severity": SYMBOLS,
    "status": SYMBOLS, "value": st.one_of(st.floats(), JSON_SCALARS), "unit": st.text(max_size=5),
    "state": st.text(max_size=10), "site_id": IDS, "message": st.text(), "detail": st.text(),
    "metrics": st.one_of(st.dictionaries(IDS, st.one_of(st.floats(), st.integers())), JSON_VALUES),
    "tenant": IDS, "client_id": IDS, "device_id": IDS,
}
CONTRACT_SHAPED = st.fixed_dictionaries({}, optional=FIELD_VALUES)

GOOD_TS = st.one_of(
    st.integers(NOW_MS - 7 * DAY_MS, NOW_MS + 5 * 60_000),
    st.floats(NOW_S - 7 * 86_400 + 1, NOW_S + 299),
    st.builds(lambda moment, offset: moment.isoformat() + offset,
              st.datetimes(dt.datetime(2026, 11, 12), dt.datetime(2026, 11, 18, 11)),
              st.sampled_from(["Z", "+00:00"])),
)
GOOD_IDS = st.from_regex(r"[A-Za-z0-9_.-]{1,64}", fullmatch=True)
FINITE = st.floats(allow_nan=False, allow_infinity=False)
ANY_CASE = st.sampled_from([str.upper, str.lower, str.title])
# Per kind: the required fields and the optional ones, each with values the contract accepts.
GOOD_FIELDS: dict[RawKind, tuple[dict, dict]] = {
    RawKind.GUARD: ({"ts": GOOD_TS, "lat": st.floats(-90, 90), "lon": st.floats(-180, 180)},
                    {"accuracy_m": st.floats(0, 1e4), "speed_mps": st.floats(0, 100),
                     "heading_deg": st.floats(0, 359.99), "altitude_m": FINITE, "tenant": GOOD_IDS,
                     "device_id": st.just(KEY)}),
    RawKind.DEVICE: ({"ts": GOOD_TS},
                     {"battery_pct": st.floats(0, 100), "charging": st.booleans(),
                      "signal_dbm": st.one_of(st.integers(-150, 0), st.floats(-150, 0)),
                      "temperature_c": st.floats(-60, 100), "firmware": st.text(), "client_id": GOOD_IDS}),
    RawKind.SENSOR: ({"ts": GOOD_TS},
                     {"kind": st.builds(lambda k, case: case(k), st.sampled_from(validation.SENSOR_KINDS), ANY_CASE),
                      "value": FINITE, "unit": st.text(), "state": st.text(), "site_id": GOOD_IDS}),
    RawKind.ALERT: ({"ts": GOOD_TS},
                    {"kind": st.sampled_from(ALERT_KINDS), "severity": st.sampled_from(SEVERITIES),
                     "latitude": st.floats(-90, 90), "longitude": st.floats(-180, 180), "message": st.text()}),
    RawKind.SYSTEM: ({"ts": GOOD_TS,
                      "status": st.builds(lambda k, case: case(k), st.sampled_from(validation.HEALTH_STATUSES),
                                          ANY_CASE)},
                     {"detail": st.text(), "metrics": st.dictionaries(st.from_regex(r"[a-z_]{1,20}", fullmatch=True),
                                                                      st.one_of(FINITE, st.integers()))}),
}


@st.composite
def nearly_valid(draw: st.DrawFn, kind: RawKind) -> dict[str, Any]:
    """A payload the contract accepts, with at most one field replaced by anything at all."""
    required, optional = GOOD_FIELDS[kind]
    payload = draw(st.fixed_dictionaries(required, optional=optional))
    if draw(st.booleans()):
        payload[draw(st.sampled_from(sorted(FIELD_VALUES)))] = draw(JSON_VALUES)
    return payload
METAS = st.builds(lambda key, topic: (key, topic), st.one_of(st.none(), st.just(KEY), IDS),
                  st.one_of(st.none(), st.text(max_size=30), st.sampled_from(list(MQTT_TOPIC.values()))))
PROPERTY = settings(deadline=None, max_examples=300)


@PROPERTY
@given(kind=st.sampled_from(RawKind), payload=st.binary(max_size=200))
def test_any_bytes_give_valid_or_a_documented_reason(kind: RawKind, payload: bytes) -> None:
    assert_outcome(validate(kind, payload, meta(kind), POLICY))


@PROPERTY
@given(kind=st.sampled_from(RawKind), value=JSON_VALUES)
def test_any_json_value_gives_valid_or_a_documented_reason(kind: RawKind, value: Any) -> None:
    assert_outcome(validate(kind, json.dumps(value).encode(), meta(kind), POLICY))


@PROPERTY
@given(kind=st.sampled_from(RawKind), payload=CONTRACT_SHAPED, key_and_topic=METAS)
def test_contract_shaped_objects_give_valid_or_a_documented_reason(
        kind: RawKind, payload: dict, key_and_topic: tuple[str | None, str | None]) -> None:
    key, mqtt_topic = key_and_topic
    result = validate(kind, json.dumps(payload).encode(), meta(kind, key=key, mqtt_topic=mqtt_topic), POLICY)
    assert_outcome(result)


@PROPERTY
@given(data=st.data(), kind=st.sampled_from(RawKind))
def test_nearly_valid_payloads_give_valid_or_a_documented_reason(data: st.DataObject, kind: RawKind) -> None:
    payload = data.draw(nearly_valid(kind))
    assert_outcome(validate(kind, json.dumps(payload).encode(), meta(kind), POLICY))


# -- duplicates ---------------------------------------------------------------------------------

def test_dedup_window_remembers_ids() -> None:
    window = DedupWindow()
    assert window.seen("a", 0) is False
    assert window.seen("a", 1) is True
    assert window.seen("b", 1) is False


def test_dedup_window_forgets_the_oldest_past_its_size() -> None:
    window = DedupWindow(max_entries=3)
    for msg_id in "abcd":
        window.seen(msg_id, 0)
    assert len(window) == 3
    assert window.seen("d", 0) is True
    assert window.seen("a", 0) is False


def test_dedup_window_forgets_ids_older_than_the_window() -> None:
    window = DedupWindow(window_ms=1000)
    window.seen("a", 0)
    assert window.seen("a", 1000) is True
    assert window.seen("a", 1001) is False


def test_dedup_window_round_trips_through_json() -> None:
    window = DedupWindow(max_entries=10, window_ms=500)
    for i, msg_id in enumerate("abc"):
        window.seen(msg_id, i * 100)
    copy = DedupWindow.from_dict(json.loads(json.dumps(window.to_dict())))
    assert copy.to_dict() == window.to_dict()
    assert copy.seen("b", 300) is True and copy.seen("z", 300) is False


@settings(deadline=None)
@given(st.lists(st.tuples(st.sampled_from("abcdefgh"), st.integers(0, 50)), max_size=60))
def test_dedup_window_matches_a_simple_model(steps: list[tuple[str, int]]) -> None:
    window, model, now = DedupWindow(max_entries=4, window_ms=20), [], 0
    for msg_id, advance in steps:
        now += advance
        model = [(m, t) for m, t in model if t >= now - 20]
        expected = any(m == msg_id for m, _ in model)
        if not expected:
            model = (model + [(msg_id, now)])[-4:]
        assert window.seen(msg_id, now) is expected
        assert len(window) <= 4
