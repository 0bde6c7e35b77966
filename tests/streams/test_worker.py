"""The stream worker as a real process on tansu: raw records in, events out, state kept across restarts.

Every test runs on both engines (``GUARDSTREAM_WORKER_ENGINE``): the same guarantees on each."""

import json
import signal
import threading
import time

import pytest
from confluent_kafka import Producer

from guardstream.catalog import TOPICS
from guardstream.infra.stack import wait_until
from guardstream.schemas.codec import Codec
from guardstream.schemas.registry import FileRegistry
from guardstream.streams import fence_admin
from support.fences import FAR_OUT, INSIDE, publish_patrols
from support.processes import collect, header

pytestmark = pytest.mark.slow
HQ = [[13.400, 52.519], [13.410, 52.519], [13.410, 52.523], [13.400, 52.523], [13.400, 52.519]]


@pytest.fixture(params=["batch", "faust"])
def engine(request):
    """The environment that picks the worker's engine."""
    return {"GUARDSTREAM_WORKER_ENGINE": request.param}


@pytest.fixture
def fences(applied, tmp_path, unique):
    tenant = f"t{unique}"
    path = tmp_path / "fences.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"id": f"hq-{unique}", "name": "HQ", "kind": "site"},
         "geometry": {"type": "Polygon", "coordinates": [HQ]}}]}))
    fence_admin.import_file(applied, Codec(FileRegistry.load()), path, tenant)
    return tenant


def _send(settings, topic, key, payload, seq):
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers})
    now = time.time_ns() // 1_000_000
    producer.produce(topic, payload if isinstance(payload, bytes) else json.dumps(payload).encode(), key.encode(),
                     headers=[("msg.id", f"{key}-{seq}".encode()), ("received_ms", str(now).encode())])
    producer.flush(10)


BASE_S = int(time.time()) - 60  # fix times: a minute ago, one second apart


def _fix(settings, device, tenant, at, seq):
    _send(settings, TOPICS.raw_guard.name, device,
          {"ts": BASE_S + seq, "lat": at[0], "lon": at[1], "accuracy_m": 4, "tenant": tenant}, seq)


def _decoded(records):
    codec = Codec(FileRegistry.load())
    return [codec.decode(r.value())[1] for r in records]


def test_enrichment_dead_letters_and_state_across_a_restart(applied, run_component, fences, unique, engine):
    tenant, device = fences, f"g-{unique}"
    worker = run_component(["worker"], applied, **engine)
    mine = lambda r: r.key() == device.encode()  # noqa: E731

    _fix(applied, device, tenant, INSIDE, 1)
    [position] = _decoded(collect(applied, TOPICS.events_high.name, mine, 1))
    assert position["fences"] == [f"hq-{unique}"] and position["in_site"] is True
    [enter] = _decoded(collect(applied, TOPICS.events_critical.name, mine, 1))
    assert enter["transition"] == "ENTER"

    _send(applied, TOPICS.raw_guard.name, device, b"{broken", 2)
    [dead] = collect(applied, TOPICS.dlq_validate.name, mine, 1)
    assert header(dead, "__connect.errors.exception.class.name") == b"not_json"
    assert header(dead, "__connect.errors.topic") == TOPICS.raw_guard.name.encode()

    # the worker goes down hard; its successor must remember the guard is inside
    worker.process.send_signal(signal.SIGKILL)
    worker.process.wait()
    run_component(["worker"], applied, **engine)
    _fix(applied, device, tenant, FAR_OUT, 3)
    events = _decoded(collect(applied, TOPICS.events_critical.name, mine, 3))
    exits = [e for e in events if e.get("transition") == "EXIT"]
    assert len(exits) == 1 and exits[0]["dwell_ms"] == 2000
    assert [e["kind"] for e in events if "kind" in e] == ["GEOFENCE_VIOLATION"]



def test_kill_9_mid_stream_loses_no_event_and_repeats_no_transition(applied, run_component, fences, unique,
                                                                     engine):
    tenant, fixes = fences, 150
    devices = [f"p{i}-{unique}" for i in range(20)]
    mine = lambda r: r.key() is not None and r.key().decode().endswith(unique)  # noqa: E731
    event_id = lambda r: Codec(FileRegistry.load()).decode(r.value())[1]["event_id"]  # noqa: E731
    worker = run_component(["worker"], applied, **engine)
    done = threading.Event()
    base_s = int(time.time()) - fixes - 60
    threading.Thread(target=publish_patrols, args=(applied, devices, fixes, tenant, base_s, 1000, done),
                     daemon=True).start()
    wait_until(lambda: worker.metric("guardstream_worker_records_in_total") >= 1000, 60, "1000 fixes taken")
    worker.process.send_signal(signal.SIGKILL)
    worker.process.wait()
    assert not done.is_set(), "the stream ended before the kill; nothing was tested mid-stream"
    run_component(["worker"], applied, **engine)
    assert done.wait(60), "publisher did not finish"

    total = fixes * len(devices)
    positions = collect(applied, TOPICS.events_high.name, mine, total, timeout_s=90, distinct=event_id)
    assert len({event_id(r) for r in positions}) == total  # every fix became a position, once by id

    # five in, five out: an ENTER and an EXIT per ten fixes, a violation each time outside
    per_device = fixes // 10
    critical = _decoded(collect(applied, TOPICS.events_critical.name, mine, 3 * per_device * len(devices),
                                timeout_s=90, distinct=event_id))
    distinct = {e["event_id"]: e for e in critical}
    transitions = sorted((e for e in distinct.values() if "transition" in e), key=lambda e: e["ts_ms"])
    violations = [e for e in distinct.values() if e.get("kind") == "GEOFENCE_VIOLATION"]
    for device in devices:
        got = [e["transition"] for e in transitions if e["device_id"] == device]
        assert got == ["ENTER", "EXIT"] * per_device, f"{device}: {got}"
    assert len(violations) == per_device * len(devices)
    # whatever was written twice after the kill is the same event, not a new one
    assert len(distinct) == 3 * per_device * len(devices)
