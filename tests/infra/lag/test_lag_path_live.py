"""``guardstream lag`` against real servers: the whole path's queues, the first stage behind."""

import os
import subprocess
import sys
import threading
import time

import pytest
from confluent_kafka import Consumer

from guardstream.catalog import TOPICS
from guardstream.infra.stack import wait_until
from guardstream.kafka import consumer_config

from support.processes import publish_telemetry, publisher


def _lag(settings, bridge_port: int) -> subprocess.CompletedProcess:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("GUARDSTREAM_")}, **settings.as_env(),
           "GUARDSTREAM_LAG_BRIDGE_METRICS": f"http://127.0.0.1:{bridge_port}"}
    return subprocess.run([sys.executable, "-m", "guardstream.cli", "lag"], env=env, capture_output=True,
                          text=True, timeout=60)


def _path(output: str) -> dict[str, dict[str, str]]:
    """The pipeline-queues table of ``guardstream lag``'s piped output, by stage."""
    lines = output.splitlines()
    header = lines[0].split("\t")
    rows = {}
    for line in lines[1:]:
        if "\t" not in line:
            break
        cells = line.split("\t")
        rows[cells[0]] = dict(zip(header, cells))
    return rows


@pytest.mark.slow
def test_lag_names_a_stopped_consumer_group_as_the_first_stage_behind(own_kafka, own_mqtt, run_component, unique):
    settings = own_kafka.settings.replace(mqtt_url=own_mqtt)
    bridge = run_component(["bridge"], settings, GUARDSTREAM_BRIDGE_ID=f"b-{unique}",
                           GUARDSTREAM_BRIDGE_SHARED_GROUP=f"g-{unique}")
    group = f"positions-{unique}"
    consumer = Consumer(consumer_config(settings, "lag-path-test", group, **{"auto.offset.reset": "earliest"}))
    consumer.subscribe([TOPICS.raw_device.name])
    pub = publisher(settings, f"pub-{unique}")
    stop = threading.Event()
    threading.Thread(target=publish_telemetry, args=(pub, unique, stop, 200), daemon=True).start()
    try:
        consumed = 0
        deadline = time.monotonic() + 60
        while consumed < 200 and time.monotonic() < deadline:
            consumed += sum(1 for m in consumer.consume(500, 1.0) if m.error() is None)
        assert consumed >= 200
        consumer.commit(asynchronous=False)
        first = _lag(settings, bridge.metrics_port)
        assert first.returncode == 0, first.stderr
        healthy = _path(first.stdout)
        assert set(healthy) >= {"mqtt broker", "bridge main", f"group {group}"}
        assert healthy["bridge main"]["limit"] == "1000"
        consumer.close()  # the group stops while messages keep flowing
        outputs = []

        def named() -> bool:
            result = _lag(settings, bridge.metrics_port)
            outputs.append(result.stdout + result.stderr)
            return f"first stage behind: group {group}" in result.stdout

        try:
            wait_until(named, 90, "guardstream lag to name the stopped group")
        except Exception as exc:
            raise AssertionError(outputs[-1] if outputs else "guardstream lag never ran") from exc
        path = _path(outputs[-1])
        assert path[f"group {group}"]["behind"] == "BEHIND"
        assert float(path[f"group {group}"]["oldest_s"]) >= 10
        assert path["bridge main"]["behind"] == path["mqtt broker"]["behind"] == ""
        assert path["mqtt broker"]["queued"] != "-"  # mosquitto reports its store
    finally:
        stop.set()
        pub.loop_stop()
