"""The older fleet's payloads, alerts the topic decides, repeated keys and time strings: validation case tables."""

from __future__ import annotations

import io
import json
from typing import Any

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from guardstream.refusal import Refused
from guardstream.schemas.contracts import current_contracts
from guardstream.streams.validation import Policy, RawKind, RawMeta, Valid, payload_fields, validate

NOW_MS = 1_795_000_000_000  # 2026-11-18T11:06:40Z
NOW_ISO = "2026-11-18T11:06:40Z"
RECEIVED_MS = NOW_MS + 40
POLICY = Policy(now_ms=NOW_MS)
TOPIC = {RawKind.GUARD: "guard/123/gps", RawKind.DEVICE: "device/123/telemetry", RawKind.SENSOR: "sensor/123/door",
         RawKind.ALERT: "alert/panic/123", RawKind.SYSTEM: "system/123/health"}
# What each kind needs besides the field under test, in the older dialect.
BASE = {RawKind.GUARD: {"timestamp": NOW_ISO, "lat": 1.0, "lon": 2.0}, RawKind.DEVICE: {"timestamp": NOW_ISO},
        RawKind.SENSOR: {"timestamp": NOW_ISO}, RawKind.ALERT: {"timestamp": NOW_ISO},
        RawKind.SYSTEM: {"timestamp": NOW_ISO, "status": "OK"}}


def run(kind: RawKind, payload: dict[str, Any] | bytes, topic: str | None = None, key: str | None = "123",
        **meta: Any) -> Valid | Refused:
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return validate(kind, raw, RawMeta(key=key, mqtt_topic=topic or TOPIC[kind], msg_id="m-1",
                                       received_ms=RECEIVED_MS, **meta), POLICY)


def through_avro(result: Valid | Refused) -> dict[str, Any]:
    """The record as a consumer reads it: encoded with its schema and decoded again."""
    assert isinstance(result, Valid), result
    schema = fastavro.parse_schema(current_contracts()[result.schema].schema)
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, schema, result.record)
    buf.seek(0)
    return fastavro.schemaless_reader(buf, schema)


# -- every alias of the older dialect arrives in the Avro record -------------------------------

# (payload field, kind, value sent, record field, value in the record)
ALIASES = [
    ("timestamp", RawKind.GUARD, "2026-11-18T11:06:39.500Z", "ts_ms", NOW_MS - 500),
    ("timestamp", RawKind.DEVICE, NOW_MS - 1000, "ts_ms", NOW_MS - 1000),
    ("timestamp", RawKind.SENSOR, (NOW_MS - 2000) / 1000, "ts_ms", NOW_MS - 2000),
    ("timestamp", RawKind.ALERT, NOW_MS - 3000, "ts_ms", NOW_MS - 3000),
    ("timestamp", RawKind.SYSTEM, NOW_MS - 4000, "ts_ms", NOW_MS - 4000),
    ("accuracy", RawKind.GUARD, 10.5, "accuracy_m", 10.5),
    ("latitude", RawKind.GUARD, 12.9716, "lat", 12.9716),
    ("longitude", RawKind.GUARD, 77.5946, "lon", 77.5946),
    ("latitude", RawKind.ALERT, 12.9716, "lat", 12.9716),
    ("longitude", RawKind.ALERT, 77.5946, "lon", 77.5946),
    ("battery", RawKind.DEVICE, 85, "battery_pct", 85.0),
    ("signal", RawKind.DEVICE, 90, "signal_pct", 90.0),
    ("alert_type", RawKind.ALERT, "panic", "kind", "PANIC"),
    ("guard_id", RawKind.GUARD, 123, "device_id", "123"),
    ("guard_id", RawKind.ALERT, "123", "device_id", "123"),
    ("device_id", RawKind.DEVICE, 123, "device_id", "123"),
    ("client_id", RawKind.GUARD, 1, "tenant", "1"),
    ("client_id", RawKind.DEVICE, "acme", "tenant", "acme"),
    ("client_id", RawKind.SYSTEM, 7, "tenant", "7"),
]


@pytest.mark.parametrize(("name", "kind", "sent", "field", "stored"), ALIASES)
def test_each_alias_of_the_older_dialect_arrives_in_the_avro_record(name, kind, sent, field, stored) -> None:
    payload = {**BASE[kind], name: sent}
    if name in ("latitude", "longitude"):
        payload = {k: v for k, v in payload.items() if k not in ("lat", "lon")}
        payload |= {"latitude": 12.9716, "longitude": 77.5946}
    if name == "timestamp":
        payload[name] = sent
    record = through_avro(run(kind, payload))
    assert record[field] == stored


def test_the_alias_table_covers_every_field_a_contract_reads_under_another_name() -> None:
    # A field a contract reads but no record field of that name holds must be in the table:
    # otherwise a known dialect's field could be read and dropped.
    aliased = {(name, kind) for name, kind, *_ in ALIASES}
    for kind in RawKind:
        record_fields = {f["name"] for f in current_contracts()[validate_schema(kind)].schema["fields"]}
        for name in payload_fields(kind) - record_fields - {"ts", "tenant", "kind", "severity", "status"}:
            assert (name, kind) in aliased or name in {n for n, _ in aliased}, (name, kind)


def validate_schema(kind: RawKind) -> str:
    return through_schema(run(kind, BASE[kind]))


def through_schema(result: Valid | Refused) -> str:
    assert isinstance(result, Valid), result
    return result.schema


def test_signal_in_percent_is_never_a_fake_dbm() -> None:
    record = through_avro(run(RawKind.DEVICE, {"timestamp": NOW_ISO, "battery": 85, "signal": 90}))
    assert (record["signal_pct"], record["signal_dbm"], record["battery_pct"]) == (90.0, None, 85.0)
    assert run(RawKind.DEVICE, {"timestamp": NOW_ISO, "signal": 101}).reason == "out_of_range"


@pytest.mark.parametrize(("payload", "reason"), [
    ({"ts": NOW_MS, "timestamp": NOW_MS - 1, "lat": 1, "lon": 2}, "conflict"),
    ({"ts": NOW_MS, "lat": 1, "lon": 2, "accuracy_m": 1, "accuracy": 2}, "conflict"),
    ({"ts": NOW_MS, "lat": 1, "lon": 2, "guard_id": 124}, "key_mismatch"),
    ({"ts": NOW_MS, "lat": 1, "lon": 2, "guard_id": 123, "device_id": "124"}, "conflict"),
    ({"ts": NOW_MS, "lat": 1, "lon": 2, "client_id": 1, "tenant": "2"}, "conflict"),
    ({"ts": NOW_MS, "lat": 1, "lon": 2, "guard_id": 1.5}, "wrong_type"),
    ({"ts": NOW_MS, "lat": 1, "lon": 2, "client_id": True}, "wrong_type"),
])
def test_two_spellings_must_agree(payload: dict, reason: str) -> None:
    assert run(RawKind.GUARD, payload).reason == reason


# -- the payloads quoted in issue 13, as the older fleet sends them --------------------------------

def test_the_older_fleets_gps_fix_is_accepted_whole() -> None:
    payload = {"lat": 12.9716, "lon": 77.5946, "accuracy": 10.5, "guard_id": 123, "client_id": 1,
               "timestamp": NOW_ISO}
    record = through_avro(run(RawKind.GUARD, payload))
    assert (record["device_id"], record["tenant"], record["ts_ms"]) == ("123", "1", NOW_MS)
    assert (record["lat"], record["lon"], record["accuracy_m"]) == (12.9716, 77.5946, 10.5)


@pytest.mark.parametrize("topic", ["device/123/telemetry", "device/123/status"])
def test_the_older_fleets_telemetry_is_accepted_whole(topic: str) -> None:
    record = through_avro(run(RawKind.DEVICE, {"battery": 85, "signal": 90, "timestamp": NOW_ISO}, topic))
    assert (record["battery_pct"], record["signal_pct"], record["ts_ms"]) == (85.0, 90.0, NOW_MS)


def test_the_older_fleets_panic_without_a_time_reaches_the_control_room() -> None:
    payload = {"alert_type": "panic", "severity": "critical", "message": "help", "lat": 12.9716, "lon": 77.5946}
    record = through_avro(run(RawKind.ALERT, payload))
    assert (record["kind"], record["severity"], record["message"]) == ("PANIC", "CRITICAL", "help")
    assert (record["ts_ms"], record["ts_source"]) == (RECEIVED_MS, "received")
    assert (record["lat"], record["lon"]) == (12.9716, 77.5946)


# -- an alert is never refused for its clock ---------------------------------------------------

@pytest.mark.parametrize("ts", [None, "yesterday", "1795000000", "2026-11-18T11:06:40", -1, 0, NOW_MS + 3_600_000,
                                True, [1], {"at": 1}, "2026-11-18T11:06:40Z\u0000garbage", 10 ** 30])
def test_an_alert_with_no_usable_time_takes_the_receipt_time(ts: Any) -> None:
    payload = {} if ts is None else {"ts": ts}
    record = through_avro(run(RawKind.ALERT, payload))
    assert (record["kind"], record["ts_ms"], record["ts_source"]) == ("PANIC", RECEIVED_MS, "received")


def test_an_alert_with_a_good_time_keeps_it() -> None:
    record = through_avro(run(RawKind.ALERT, {"ts": NOW_MS - 5}))
    assert (record["ts_ms"], record["ts_source"]) == (NOW_MS - 5, "device")


def test_an_alert_with_a_nan_or_infinite_time_takes_the_receipt_time() -> None:
    for raw in (b'{"ts": 1e999}', b'{"ts": -1e999}'):
        assert through_avro(run(RawKind.ALERT, raw))["ts_source"] == "received"


@pytest.mark.parametrize("kind", [RawKind.GUARD, RawKind.DEVICE, RawKind.SENSOR, RawKind.SYSTEM])
def test_other_kinds_keep_the_clock_rule(kind: RawKind) -> None:
    payload = {k: v for k, v in BASE[kind].items() if k != "timestamp"}
    assert run(kind, payload).reason == "missing_field"
    assert run(kind, {**payload, "ts": NOW_MS + 3_600_000}).reason == "clock_skew"


# -- the topic decides what an alert is -------------------------------------------------------------

@pytest.mark.parametrize(("topic", "payload", "kind", "severity", "claimed_kind", "claimed_severity"), [
    # issue 20: the downgraded panic
    ("alert/panic/123", {"kind": "low_battery", "severity": "low"}, "PANIC", "CRITICAL", "low_battery", "low"),
    ("alert/panic/123", {"alert_type": "low_battery"}, "PANIC", "CRITICAL", "low_battery", None),
    ("alert/panic/123", {"kind": "panic", "severity": "low"}, "PANIC", "CRITICAL", None, "low"),
    ("alert/panic/123", {"kind": "intrusion"}, "PANIC", "CRITICAL", "intrusion", None),
    ("alert/panic/123", {"kind": 5, "severity": 3}, "PANIC", "CRITICAL", "5", "3"),
    ("alert/panic/123", {"severity": "urgent"}, "PANIC", "CRITICAL", None, "urgent"),
    ("alert/fire/123", {"severity": "critical"}, "FIRE", "CRITICAL", None, None),
    # a payload may raise a severity
    ("alert/low_battery/123", {"severity": "critical"}, "LOW_BATTERY", "CRITICAL", None, None),
    # not a life-safety kind: the device's own severity, as before, unless it contradicted the topic
    ("alert/low_battery/123", {"severity": "low"}, "LOW_BATTERY", "LOW", None, None),
    ("alert/low_battery/123", {"kind": "system_degraded", "severity": "normal"}, "LOW_BATTERY", "HIGH",
     "system_degraded", "normal"),
    # no known kind in the topic: the payload's, the more severe of two
    ("alert/intrusion/123", {"alert_type": "sos"}, "SOS", "CRITICAL", None, None),
    ("alert/panic", {"kind": "low_battery", "device_id": "123"}, "PANIC", "CRITICAL", "low_battery", None),
    ("alarms/123", {"kind": "low_battery", "alert_type": "fall"}, "FALL", "CRITICAL", "low_battery", None),
])
def test_the_topic_decides_what_an_alert_is(topic, payload, kind, severity, claimed_kind, claimed_severity) -> None:
    record = through_avro(run(RawKind.ALERT, {"ts": NOW_MS, **payload}, topic))
    assert (record["kind"], record["severity"]) == (kind, severity)
    assert (record["claimed_kind"], record["claimed_severity"]) == (claimed_kind, claimed_severity)


def test_an_alert_without_any_known_kind_is_refused() -> None:
    assert run(RawKind.ALERT, {"ts": NOW_MS}, "alert/intrusion/123").reason == "unknown_enum"
    assert run(RawKind.ALERT, {"ts": NOW_MS, "kind": [1]}, "x/y").reason == "wrong_type"
    assert run(RawKind.ALERT, {"ts": NOW_MS}, "alert").reason == "missing_field"


def test_an_alert_under_a_catch_all_rule_is_still_an_alert() -> None:
    record = through_avro(run(RawKind.ALERT, {"ts": NOW_MS}, "alert/sos/123/button",
                              catch_all="alert/{kind}/{device_id}/#"))
    assert (record["kind"], record["device_id"]) == ("SOS", "123")


# -- presence and topics no contract names ----------------------------------------------------------

@pytest.mark.parametrize(("topic", "payload", "status", "ts_ms", "source"), [
    ("device/123/offline", b"", "DOWN", RECEIVED_MS, "received"),
    ("device/123/offline", b"offline", "DOWN", RECEIVED_MS, "received"),
    ("guard/123/online", b"1", "OK", RECEIVED_MS, "received"),
    ("device/123/online", json.dumps({"timestamp": NOW_ISO, "client_id": 4}).encode(), "OK", NOW_MS, "device"),
    ("device/123/offline", b'{"ts": "stale"}', "DOWN", RECEIVED_MS, "received"),
])
def test_presence_messages_become_device_health(topic, payload, status, ts_ms, source) -> None:
    record = through_avro(run(RawKind.SYSTEM, payload, topic))
    assert (record["device_id"], record["status"], record["detail"]) == ("123", status, topic.rsplit("/", 1)[1])
    assert (record["ts_ms"], record["ts_source"]) == (ts_ms, source)


@pytest.mark.parametrize(("payload", "status"), [(b"offline", "DOWN"), (b"Online\n", "OK")])
def test_a_bare_last_will_on_a_telemetry_topic_is_a_presence_message(payload: bytes, status: str) -> None:
    result = run(RawKind.DEVICE, payload, "device/123/status")
    record = through_avro(result)
    assert result.schema == "guardstream.SystemHealth"
    assert (record["device_id"], record["status"], record["ts_source"]) == ("123", status, "received")
    assert run(RawKind.DEVICE, b"gone", "device/123/status").reason == "not_json"


def test_a_presence_payload_still_names_its_tenant_once() -> None:
    assert run(RawKind.SYSTEM, b'{"tenant": "a", "tenant": "b"}', "device/123/offline").reason == "duplicate_key"


@pytest.mark.parametrize("kind", [RawKind.GUARD, RawKind.DEVICE, RawKind.SENSOR, RawKind.SYSTEM])
def test_a_topic_no_contract_names_is_a_dead_letter_with_unknown_kind(kind: RawKind) -> None:
    result = run(kind, BASE[kind], "device/123/battery", catch_all="device/{device_id}/#")
    assert result.reason == "unknown_kind" and "device/123/battery" in result.detail


# -- repeated keys and time strings --------------------------------------------------------------

@pytest.mark.parametrize(("kind", "raw"), [
    (RawKind.GUARD, b'{"ts": 1795000000000, "lat": 1, "lon": 2, "tenant": "acme", "tenant": "globex"}'),
    (RawKind.GUARD, b'{"ts": 1795000000000, "lat": 91, "lat": 52.0, "lon": 2}'),
    (RawKind.GUARD, b'{"ts": 1795000000000, "lat" : 1, "lat" : 1, "lon": 2, "x": 1}'),  # colons hide behind spaces
    (RawKind.DEVICE, b'{"timestamp": 1795000000000, "battery": 5, "battery": 90}'),
    (RawKind.ALERT, b'{"ts": 1795000000000, "severity": "critical", "severity": "low"}'),
    (RawKind.ALERT, b'{"ts": 1795000000000, "ts": 1795000000001}'),
    (RawKind.SYSTEM, b'{"ts": 1795000000000, "status": "OK", "metrics": {"a": 1}, "status": "DOWN"}'),
    (RawKind.GUARD, b'{"ts": 1795000000000, "lat": "1", "lat": 1, "lon": 2}'),  # slow path too
    (RawKind.GUARD, b'{"ts": 1795000000000, "lat": 91, "l\\u0061t": 52.0, "lon": 2}'),  # an escaped key
    (RawKind.GUARD, b'{"ts": 1795000000000, "x": {"lat": 1}, "lat": 1, "lat": 2, "lon": 2}'),
])
def test_a_repeated_field_is_refused(kind: RawKind, raw: bytes) -> None:
    assert run(kind, raw).reason == "duplicate_key"


@pytest.mark.parametrize("raw", [
    b'{"ts": 1795000000000, "lat": 1, "lon": 2, "x": 1, "x": 2}',  # a field no contract names
    b'{"ts": 1795000000000, "lat": 1, "lon": 2, "extra": {"lat": 5, "lat": 6}}',  # nested
    b'{"ts": "2026-11-18T11:06:40Z", "lat": 1, "lon": 2, "tenant": "a:b:c"}',
    b'{"ts": 1795000000000, "lat": 1, "lon": 2, "note": "a: b", "speed_mps": null}',
])
def test_repeats_the_contract_does_not_read_are_not_refused(raw: bytes) -> None:
    result = run(RawKind.GUARD, raw)
    assert isinstance(result, Valid) or result.reason == "bad_id", result


NAMED = sorted(payload_fields(RawKind.GUARD))


@settings(deadline=None, max_examples=300)
@given(fields=st.dictionaries(st.sampled_from(NAMED + ["x", "y:z"]), st.integers(0, 50), max_size=8),
       repeated=st.sampled_from(NAMED), spaced=st.booleans())
def test_a_repeat_is_always_found_and_never_invented(fields: dict, repeated: str, spaced: bool) -> None:
    separators = (" , ", " : ") if spaced else (",", ":")
    clean = json.dumps({"ts": NOW_MS, **fields}, separators=separators).encode()
    assert not (isinstance(r := run(RawKind.GUARD, clean), Refused) and r.reason == "duplicate_key")
    twice = clean[:-1] + f', "{repeated}"{separators[1]}1}}'.encode()
    if repeated in fields or repeated == "ts":
        assert run(RawKind.GUARD, twice).reason == "duplicate_key"


@pytest.mark.parametrize("ts", ["2026-11-18T11:06:40Z\u0000garbage", "2026-11-18T11:06:40\u0000Z",
                                "2026-11-18T11:06:40Z\u001f", "2026-11-18T11:06:40Z\u0085"])
def test_a_control_character_in_a_time_string_is_refused(ts: str) -> None:
    assert run(RawKind.GUARD, {"ts": ts, "lat": 1, "lon": 2}).reason == "bad_timestamp"
    assert run(RawKind.DEVICE, {"timestamp": ts}).reason == "bad_timestamp"
