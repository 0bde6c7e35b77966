"""The device registry in a running worker on tansu: live disable and enable, tenant mismatch, unknown
devices, and a randomised cross-tenant injection run through the worker and the sink into PostgreSQL."""

from __future__ import annotations

import json
import random
import time
from collections import Counter

import psycopg
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from guardstream.catalog import TOPICS
from guardstream.infra.migrate import migrate
from guardstream.infra.stack import wait_until
from guardstream.records import device
from guardstream.schemas.codec import Codec
from guardstream.schemas.registry import FileRegistry
from guardstream.streams import device_admin
from support.processes import WORKER_ENGINES

pytestmark = pytest.mark.slow
CODEC = Codec(FileRegistry.load())
REASON = "__connect.errors.exception.class.name"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def register(settings, *devices: tuple[str, str, bool]) -> None:
    device_admin.write(settings, CODEC, [device(device_id=d, tenant=t, kind="GUARD", enabled=on, updated_ms=now_ms())
                                         for d, t, on in devices])


class Raw:
    """Raw records as the bridge writes them, each with a new msg.id."""

    def __init__(self, settings, tag: str) -> None:
        self.producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers, "linger.ms": 5})
        self.tag, self.sent = tag, 0

    def send(self, topic: str, key: str, payload: dict) -> str:
        self.sent += 1
        msg_id = f"{self.tag}-{self.sent}"
        self.producer.produce(topic, json.dumps(payload).encode(), key.encode(),
                              headers=[("msg.id", msg_id.encode()), ("received_ms", str(now_ms()).encode())])
        self.producer.poll(0)
        return msg_id

    def panic(self, key: str, **payload) -> str:
        return self.send(TOPICS.raw_alert.name, key, {"ts": now_ms(), "kind": "panic", **payload})

    def flush(self) -> None:
        assert self.producer.flush(30) == 0


class Outcomes:
    """What became of each msg.id: the tenant of its event on events.critical, or its dead letter's reason."""

    def __init__(self, settings) -> None:
        self.consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap_servers, "group.id": "test-outcomes",
                                  "enable.auto.commit": False, "fetch.wait.max.ms": 50})
        self.consumer.assign([TopicPartition(t, p, 0) for t in (TOPICS.events_critical.name, TOPICS.dlq_validate.name)
                              for p in self.consumer.list_topics(t, timeout=10).topics[t].partitions])
        self.by_msg: dict[str, str] = {}

    def poll(self) -> None:
        for record in self.consumer.consume(1000, 0.2):
            if record.error() is not None:
                continue
            if record.topic() == TOPICS.dlq_validate.name:
                letter = CODEC.decode(record.value())[1]
                headers = dict(record.headers() or [])
                try:  # other tests' letters share the topic, some of them not JSON at all
                    source = json.loads(letter["payload"])
                except ValueError:
                    continue
                if isinstance(source, dict):
                    self.by_msg[source.get("_msg", "")] = f"dead:{headers[REASON].decode()}"
            else:
                event = CODEC.decode(record.value())[1]
                self.by_msg[event["event_id"]] = f"tenant:{event['tenant']}"

    def outcome(self, msg_id: str, timeout_s: float = 30) -> str:
        wait_until(lambda: self.poll() or msg_id in self.by_msg, timeout_s, f"outcome of {msg_id}")
        return self.by_msg[msg_id]

    def close(self) -> None:
        self.consumer.close()


@pytest.mark.parametrize("engine", WORKER_ENGINES)
def test_the_registry_decides_the_tenant_and_changes_apply_without_a_restart(applied, run_component, unique,
                                                                            engine):
    acme, globex, guard = f"acme{unique}", f"globex{unique}", f"g-{unique}"
    register(applied, (guard, acme, True))
    worker = run_component(["worker"], applied, GUARDSTREAM_UNKNOWN_DEVICES="dead_letter",
                           GUARDSTREAM_WORKER_ENGINE=engine)
    raw, seen = Raw(applied, unique), Outcomes(applied)
    try:
        def panic(key: str, n: int, **payload) -> str:
            # the payload carries its own msg id too, so its dead letter can be told apart
            msg_id = raw.panic(key, _msg=f"{unique}-{raw.sent + 1}", **payload)
            assert msg_id == f"{unique}-{raw.sent}"
            raw.flush()
            return seen.outcome(msg_id)

        assert panic(guard, 1) == f"tenant:{acme}"
        assert panic(guard, 2, tenant=acme) == f"tenant:{acme}"
        assert panic(guard, 3, tenant=globex) == "dead:tenant_mismatch"
        assert panic(guard, 4, client_id=globex) == "dead:tenant_mismatch"
        assert panic(f"stranger-{unique}", 5, tenant=acme) == "dead:unknown_device"
        assert worker.metric("guardstream_worker_registry_devices") >= 1
        assert worker.metric("guardstream_worker_dead_letters_total", reason="tenant_mismatch") >= 2

        # disabled while the worker runs: its next records are refused, once the worker has read the change
        device_admin.set_enabled(applied, CODEC, guard, False)
        refused: list[str] = []
        wait_until(lambda: refused.append(panic(guard, 6)) or refused[-1] == "dead:device_disabled", 30,
                   "the disable reaching the worker")
        assert set(refused) <= {f"tenant:{acme}", "dead:device_disabled"}
        assert panic(guard, 7) == "dead:device_disabled"

        device_admin.set_enabled(applied, CODEC, guard, True)
        accepted: list[str] = []
        wait_until(lambda: accepted.append(panic(guard, 8)) or accepted[-1] == f"tenant:{acme}", 30,
                   "the enable reaching the worker")
        # moved to another tenant: the old tenant's claim is now the mismatch
        register(applied, (guard, globex, True))
        moved: list[str] = []
        wait_until(lambda: moved.append(panic(guard, 9, tenant=globex)) or moved[-1] == f"tenant:{globex}", 30,
                   "the move reaching the worker")
        assert panic(guard, 10, tenant=acme) == "dead:tenant_mismatch"
    finally:
        seen.close()


@pytest.mark.parametrize("engine", WORKER_ENGINES)
def test_cross_tenant_injection_never_reaches_another_tenants_rows(applied, run_component, database_url, unique,
                                                                 engine):
    """Three tenants, ten devices each; every device sends panics and fixes naming no tenant, its own, or one of
    the other two, at random. In PostgreSQL no row of a tenant comes from another tenant's device."""
    rng = random.Random(unique)
    tenants = [f"t{i}{unique}" for i in range(3)]
    owner = {f"d{i}-{unique}": tenants[i % 3] for i in range(30)}
    register(applied, *((d, t, True) for d, t in owner.items()))
    migrate(database_url)
    run_component(["worker"], applied, GUARDSTREAM_UNKNOWN_DEVICES="dead_letter", GUARDSTREAM_WORKER_ENGINE=engine)
    run_component(["sink"], applied, DATABASE_URL=database_url, GUARDSTREAM_SINK_GROUP=f"test-sink-{unique}")
    raw = Raw(applied, unique)
    expected: Counter[str] = Counter()  # accepted rows per table, dead letters
    base_s = int(time.time()) - 900  # fix times a second apart, all in the past
    for n in range(600):
        device_id = rng.choice(list(owner))
        claim = rng.choice([None, owner[device_id], *[t for t in tenants if t != owner[device_id]]])
        named = {} if claim is None else {"tenant": claim}
        if rng.random() < 0.5:
            raw.send(TOPICS.raw_alert.name, device_id, {"ts": base_s + n, "kind": "panic", **named})
            table = "device_alerts"
        else:
            raw.send(TOPICS.raw_guard.name, device_id, {"ts": base_s + n, "lat": 52.5, "lon": 13.4, **named})
            table = "guard_positions"
        expected[table if claim in (None, owner[device_id]) else "tenant_mismatch"] += 1
    raw.flush()
    assert expected["tenant_mismatch"] > 100 and expected["device_alerts"] > 50  # the run tried both, often

    def count(query: str) -> int:
        with psycopg.connect(database_url) as conn:
            return conn.execute(query, (list(owner),)).fetchone()[0]

    landed: Counter[str] = Counter()

    def all_landed() -> bool:
        landed["device_alerts"] = count("SELECT count(*) FROM device_alerts WHERE device_id = ANY(%s) AND rule IS NULL")
        landed["guard_positions"] = count("SELECT count(*) FROM guard_positions WHERE device_id = ANY(%s)")
        landed["tenant_mismatch"] = count("SELECT count(*) FROM dead_letters WHERE convert_from(key, 'UTF8') = ANY(%s)"
                                          " AND reason = 'tenant_mismatch'")
        return landed == expected
    try:
        wait_until(all_landed, 90, "every record in PostgreSQL, as an event or a dead letter")
    finally:
        print(f"sent {sum(expected.values())}: expected {dict(expected)}, landed {dict(landed)}")

    with psycopg.connect(database_url) as conn:
        for table in ("device_alerts", "guard_positions", "geofence_events"):
            rows = conn.execute(f"SELECT device_id, tenant FROM {table} WHERE device_id = ANY(%s)",
                                (list(owner),)).fetchall()
            crossed = [(d, t) for d, t in rows if t != owner[d]]
            assert crossed == [], f"{table}: {len(crossed)} row(s) in another tenant's data"
