"""Snapshot, then live: a client that subscribes while events flow misses none and sees none twice.

Real sink, gateway, tansu and PostgreSQL. The sink's groups start at the
topics' end and write a database of this test's own; the gateway reads it.
Every record's offset is known from its delivery report, so the test checks
the snapshot against exactly the records at or below the offsets it states,
and the events after it against exactly the records above.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from gateway_support import CODEC, GatewayProcess, next_message, start_gateway, token, ws
from support.processes import Component, start_component

from guardstream.catalog import TOPICS
from guardstream.gateway.snapshot import records
from guardstream.infra.migrate import migrate
from guardstream.infra.stack import wait_until
from guardstream.kafka import consumer_config, producer_config
from guardstream.records import DEVICE_ALERT, GUARD_POSITION
from guardstream.settings import Settings
from guardstream.topic_end import probe_end_offsets

ALERTS, POSITIONS = TOPICS.events_critical.name, TOPICS.events_high.name
SINK_BULK = [t.name for t in TOPICS.events()[1:]] + [TOPICS.geofences.name, TOPICS.dlq_bridge.name,
                                                      TOPICS.dlq_validate.name, TOPICS.dlq_sink.name,
                                                      TOPICS.alerts_actions.name]
GUARDS = 20


def start_groups_at_end(settings: Settings, group: str) -> None:
    metadata = Producer(producer_config(settings, "test-snapshot-meta")).list_topics(timeout=10)
    wanted = {group: SINK_BULK, f"{group}-critical": [ALERTS]}
    for name, topics in wanted.items():
        partitions = [(t, p) for t in topics for p in metadata.topics[t].partitions]
        ends = probe_end_offsets(settings, partitions)
        consumer = Consumer(consumer_config(settings, "test-snapshot-offsets", name))
        try:
            consumer.commit(offsets=[TopicPartition(t, p, end) for (t, p), (_, end) in ends.items()],
                            asynchronous=False)
        finally:
            consumer.close()


class Flow:
    """Alerts and positions of one tenant, produced at a steady rate; each record's offset noted."""

    def __init__(self, settings: Settings, tenant: str) -> None:
        self.tenant = tenant
        self.producer = Producer(producer_config(settings, "test-snapshot-flow", **{"linger.ms": 5}))
        self.sent: dict[str, tuple[str, int, int, dict[str, Any]]] = {}  # event id -> (topic, partition, offset)
        self.n = 0
        self.stop = threading.Event()
        self.producing = threading.Thread(target=self.run, args=(1000, 4.0), daemon=True)

    def record(self) -> tuple[str, str, dict[str, Any]]:
        self.n += 1
        now = time.time_ns() // 1_000_000
        guard = f"{self.tenant}-g{self.n % GUARDS}"
        if self.n % 5 == 0:
            return ALERTS, DEVICE_ALERT, {
                "event_id": f"{self.tenant}-a{self.n}", "tenant": self.tenant, "device_id": guard, "ts_ms": now,
                "received_ms": now, "kind": "PANIC", "severity": "CRITICAL", "lat": 52.5, "lon": 13.4,
                "message": None, "rule": None, "cause_event_id": None}
        return POSITIONS, GUARD_POSITION, {
            "event_id": f"{self.tenant}-p{self.n}", "tenant": self.tenant, "device_id": guard, "ts_ms": now + self.n,
            "received_ms": now, "lat": 52.5 + self.n / 1e6, "lon": 13.4, "accuracy_m": None, "speed_mps": None,
            "heading_deg": None, "altitude_m": None, "fences": [], "in_site": None, "violation": False}

    def produce(self, count: int) -> None:
        for _ in range(count):
            topic, schema, record = self.record()

            def noted(error: Any, message: Any, record: dict[str, Any] = record) -> None:
                assert error is None, error
                self.sent[record["event_id"]] = (message.topic(), message.partition(), message.offset(), record)
            self.producer.produce(topic, CODEC.encode(schema, record), record["device_id"].encode(),
                                  on_delivery=noted)
            self.producer.poll(0)
        assert self.producer.flush(30) == 0

    def run(self, rate: int, seconds: float) -> None:
        """``rate`` records a second in bursts of a tenth of a second, until ``seconds`` or stop."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not self.stop.is_set():
            started = time.monotonic()
            self.produce(rate // 10)
            self.stop.wait(max(0.0, 0.1 - (time.monotonic() - started)))


@pytest.fixture
def stack(applied: Settings, database_url: str, unique: str,
          tmp_path) -> Iterator[tuple[GatewayProcess, str, Settings]]:
    migrate(database_url)
    group = f"test-snapshot-{unique}"
    start_groups_at_end(applied, group)
    sink: Component = start_component(["sink"], applied, tmp_path / "sink.log", ready_s=60,
                                      DATABASE_URL=database_url, GUARDSTREAM_SINK_GROUP=group)
    gateway = start_gateway(applied, tmp_path / "gateway.log", DATABASE_URL=database_url)
    yield gateway, database_url, applied
    gateway.stop()
    sink.stop(20)


def written(url: str, tenant: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT (SELECT count(*) FROM device_alerts WHERE tenant = %s) + "
                            "(SELECT count(*) FROM guard_positions WHERE tenant = %s)", (tenant, tenant)).fetchone()[0]


def due_after(sent: dict[str, tuple[str, int, int, dict[str, Any]]], end: dict[str, int]) -> set[str]:
    """The records a client must receive after a snapshot at ``end``: every alert above it, and the
    newest fix of each guard when it is above it (older fixes of a guard may conflate into it)."""
    def above(event_id: str) -> bool:
        topic, partition, offset, _ = sent[event_id]
        return offset > end[f"{topic}:{partition}"]

    newest: dict[str, dict[str, Any]] = {}
    for topic, _, _, record in sent.values():
        if topic == POSITIONS and record["ts_ms"] > newest.get(record["device_id"], {"ts_ms": -1})["ts_ms"]:
            newest[record["device_id"]] = record
    alerts = {eid for eid, (topic, _, _, _) in sent.items() if topic == ALERTS}
    return {eid for eid in alerts | {r["event_id"] for r in newest.values()} if above(eid)}


async def snapshot_then_live(gateway: GatewayProcess, tenant: str, flow: Flow) -> dict[str, Any]:
    """Subscribe with a snapshot while ``flow`` runs; read until every record produced is accounted for."""
    channels = [f"tenant:{tenant}:alerts", f"tenant:{tenant}:positions"]
    async with ws(gateway, token("ann", (tenant,), ("operator",))) as conn:
        assert (await next_message(conn))["type"] == "hello"
        await conn.send(json.dumps({"op": "subscribe", "channels": channels, "snapshot": True}))
        messages = []
        while not messages or messages[-1]["type"] != "snapshot_end":
            messages.append(await next_message(conn))
        end = messages[-1]["offsets"]
        deadline = time.monotonic() + 60
        while True:
            wanted = due_after(dict(flow.sent), end)
            if not flow.producing.is_alive() and wanted <= {m["data"]["event_id"] for m in messages
                                                            if m["type"] == "event"}:
                break
            assert time.monotonic() < deadline, "not every alert after the snapshot arrived"
            try:
                messages.append(await next_message(conn, 1.0))
            except TimeoutError:
                continue  # the flow is still running or its last records are on their way
        return {"messages": messages, "offsets": end}


def test_a_client_joining_while_events_flow_sees_each_event_after_the_snapshot_once(stack, unique):
    gateway, url, settings = stack
    tenant = f"snap{unique}"
    flow = Flow(settings, tenant)
    flow.produce(300)  # a present to start from: open alerts and every guard's position
    wait_until(lambda: written(url, tenant) == 300, 30, "the first records in PostgreSQL")
    flow.producing.start()
    wait_until(lambda: written(url, tenant) > 800, 30, "the flow reaching PostgreSQL")
    try:
        got = asyncio.run(snapshot_then_live(gateway, tenant, flow))
    finally:
        flow.stop.set()
        flow.producing.join(30)
    messages, offsets = got["messages"], got["offsets"]
    types = [m["type"] for m in messages]
    assert types[0] == "subscribed" and "live" in types and types.index("snapshot_end") < types.index("live")

    def held(event_id: str) -> bool:  # at or below the snapshot's offsets
        topic, partition, offset, _ = flow.sent[event_id]
        return offset <= offsets[f"{topic}:{partition}"]

    snapshot = [item for m in messages if m["type"] == "snapshot" for item in records(m)]
    events = [m for m in messages if m["type"] == "event"]
    # the snapshot is exactly the records at or below its offsets: every open alert, each guard's newest fix
    snap_alerts = sorted(i["event_id"] for i in snapshot if i["event_id"].startswith(f"{tenant}-a"))
    assert snap_alerts == sorted(e for e in flow.sent if e.startswith(f"{tenant}-a") and held(e))
    newest: dict[str, dict[str, Any]] = {}
    for event_id, (_, _, _, record) in flow.sent.items():
        if event_id.startswith(f"{tenant}-p") and held(event_id):
            if record["device_id"] not in newest or record["ts_ms"] > newest[record["device_id"]]["ts_ms"]:
                newest[record["device_id"]] = record
    snap_positions = {i["device_id"]: i["event_id"] for i in snapshot if i["event_id"].startswith(f"{tenant}-p")}
    assert snap_positions == {d: r["event_id"] for d, r in newest.items()}
    # then nothing the snapshot holds, nothing twice, and every alert after it (positions may conflate)
    ids = [e["data"]["event_id"] for e in events]
    assert len(ids) == len(set(ids))
    assert not [i for i in ids if held(i)]
    after = {e for e, (t, _, _, _) in flow.sent.items() if t == ALERTS and not held(e)}
    assert after and after <= set(ids)
    assert due_after(flow.sent, offsets) <= set(ids)  # each guard's newest fix too, if the snapshot lacks it
