"""``guardstream sink`` as a real process against tansu and PostgreSQL.

Each test gives the sink its own database and consumer groups, started at the
topics' current end, so records other tests left on the shared topics are not
read. The database outage runs through a small TCP proxy in front of the real
PostgreSQL that this test closes and reopens.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from support.processes import Component, start_component

from guardstream.catalog import TOPICS
from guardstream.infra.migrate import migrate
from guardstream.infra.stack import wait_until
from guardstream.kafka import consumer_config, produce, producer_config
from guardstream.schemas.codec import Codec
from guardstream.schemas.registry import FileRegistry
from guardstream.settings import Settings
from guardstream.topic_end import probe_end_offsets

pytestmark = pytest.mark.slow

T0 = 1_795_000_000_000
CODEC = Codec(FileRegistry.load())
SINK_TOPICS = [t.name for t in TOPICS.events()] + [
    TOPICS.geofences.name, *(t.name for t in TOPICS.dead_letters()), TOPICS.alerts_actions.name]


# -- records ---------------------------------------------------------------------------------

def telemetry(tag: str, i: int, battery: float = 55.0) -> dict:
    return {"event_id": f"{tag}-tel-{i}", "tenant": tag, "device_id": f"dev-{i % 50}", "ts_ms": T0 + i,
            "received_ms": T0 + i + 40, "battery_pct": battery, "charging": None, "signal_dbm": -70,
            "temperature_c": None, "firmware": "2.4.1"}


def position(tag: str, i: int) -> dict:
    return {"event_id": f"{tag}-pos-{i}", "tenant": tag, "device_id": f"guard-{i % 20}", "ts_ms": T0 + i,
            "received_ms": T0 + i + 40, "lat": 52.52, "lon": 13.40, "accuracy_m": 4.0, "speed_mps": None,
            "heading_deg": None, "altitude_m": None, "fences": [], "in_site": None, "violation": False}


def reading(tag: str, i: int) -> dict:
    return {"event_id": f"{tag}-sen-{i}", "tenant": tag, "device_id": f"sensor-{i % 30}", "ts_ms": T0 + i,
            "received_ms": T0 + i + 40, "kind": "DOOR", "site_id": "hq", "value": None, "unit": None,
            "state": "open"}


def alert(tag: str, i: int) -> dict:
    return {"event_id": f"{tag}-al-{i}", "tenant": tag, "device_id": f"guard-{i % 20}", "ts_ms": T0 + i,
            "received_ms": T0 + i + 40, "kind": "PANIC", "severity": "CRITICAL", "lat": None, "lon": None,
            "message": "panic", "rule": None, "cause_event_id": None}


def action(tag: str, action_id: str, alert_id: str, kind: str, ts_ms: int) -> dict:
    return {"action_id": f"{tag}-{action_id}", "tenant": tag, "alert_event_id": alert_id, "action": kind,
            "actor": "op", "ts_ms": ts_ms, "note": None}


KINDS = {  # record builder -> (schema, topic, table)
    telemetry: ("guardstream.Telemetry", TOPICS.events_low.name, "device_telemetry"),
    position: ("guardstream.GuardPosition", TOPICS.events_high.name, "guard_positions"),
    reading: ("guardstream.SensorReading", TOPICS.events_normal.name, "sensor_readings"),
    alert: ("guardstream.DeviceAlert", TOPICS.events_critical.name, "device_alerts"),
}


class Events:
    """A producer of Avro records, the way the stream workers write them."""

    def __init__(self, settings: Settings) -> None:
        self.producer = Producer(producer_config(settings, "test-sink-events"))

    def send(self, topic: str, schema: str | None, record: dict | None, key: str) -> None:
        value = CODEC.encode(schema, record) if schema else None
        produce(self.producer, topic, value, key.encode())

    def event(self, build, tag: str, i: int, **extra) -> None:
        schema, topic, _ = KINDS[build]
        record = build(tag, i, **extra)
        self.send(topic, schema, record, record["device_id"])

    def flush(self) -> None:
        assert self.producer.flush(30) == 0


# -- the sink process -------------------------------------------------------------------------

@dataclass
class SinkProcess:
    """The sink of one test: its database and groups; started again after a kill, into the same log."""

    settings: Settings
    database_url: str
    group: str
    log: Path
    component: Component | None = None

    def start(self, extra_env: dict[str, str] | None = None) -> SinkProcess:
        self.component = start_component(["sink"], self.settings, self.log, ready_s=60,
                                         DATABASE_URL=self.database_url, GUARDSTREAM_SINK_GROUP=self.group,
                                         **(extra_env or {}))
        return self

    def ready(self) -> bool:
        return self.component.readyz()

    def metric(self, name: str, **labels: str) -> float:
        return self.component.metric(name, **labels)

    def kill(self) -> None:
        self.component.kill()

    def stop(self) -> None:
        if self.component is not None:
            self.component.stop(20)


def topic_ends(settings: Settings) -> dict[tuple[str, int], int]:
    """The exact end offset of every partition of the sink's topics."""
    metadata = Producer(producer_config(settings, "test-sink-meta")).list_topics(timeout=10)
    partitions = [(t, p) for t in SINK_TOPICS for p in metadata.topics[t].partitions]
    return {tp: end for tp, (_, end) in probe_end_offsets(settings, partitions).items()}


def start_groups_at_end(settings: Settings, group: str) -> None:
    """Commit the current end of every sink topic for the sink's two groups."""
    ends = topic_ends(settings)
    for name, wanted in ((group, SINK_TOPICS[1:]), (f"{group}-critical", SINK_TOPICS[:1])):
        consumer = Consumer(consumer_config(settings, "test-sink-offsets", name))
        try:
            consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in ends.items() if t in wanted],
                            asynchronous=False)
        finally:
            consumer.close()


@pytest.fixture
def sink_settings(applied: Settings) -> Settings:
    return applied


@pytest.fixture
def sink(sink_settings, database_url, unique, tmp_path) -> Iterator[SinkProcess]:
    migrate(database_url)
    group = f"test-sink-{unique}"
    start_groups_at_end(sink_settings, group)
    process = SinkProcess(sink_settings, database_url, group, tmp_path / "sink.log")
    yield process
    process.stop()


def count(url: str, query: str, *params) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute(query, params).fetchone()[0]


def read_dlq(settings: Settings, since: dict[tuple[str, int], int], want: int, timeout_s: float = 30) -> list:
    consumer = Consumer(consumer_config(settings, "test-sink-dlq", "test-sink-dlq"))
    consumer.assign([TopicPartition(t, p, o) for (t, p), o in since.items() if t == TOPICS.dlq_sink.name])
    out: list = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(out) < want and time.monotonic() < deadline:
            out += [m for m in consumer.consume(100, 0.2) if m.error() is None]
    finally:
        consumer.close()
    return out


# -- tests -----------------------------------------------------------------------------------

def test_every_topic_lands_in_its_table(sink, sink_settings, unique):
    sink.start()
    events = Events(sink_settings)
    tag = f"t{unique}"
    for build in KINDS:
        for i in range(40):
            events.event(build, tag, i)
    fence = {"fence_id": f"{tag}-hq", "tenant": tag, "name": "HQ", "kind": "SITE",
             "geometry": '{"type": "Point", "coordinates": [13.4, 52.5]}', "radius_m": 30.0, "updated_ms": T0}
    events.send(TOPICS.geofences.name, "guardstream.Geofence", fence, fence["fence_id"])
    events.send(TOPICS.geofences.name, "guardstream.Geofence", fence | {"fence_id": f"{tag}-old"}, f"{tag}-old")
    events.send(TOPICS.geofences.name, None, None, f"{tag}-old")
    letter = {"stage": "validate", "reason": "not_json", "detail": "x", "source_topic": "raw", "source_partition": 0,
              "source_offset": 7, "key": None, "payload": b"{", "ts_ms": T0}
    events.send(TOPICS.dlq_validate.name, "guardstream.DeadLetter", letter, "k")
    events.send(TOPICS.dlq_notify.name, "guardstream.DeadLetter",
                letter | {"stage": "notify", "reason": "provider_refused", "source_topic": None,
                          "source_partition": None, "source_offset": None}, "k")
    events.flush()
    url = sink.database_url
    wait_until(lambda: all(count(url, f"SELECT count(*) FROM {KINDS[b][2]} WHERE tenant = %s", tag) == 40
                           for b in KINDS), 60, "rows of every priority topic")
    wait_until(lambda: count(url, "SELECT count(*) FROM geofences WHERE tenant = %s", tag) == 2
               and count(url, "SELECT count(*) FROM geofences WHERE deleted") == 1, 30, "geofences")
    wait_until(lambda: count(url, "SELECT count(*) FROM dead_letters WHERE reason = 'not_json'") == 1, 30,
               "the dead letter of dlq.validate")
    wait_until(lambda: count(url, "SELECT count(*) FROM dead_letters WHERE stage = 'notify' "
                                  "AND reason = 'provider_refused'") == 1, 30, "the dead letter of dlq.notify")
    assert sink.metric("guardstream_sink_rows_written_total", kind="device_alerts") == 40
    assert sink.metric("guardstream_sink_batches_total", kind="critical") >= 1
    assert sink.metric("guardstream_sink_circuit_state") == 0


def test_an_alert_does_not_wait_for_a_backlog_of_other_priorities(sink, sink_settings, unique):
    # the bulk consumer's batch is made to wait ten minutes: only the critical consumer can write
    sink.start({"GUARDSTREAM_SINK_BATCH_ROWS": "1000000", "GUARDSTREAM_SINK_BATCH_MS": "600000"})
    events, tag, url = Events(sink_settings), f"i{unique}", sink.database_url
    for i in range(3000):
        events.event(telemetry, tag, i)
    events.event(alert, tag, 1)
    events.flush()
    wait_until(lambda: count(url, "SELECT count(*) FROM device_alerts WHERE tenant = %s", tag) == 1, 30,
               "the alert's row")
    assert count(url, "SELECT count(*) FROM device_telemetry") == 0


def test_alert_actions_update_status_and_a_stale_one_does_not(sink, sink_settings, unique):
    sink.start()
    events, tag, url = Events(sink_settings), f"a{unique}", sink.database_url
    acts = TOPICS.alerts_actions.name
    first, early = f"{tag}-al-1", f"{tag}-al-2"
    events.event(alert, tag, 1)
    events.send(acts, "guardstream.AlertAction", action(tag, "x1", first, "ACKNOWLEDGE", T0 + 1000), first)
    # an action for an alert the sink has not written yet: it waits for its alert
    events.send(acts, "guardstream.AlertAction", action(tag, "x2", early, "RESOLVE", T0 + 2000), early)
    events.flush()
    wait_until(lambda: count(url, "SELECT count(*) FROM device_alerts WHERE status = 'ACKNOWLEDGED'") == 1, 30,
               "the acknowledgement")
    wait_until(lambda: count(url, "SELECT count(*) FROM alert_actions_pending") == 1, 30, "the early action parked")
    events.event(alert, tag, 2)
    events.send(acts, "guardstream.AlertAction", action(tag, "x3", first, "FALSE_ALARM", T0 + 500), first)
    events.flush()
    wait_until(lambda: sink.metric("guardstream_sink_alert_actions_total", kind="stale") == 1, 30,
               "the stale action read")
    wait_until(lambda: count(url, "SELECT count(*) FROM device_alerts WHERE status = 'RESOLVED'") == 1, 30,
               "the early action applied when its alert arrived")
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT event_id, status, status_ts_ms FROM device_alerts ORDER BY 1").fetchall() == [
            (first, "ACKNOWLEDGED", T0 + 1000), (early, "RESOLVED", T0 + 2000)]
        assert conn.execute("SELECT count(*) FROM alert_actions_pending").fetchone() == (0,)


def test_a_poison_record_becomes_one_dead_letter_and_the_rest_is_written(sink, sink_settings, unique):
    sink.start()
    since = topic_ends(sink_settings)  # where dlq.sink ends now
    events, tag, url = Events(sink_settings), f"p{unique}", sink.database_url
    for i in range(300):
        events.event(telemetry, tag, i, battery=150.0 if i == 123 else 50.0)
    events.flush()
    wait_until(lambda: count(url, "SELECT count(*) FROM device_telemetry WHERE tenant = %s", tag) == 299, 60,
               "the good rows")
    # the sink reads dlq.sink back into dead_letters, like every other dead-letter topic
    wait_until(lambda: count(url, "SELECT count(*) FROM dead_letters WHERE stage = 'sink'") == 1, 30,
               "the dead letter in its table")
    dlq = [tp for tp in since if tp[0] == TOPICS.dlq_sink.name]
    assert sum(end for tp, end in topic_ends(sink_settings).items() if tp in dlq) - sum(since[tp] for tp in dlq) == 1
    letters = read_dlq(sink_settings, since, want=1)
    headers = {k: v.decode() for k, v in letters[0].headers()}
    assert headers["__connect.errors.topic"] == TOPICS.events_low.name
    assert headers["__connect.errors.stage"] == "sink"
    assert headers["__connect.errors.exception.class.name"] == "check_violation"
    assert "battery_pct" in headers["__connect.errors.exception.message"]
    name, record = CODEC.decode(letters[0].value())
    assert name == "guardstream.DeadLetter"
    assert (record["source_topic"], record["source_partition"], record["source_offset"]) == (
        headers["__connect.errors.topic"], int(headers["__connect.errors.partition"]),
        int(headers["__connect.errors.offset"]))
    assert CODEC.decode(record["payload"])[1]["event_id"] == f"{tag}-tel-123"
    assert sink.metric("guardstream_sink_dead_letters_total", reason="check_violation") == 1


def _produce_mix(events: Events, tag: str, start: int, stop: int) -> None:
    builds = list(KINDS)
    for i in range(start, stop):
        events.event(builds[i % 4], tag, i)
        if i % 10 == 0:  # a redelivered event: same event_id, must not become a second row
            events.event(builds[i % 4], tag, i)
    events.flush()


def _rows_of(url: str, tag: str) -> int:
    return sum(count(url, f"SELECT count(*) FROM {table} WHERE tenant = %s", tag) for _, _, table in KINDS.values())


def test_kill_9_in_the_middle_of_a_stream_loses_nothing_and_doubles_nothing(sink, sink_settings, unique, tmp_path):
    total = 20_000
    events, tag, url = Events(sink_settings), f"k{unique}", sink.database_url
    sink.start()
    producing = threading.Thread(target=_produce_mix, args=(events, tag, 0, total // 2))
    producing.start()
    wait_until(lambda: _rows_of(url, tag) >= 2000, 60, "the first rows")
    sink.kill()
    producing.join()
    written_at_kill = _rows_of(url, tag)
    _produce_mix(events, tag, total // 2, total)
    sink.start()
    wait_until(lambda: _rows_of(url, tag) >= total, 120, f"{total} rows")
    assert 2000 <= written_at_kill < total
    for build, (_, _, table) in KINDS.items():
        assert count(url, f"SELECT count(*) FROM {table} WHERE tenant = %s", tag) == total // 4, table
        assert count(url, f"SELECT count(DISTINCT event_id) FROM {table} WHERE tenant = %s", tag) == total // 4
    assert count(url, "SELECT count(*) FROM dead_letters") == 0


# -- a database that goes away ------------------------------------------------------------------

class FlakyProxy:
    """A TCP proxy to PostgreSQL that can drop every connection and refuse new ones."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.up = threading.Event()
        self.up.set()
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.up.is_set():
                client.close()  # refused: the client sees the server close the connection
                continue
            upstream = socket.create_connection(self.target)
            with self._lock:
                self._open |= {client, upstream}
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def down(self) -> None:
        self.up.clear()
        with self._lock:
            for s in self._open:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self._open.clear()

    def restore(self) -> None:
        self.up.set()

    def close(self) -> None:
        self.down()
        self.listener.close()


def test_a_database_outage_under_load_loses_nothing_and_opens_the_circuit(sink, sink_settings, unique):
    parts = urlsplit(sink.database_url)
    if not parts.hostname or parts.hostname.startswith("/"):
        pytest.skip("the test PostgreSQL is not reachable over TCP")
    proxy = FlakyProxy(parts.hostname, parts.port or 5432)
    real_url = sink.database_url
    sink.database_url = urlunsplit(parts._replace(netloc=f"{parts.username or 'postgres'}@127.0.0.1:{proxy.port}"))
    try:
        sink.start({"GUARDSTREAM_SINK_RETRY_MAX_MS": "1000"})
        events, tag = Events(sink_settings), f"d{unique}"
        _produce_mix(events, tag, 0, 2000)
        wait_until(lambda: _rows_of(real_url, tag) == 2000, 60, "rows before the outage")
        proxy.down()
        outage_started = time.monotonic()
        producing = threading.Thread(target=_produce_mix, args=(events, tag, 2000, 8000))
        producing.start()
        wait_until(lambda: sink.metric("guardstream_sink_circuit_state") == 2, 30, "the circuit to open")
        wait_until(lambda: sink.metric("guardstream_sink_paused") >= 1, 30, "the consumers to pause")
        assert not sink.ready()
        producing.join()
        # the outage lasts about ten seconds, whatever the sink does meanwhile
        wait_until(lambda: time.monotonic() - outage_started >= 10, 15, "ten seconds of outage")
        assert _rows_of(real_url, tag) < 8000
        proxy.restore()
        wait_until(lambda: _rows_of(real_url, tag) == 8000, 60, "every row after the outage")
        wait_until(lambda: sink.metric("guardstream_sink_circuit_state") == 0, 30, "the circuit to close")
        assert sink.metric("guardstream_sink_retries_total") >= 3
        assert sink.metric("guardstream_sink_paused") == 0
        assert count(real_url, "SELECT count(*) FROM dead_letters") == 0
    finally:
        proxy.close()
