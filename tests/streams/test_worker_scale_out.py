"""Workers scaling out and failing over mid-stream: 1 -> 3 -> 2 real processes on a broker of the
test's own with six partitions per topic, fixes and alerts flowing throughout."""

import json
import threading
import time

import pytest
from confluent_kafka import Producer
from support.fences import CODEC, import_fences
from support.processes import WORKER_ENGINES, collect
from support.scaled import broker_with_partitions, restored_entries

from guardstream.catalog import TOPICS
from guardstream.infra.stack import wait_until

pytestmark = pytest.mark.slow
INSIDE, FAR_OUT = (52.521, 13.405), (52.530, 13.430)
PARTITIONS = 6
DEVICES, FIXES, ALERT_EVERY = 240, 200, 24  # 48,000 fixes and 2,000 alerts
RATE = 2500  # messages per second offered


@pytest.fixture
def scaled(settings, tmp_path):
    with broker_with_partitions(settings, tmp_path / "tansu.log", PARTITIONS) as own:
        yield own


def _publish(settings, devices, tenant, base_s, done):
    """Each device: five fixes inside the fence, five far outside, over and over; every
    ALERT_EVERY-th message a panic alert of the device."""
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers, "linger.ms": 5})
    started, sent = time.monotonic(), 0
    for seq in range(FIXES):
        at = INSIDE if seq % 10 < 5 else FAR_OUT
        for device in devices:
            now = str(time.time_ns() // 1_000_000).encode()
            producer.produce(TOPICS.raw_guard.name, json.dumps(
                {"ts": base_s + seq, "lat": at[0], "lon": at[1], "accuracy_m": 4, "tenant": tenant}).encode(),
                device.encode(), headers=[("msg.id", f"{device}-{seq}".encode()), ("received_ms", now)])
            sent += 1
            if sent % ALERT_EVERY == 0:
                producer.produce(TOPICS.raw_alert.name, json.dumps(
                    {"ts": base_s + seq, "kind": "PANIC", "tenant": tenant}).encode(), device.encode(),
                    headers=[("msg.id", f"{device}-panic-{seq}".encode()), ("received_ms", now)])
        producer.poll(0)
        lag = (seq + 1) * len(devices) * (1 + 1 / ALERT_EVERY) / RATE - (time.monotonic() - started)
        if lag > 0:
            done.wait(lag)  # pacing the load, not synchronising
    producer.flush(60)
    done.set()


def _taken(workers) -> float:
    return sum(w.metric("guardstream_worker_records_in_total") for w in workers if w.process.poll() is None)


@pytest.mark.parametrize("engine", WORKER_ENGINES)
def test_workers_going_1_3_2_mid_stream_write_every_event_once_and_carry_device_state(
        scaled, run_component, tmp_path, unique, engine):
    tenant = f"t{unique}"
    import_fences(scaled, tmp_path, tenant, [f"hq-{unique}"])
    devices = [f"s{i}-{unique}" for i in range(DEVICES)]
    total_fixes = DEVICES * FIXES
    alerts = total_fixes // ALERT_EVERY
    started = time.monotonic()

    first = run_component(["worker"], scaled, GUARDSTREAM_WORKER_ENGINE=engine)
    done = threading.Event()
    base_s = int(time.time()) - FIXES - 60
    threading.Thread(target=_publish, args=(scaled, devices, tenant, base_s, done), daemon=True).start()
    wait_until(lambda: _taken([first]) >= total_fixes * 0.15, 60, "the first worker took 15 %")
    second, third = (run_component(["worker"], scaled, GUARDSTREAM_WORKER_ENGINE=engine) for _ in range(2))
    share = total_fixes * 0.02
    wait_until(lambda: second.metric("guardstream_worker_records_in_total") >= share
               and third.metric("guardstream_worker_records_in_total") >= share, 60, "three workers share the load")
    taken_before_kill = {"first": _taken([first]), "second": _taken([second]), "third": _taken([third])}
    second.kill()
    assert not done.is_set(), "the stream ended before the kill; nothing was tested mid-stream"
    assert done.wait(90), "publisher did not finish"

    event_id = lambda r: CODEC.decode(r.value())[1]["event_id"]  # noqa: E731
    positions = collect(scaled, TOPICS.events_high.name, lambda r: True, total_fixes, timeout_s=90,
                        distinct=event_id)
    position_ids = [event_id(r) for r in positions]
    per_device = FIXES // 10
    critical_wanted = 3 * per_device * DEVICES + alerts
    critical = [CODEC.decode(r.value())[1] for r in collect(
        scaled, TOPICS.events_critical.name, lambda r: True, critical_wanted, timeout_s=60, distinct=event_id)]
    distinct = {e["event_id"]: e for e in critical}
    restored = {"first": restored_entries(first), "second": restored_entries(second),
                "third": restored_entries(third)}
    print(f"\n{DEVICES} devices, {total_fixes} fixes + {alerts} alerts on {PARTITIONS} partitions, "
          f"{time.monotonic() - started:.1f} s; records taken when the second was killed: {taken_before_kill}; "
          f"state entries restored per assignment: {restored}; positions written {len(positions)}, "
          f"distinct {len(set(position_ids))}; critical written {len(critical)}, distinct {len(distinct)}")

    assert len(set(position_ids)) == total_fixes  # every fix became a position, once by id
    transitions = sorted((e for e in distinct.values() if "transition" in e), key=lambda e: e["ts_ms"])
    violations = [e for e in distinct.values() if e.get("kind") == "GEOFENCE_VIOLATION"]
    panics = [e for e in distinct.values() if e.get("kind") == "PANIC"]
    by_device: dict[str, list[dict]] = {d: [] for d in devices}
    for e in transitions:
        by_device[e["device_id"]].append(e)
    for device, events in by_device.items():
        assert [e["transition"] for e in events] == ["ENTER", "EXIT"] * per_device, device
        # dwell is from the ENTER's fix to the EXIT's: five fixes a second apart, whichever worker saw them
        assert {e["dwell_ms"] for e in events if e["transition"] == "EXIT"} == {5000}, device
    assert len(violations) == per_device * DEVICES  # the latch: one violation per time outside
    assert len(panics) == alerts
    assert len(distinct) == critical_wanted
    # partitions moved with state: the workers that joined (and the survivors after the kill) read it back
    assert sum(restored["second"]) + sum(restored["third"]) > 0
