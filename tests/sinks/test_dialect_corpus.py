"""The older fleet's payloads end to end: MQTT -> bridge -> worker -> sink -> PostgreSQL, values intact.

Every payload form quoted in issue 13, each alias of the older dialect, presence messages, a
topic no contract names, and the alert and key cases of issue 20, published over a real
MQTT broker to real bridge, worker and sink processes; each lands as a row (or a dead
letter) with the values it was sent.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import time
from typing import Any

import psycopg
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from support.processes import WORKER_ENGINES, publisher

from guardstream.catalog import TOPICS
from guardstream.infra.migrate import migrate
from guardstream.infra.stack import wait_until
from guardstream.kafka import consumer_config, producer_config
from guardstream.settings import Settings
from guardstream.topic_end import probe_end_offsets

pytestmark = pytest.mark.slow

SINK_TOPICS = [t.name for t in TOPICS.events()] + [TOPICS.dlq_validate.name]


def _sink_groups_start_at_end(settings: Settings, group: str) -> None:
    """So the sink reads only what this test causes, not what other tests left on the shared topics."""
    metadata = Producer(producer_config(settings, "test-corpus-meta")).list_topics(timeout=10)
    ends = probe_end_offsets(settings, [(t, p) for t in SINK_TOPICS for p in metadata.topics[t].partitions])
    critical = TOPICS.events_critical.name
    for name, wanted in ((group, set(SINK_TOPICS) - {critical}), (f"{group}-critical", {critical})):
        consumer = Consumer(consumer_config(settings, "test-corpus-offsets", name))
        try:
            consumer.commit(offsets=[TopicPartition(t, p, end) for (t, p), (_, end) in ends.items() if t in wanted],
                            asynchronous=False)
        finally:
            consumer.close()


def _iso(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _rows(url: str, query: str, *params: Any) -> list[dict[str, Any]]:
    with psycopg.connect(url, row_factory=psycopg.rows.dict_row) as conn:
        return conn.execute(query, params).fetchall()


@pytest.mark.parametrize("engine", WORKER_ENGINES)
def test_the_older_fleets_messages_land_with_nothing_lost(applied, run_component, database_url, unique, engine):
    migrate(database_url)
    group = f"test-corpus-{unique}"
    _sink_groups_start_at_end(applied, group)
    run_component(["sink"], applied, DATABASE_URL=database_url, GUARDSTREAM_SINK_GROUP=group)
    run_component(["worker"], applied, GUARDSTREAM_WORKER_ENGINE=engine)
    run_component(["bridge"], applied, GUARDSTREAM_BRIDGE_ID=f"b-{unique}",
                  GUARDSTREAM_BRIDGE_SHARED_GROUP=f"g-{unique}")

    base = random.randrange(10 ** 8, 10 ** 9) * 100  # integer ids, as the older fleet has them
    ids = {name: base + i for i, name in enumerate(
        ["gps", "location", "telemetry", "status", "heartbeat", "panic", "downgrade", "presence", "catch_all",
         "sos_deep", "dup", "nul", "typed", "status_will"])}
    moment = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(seconds=30)
    when, when_ms = _iso(moment), int(moment.timestamp() * 1000)
    published = [
        # issue 13, as quoted (the time made recent: an older one is clock skew for a GPS fix)
        (f"guard/{ids['gps']}/gps", {"lat": 12.9716, "lon": 77.5946, "accuracy": 10.5, "guard_id": ids["gps"],
                                     "client_id": 1, "timestamp": when}),
        (f"guard/{ids['location']}/location", {"latitude": 12.5, "longitude": 77.25, "accuracy_m": 3,
                                               "device_id": ids["location"], "client_id": "acme",
                                               "ts": when_ms}),
        (f"device/{ids['telemetry']}/telemetry", {"battery": 85, "signal": 90, "timestamp": when}),
        (f"device/{ids['status']}/status", {"battery": 40.5, "signal": 12, "timestamp": when, "client_id": 2}),
        (f"device/{ids['heartbeat']}/heartbeat", {"timestamp": when, "device_id": ids["heartbeat"]}),
        (f"alert/panic/{ids['panic']}", {"alert_type": "panic", "severity": "critical", "message": "guard down",
                                         "lat": 12.9716, "lon": 77.5946}),
        # issue 20: a payload that would downgrade a panic
        (f"alert/panic/{ids['downgrade']}", {"kind": "low_battery", "severity": "low", "timestamp": when}),
        (f"device/{ids['presence']}/offline", b"offline"),
        (f"device/{ids['status_will']}/status", b"offline"),  # a last will on the status topic
        (f"device/{ids['catch_all']}/battery", {"battery": 10, "timestamp": when}),
        (f"alert/sos/{ids['sos_deep']}/button", {"timestamp": when, "guard_id": ids["sos_deep"]}),
        (f"guard/{ids['dup']}/gps", b'{"ts": %d, "lat": 1, "lon": 2, "tenant": "acme", "tenant": "globex"}'
         % when_ms),
        (f"guard/{ids['nul']}/gps", json.dumps({"ts": when + "\u0000garbage", "lat": 1, "lon": 2}).encode()),
        (f"device/{ids['typed']}/telemetry", {"battery_pct": 50, "signal_dbm": -87.4, "ts": when_ms,
                                              "device_id": str(ids["typed"])}),
    ]
    pub = publisher(applied, f"pub-{unique}")
    before_publish_ms = time.time_ns() // 1_000_000
    for topic, payload in published:
        raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        pub.publish(topic, raw, qos=1).wait_for_publish(10)
    pub.loop_stop()

    url = database_url
    mine = [str(i) for i in ids.values()]

    def landed() -> int:
        return sum(len(_rows(url, f"SELECT event_id FROM {table} WHERE device_id = ANY(%s)", mine))
                   for table in ("guard_positions", "device_telemetry", "device_alerts", "system_health")) + \
            len(_rows(url, "SELECT 1 FROM dead_letters WHERE convert_from(key, 'UTF8') = ANY(%s)", mine))

    wait_until(lambda: landed() >= len(published), 120, f"{len(published)} rows and dead letters")

    def one(table: str, name: str) -> dict[str, Any]:
        [row] = _rows(url, f"SELECT * FROM {table} WHERE device_id = %s", str(ids[name]))
        return row

    gps = one("guard_positions", "gps")
    assert (gps["tenant"], gps["lat"], gps["lon"], gps["accuracy_m"]) == ("1", 12.9716, 77.5946, 10.5)
    assert gps["ts"] == moment
    location = one("guard_positions", "location")
    assert (location["tenant"], location["lat"], location["lon"], location["accuracy_m"]) == ("acme", 12.5, 77.25, 3)

    telemetry = one("device_telemetry", "telemetry")
    assert (telemetry["battery_pct"], telemetry["signal_pct"], telemetry["signal_dbm"]) == (85, 90, None)
    assert telemetry["ts"] == moment
    status = one("device_telemetry", "status")
    assert (status["battery_pct"], status["signal_pct"], status["tenant"]) == (40.5, 12, "2")
    assert one("device_telemetry", "heartbeat")["ts"] == moment
    typed = one("device_telemetry", "typed")
    assert (typed["battery_pct"], typed["signal_dbm"], typed["signal_pct"]) == (50, -87, None)

    panic = one("device_alerts", "panic")
    assert (panic["kind"], panic["severity"], panic["message"]) == ("PANIC", "CRITICAL", "guard down")
    assert (panic["lat"], panic["lon"], panic["ts_source"]) == (12.9716, 77.5946, "received")
    assert panic["ts"] == panic["received_at"] and panic["received_at"].timestamp() * 1000 >= before_publish_ms
    downgrade = one("device_alerts", "downgrade")
    assert (downgrade["kind"], downgrade["severity"], downgrade["ts_source"]) == ("PANIC", "CRITICAL", "device")
    assert (downgrade["claimed_kind"], downgrade["claimed_severity"]) == ("low_battery", "low")
    sos = one("device_alerts", "sos_deep")
    assert (sos["kind"], sos["severity"], sos["ts"]) == ("SOS", "CRITICAL", moment)

    presence = one("system_health", "presence")
    assert (presence["status"], presence["detail"], presence["ts_source"]) == ("DOWN", "offline", "received")
    will = one("system_health", "status_will")
    assert (will["status"], will["detail"], will["ts_source"]) == ("DOWN", "offline", "received")
    # a device that went offline reaches the control room as the system_degraded rule's alert
    wait_until(lambda: _rows(url, "SELECT kind FROM device_alerts WHERE device_id = %s", str(ids["presence"])),
               30, "the offline device's alert")
    assert one("device_alerts", "presence")["kind"] == "SYSTEM_DEGRADED"

    letters = {row["key"].decode(): row for row in _rows(
        url, "SELECT * FROM dead_letters WHERE convert_from(key, 'UTF8') = ANY(%s)", mine)}
    assert {k: row["reason"] for k, row in letters.items()} == {
        str(ids["catch_all"]): "unknown_kind", str(ids["dup"]): "duplicate_key", str(ids["nul"]): "bad_timestamp"}
    assert f"device/{ids['catch_all']}/battery" in letters[str(ids["catch_all"])]["detail"]
    assert letters[str(ids["catch_all"])]["source_topic"] == TOPICS.raw_device.name
