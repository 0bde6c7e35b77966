"""Two sink processes in one consumer group, on a broker of the test's own with four partitions
per topic: they share the partitions, one is killed -9 mid-stream, every row lands once."""

import threading
import time

import psycopg
import pytest
from confluent_kafka import Producer
from support.processes import start_component
from support.scaled import broker_with_partitions

from guardstream.catalog import TOPICS
from guardstream.infra.migrate import migrate
from guardstream.infra.stack import wait_until
from guardstream.kafka import produce, producer_config
from guardstream.schemas.codec import Codec
from guardstream.schemas.registry import FileRegistry

pytestmark = pytest.mark.slow
CODEC = Codec(FileRegistry.load())
T0 = 1_795_000_000_000
TOTAL, RATE = 30_000, 3000  # positions and telemetry, half each


def _position(tag: str, i: int) -> dict:
    return {"event_id": f"{tag}-pos-{i}", "tenant": tag, "device_id": f"guard-{i % 97}", "ts_ms": T0 + i,
            "received_ms": T0 + i + 40, "lat": 52.52, "lon": 13.40, "accuracy_m": 4.0, "speed_mps": None,
            "heading_deg": None, "altitude_m": None, "fences": [], "in_site": None, "violation": False}


def _telemetry(tag: str, i: int) -> dict:
    return {"event_id": f"{tag}-tel-{i}", "tenant": tag, "device_id": f"dev-{i % 89}", "ts_ms": T0 + i,
            "received_ms": T0 + i + 40, "battery_pct": 50.0, "charging": None, "signal_dbm": -70,
            "temperature_c": None, "firmware": "2.4.1"}


def _produce(settings, tag: str, done: threading.Event) -> None:
    producer = Producer(producer_config(settings, "test-sink-group"))
    started = time.monotonic()
    for i in range(TOTAL):
        if i % 2:
            record, schema, topic = _telemetry(tag, i), "guardstream.Telemetry", TOPICS.events_low.name
        else:
            record, schema, topic = _position(tag, i), "guardstream.GuardPosition", TOPICS.events_high.name
        produce(producer, topic, CODEC.encode(schema, record), record["device_id"].encode())
        if i % 200 == 0:
            producer.poll(0)
            lag = i / RATE - (time.monotonic() - started)
            if lag > 0:
                done.wait(lag)  # pacing the load, not synchronising
    assert producer.flush(30) == 0
    done.set()


def _count(url: str, query: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute(query).fetchone()[0]


def _rows(url: str) -> int:
    return _count(url, "SELECT (SELECT count(*) FROM guard_positions) + (SELECT count(*) FROM device_telemetry)")


def test_two_sinks_in_one_group_one_killed_every_row_once(settings, database_url, tmp_path, unique):
    migrate(database_url)
    tag = f"sg{unique}"
    with broker_with_partitions(settings, tmp_path / "tansu.log", 4) as own:
        sinks = [start_component(["sink"], own, tmp_path / f"sink-{n}.log", ready_s=60, DATABASE_URL=database_url)
                 for n in (1, 2)]
        try:
            done = threading.Event()
            threading.Thread(target=_produce, args=(own, tag, done), daemon=True).start()
            wait_until(lambda: all(s.metric("guardstream_sink_rows_written_total") > 0 for s in sinks)
                       and _rows(database_url) >= TOTAL * 0.3, 60, "both sinks writing, 30 % written")
            written = [s.metric("guardstream_sink_rows_written_total") for s in sinks]
            sinks[1].kill()
            assert not done.is_set(), "the stream ended before the kill; nothing was tested mid-stream"
            assert done.wait(60), "producer did not finish"
            wait_until(lambda: _rows(database_url) >= TOTAL, 90, f"{TOTAL} rows")
            survivor = sinks[0].metric("guardstream_sink_rows_written_total")
        finally:
            for s in sinks:
                s.stop()
    positions = _count(database_url, "SELECT count(*) FROM guard_positions")
    telemetry = _count(database_url, "SELECT count(*) FROM device_telemetry")
    distinct = _count(database_url, "SELECT (SELECT count(DISTINCT event_id) FROM guard_positions)"
                                    " + (SELECT count(DISTINCT event_id) FROM device_telemetry)")
    print(f"\nrows written per sink when the second was killed: {written}; the survivor's total {survivor}; "
          f"rows: positions {positions}, telemetry {telemetry}, distinct event ids {distinct}")
    assert min(written) > 0  # both sinks took partitions
    assert positions == telemetry == TOTAL // 2
    assert distinct == TOTAL
