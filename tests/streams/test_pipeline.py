"""The batch core of the stream worker, with plain data only."""

import json

from hypothesis import given, settings as hsettings, strategies as st

from guardstream.catalog import TOPICS
from guardstream.streams.geofence import FenceIndex, fence_from_record
from guardstream.streams.geofence_state import Params
from guardstream.streams.pipeline import RawRecord, State, process
from guardstream.streams.rules import default_rules
from guardstream.streams.validation import Policy

NOW = 1_795_000_000_000
SITE = {"fence_id": "hq", "tenant": "acme", "name": "HQ", "kind": "SITE", "radius_m": None, "updated_ms": 1,
        "geometry": json.dumps({"type": "Polygon", "coordinates": [[[13.400, 52.519], [13.410, 52.519],
                                                                     [13.410, 52.523], [13.400, 52.523],
                                                                     [13.400, 52.519]]]})}
INSIDE, FAR_OUT = (52.521, 13.405), (52.530, 13.430)
_offsets = iter(range(10**9))


def raw(topic, key, payload, msg_id=None, mqtt_topic=None):
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    offset = next(_offsets)
    headers = {"msg.id": (msg_id or f"m{offset}").encode(), "received_ms": str(NOW).encode()}
    if mqtt_topic:
        headers["mqtt.topic"] = mqtt_topic.encode()
    return RawRecord(topic, 0, offset, key.encode(), body, headers, NOW)


def gps(device, at, ts, **extra):
    return raw(TOPICS.raw_guard.name, device, {"ts": ts, "lat": at[0], "lon": at[1], "tenant": "acme",
                                               "accuracy_m": 5, **extra})


def state():
    return State(fences=FenceIndex.build([fence_from_record(SITE)]))


def run(records, st_=None, removed=frozenset()):
    st_ = st_ or state()
    out = process(records, st_, Policy(now_ms=NOW, default_tenant="acme"), default_rules(), Params(), removed)
    st_.devices.update(out.devices)
    st_.rules.update(out.rules)
    return out, st_


def by_topic(out):
    result = {}
    for emit in out.emits:
        result.setdefault(emit.topic, []).append(emit)
    return result


def test_a_mixed_batch_is_validated_enriched_and_routed():
    out, _ = run([
        gps("g1", INSIDE, NOW - 1000),
        raw(TOPICS.raw_device.name, "r1", {"ts": NOW - 500, "battery_pct": 12, "tenant": "acme"}),
        raw(TOPICS.raw_sensor.name, "s1", {"ts": NOW - 500, "state": "detected", "tenant": "acme"},
            mqtt_topic="sensor/s1/smoke"),
        raw(TOPICS.raw_alert.name, "g1", {"ts": NOW - 100, "tenant": "acme"}, mqtt_topic="alert/panic/g1"),
        raw(TOPICS.raw_guard.name, "g2", b"{not json"),
    ])
    topics = by_topic(out)
    [position] = [e for e in topics[TOPICS.events_high.name] if e.schema == "guardstream.GuardPosition"]
    assert position.value["fences"] == ["hq"] and position.value["in_site"] is True
    assert position.key == "g1" and position.value["event_id"].startswith("m")
    critical = topics[TOPICS.events_critical.name]
    kinds = sorted((e.schema, e.value.get("kind") or e.value.get("transition")) for e in critical)
    assert kinds == [("guardstream.DeviceAlert", "PANIC"), ("guardstream.DeviceAlert", "SMOKE"),
                     ("guardstream.GeofenceEvent", "ENTER")]
    assert [e.value["kind"] for e in topics[TOPICS.events_high.name] if e.schema == "guardstream.DeviceAlert"] \
        == ["LOW_BATTERY"]
    assert [e.schema for e in topics[TOPICS.events_low.name]] == ["guardstream.Telemetry"]
    assert [e.schema for e in topics[TOPICS.events_normal.name]] == ["guardstream.SensorReading"]
    assert [(r.refused.reason, r.record.key) for r in out.refused] == [("not_json", b"g2")]


def test_duplicates_by_message_id_are_dropped():
    out, _ = run([gps("g1", INSIDE, NOW - 1000, ), gps("g1", INSIDE, NOW - 900)])
    assert out.duplicates == 0
    st_ = state()
    first = gps("g1", INSIDE, NOW - 1000)
    again = RawRecord(first.topic, 0, first.offset + 1, first.key, first.value, first.headers, NOW)
    out, _ = run([first, again], st_)
    assert out.duplicates == 1
    assert len(by_topic(out)[TOPICS.events_high.name]) == 1


def test_enter_exit_and_one_violation_per_episode_across_batches():
    out, st_ = run([gps("g1", INSIDE, NOW - 5000)])
    assert out.transitions == 1 and out.violations == 0
    out, st_ = run([gps("g1", FAR_OUT, NOW - 4000), gps("g1", FAR_OUT, NOW - 3000)], st_)
    critical = by_topic(out)[TOPICS.events_critical.name]
    exits = [e.value for e in critical if e.schema == "guardstream.GeofenceEvent"]
    assert [(e["transition"], e["dwell_ms"]) for e in exits] == [("EXIT", 1000)]
    alerts = [e.value for e in critical if e.schema == "guardstream.DeviceAlert"]
    assert [a["kind"] for a in alerts] == ["GEOFENCE_VIOLATION"] and out.violations == 1
    out, st_ = run([gps("g1", FAR_OUT, NOW - 2000)], st_)
    assert out.violations == 0


def test_a_deleted_fence_exits_devices_inside_it():
    _, st_ = run([gps("g1", INSIDE, NOW - 5000)])
    st_.fences = FenceIndex.build([])
    out, _ = run([], st_, removed=frozenset({"hq"}))
    [event] = [e.value for e in out.emits]
    assert (event["transition"], event["cause"], event["fence_id"]) == ("EXIT", "fence_deleted", "hq")


def test_state_changes_are_returned_not_hidden():
    out, _ = run([gps("g1", INSIDE, NOW - 5000),
                  raw(TOPICS.raw_device.name, "r1", {"ts": NOW - 500, "battery_pct": 12, "tenant": "acme"})])
    assert set(out.devices) == {"g1"} and set(out.rules) == {"r1"}


@hsettings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([t.name for t in TOPICS.raw()]), st.binary(max_size=200),
                          st.sampled_from(["a", "b", "c"])), max_size=20))
def test_every_record_is_emitted_refused_or_a_duplicate(items):
    records = [raw(topic, key, payload, msg_id=f"{key}-{i % 7}") for i, (topic, payload, key) in enumerate(items)]
    out, _ = run(records)
    primary = [e for e in out.emits if e.value["event_id"].startswith(("a-", "b-", "c-"))]
    assert len(primary) + len(out.refused) + out.duplicates == len(records)
