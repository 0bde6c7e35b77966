"""Helpers for tests that run servers and guardstream components as real processes.

Every process a test starts goes through :func:`start_process` and ends through
:func:`stop_process`; a guardstream component is :func:`start_component`, which
returns once the component's ``/readyz`` answers 200.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
from confluent_kafka import Consumer, TopicPartition
from paho.mqtt.enums import CallbackAPIVersion

from guardstream.infra.stack import free_port, kafka_answers, tansu_spec, wait_until
from guardstream.settings import Settings


# the worker's engines (GUARDSTREAM_WORKER_ENGINE): tests of a guarantee of a running worker run on each
WORKER_ENGINES = ("batch", "faust")


def start_process(argv: list[str], env: Mapping[str, str], log: Path) -> subprocess.Popen:
    """``argv`` with ``env`` over this process's environment, its output appended to ``log``."""
    with log.open("a") as handle:
        return subprocess.Popen(argv, env={**os.environ, **env}, stdout=handle, stderr=subprocess.STDOUT)


def stop_process(process: subprocess.Popen, timeout_s: float = 10.0) -> None:
    """SIGTERM, then SIGKILL when it has not exited within ``timeout_s``; a stopped (SIGSTOP) process is woken first."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGCONT)
    process.terminate()
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def start_tansu(log: Path) -> tuple[subprocess.Popen, str]:
    """(process, bootstrap servers) of a new tansu broker (memory storage) that answers metadata requests."""
    port = free_port()
    spec = tansu_spec(port)
    process = start_process(list(spec.argv), dict(spec.env), log)
    bootstrap = f"127.0.0.1:{port}"
    try:
        wait_until(lambda: kafka_answers(bootstrap), 30, "tansu")
    except BaseException:
        stop_process(process)
        raise
    return process, bootstrap


@dataclass
class Component:
    process: subprocess.Popen
    metrics_port: int
    log: Path

    def readyz(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/readyz", timeout=1) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            return r.read().decode()

    def metric(self, name: str, **labels: str) -> float:
        """The sum of the samples of ``name`` whose labels include ``labels``."""
        wanted = [f'{k}="{v}"' for k, v in labels.items()]
        total = 0.0
        for line in self.metrics().splitlines():
            if (line.startswith(name + "{") or line.startswith(name + " ")) and all(w in line for w in wanted):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def output(self) -> str:
        return self.log.read_text()

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self, timeout_s: float = 15.0) -> None:
        stop_process(self.process, timeout_s)


def start_component(command: list[str], settings: Settings, log: Path, ready_s: float = 30.0,
                    **env: str) -> Component:
    """``guardstream COMMAND`` with ``settings`` and ``env`` (not the caller's own GUARDSTREAM_*
    variables), its metrics on a free port; returns when its /readyz answers 200, and fails with
    its output when it exits first."""
    port = free_port()
    child_env = {**{k: v for k, v in os.environ.items() if not k.startswith("GUARDSTREAM_")},
                 **settings.replace(metrics_port=port).as_env(), **env}
    with log.open("a") as handle:
        process = subprocess.Popen([sys.executable, "-m", "guardstream.cli", *command], env=child_env,
                                   stdout=handle, stderr=subprocess.STDOUT)
    component = Component(process, port, log)
    try:
        wait_until(lambda: component.readyz() or process.poll() is not None, ready_s, f"{command[0]} ready")
    except BaseException:
        component.stop()
        raise
    assert process.poll() is None, f"{command[0]} exited {process.returncode}:\n{component.output()[-3000:]}"
    return component


def publisher(settings: Settings, client_id: str) -> mqtt.Client:
    from guardstream.connectors.mqtt import endpoint
    ep = endpoint(settings)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect(ep.host, ep.port)
    client.loop_start()
    return client


def collect(settings: Settings, topic: str, keep: Callable[[object], bool], want: int,
            timeout_s: float = 60.0, distinct: Callable[[object], object] | None = None) -> list:
    """Records of ``topic`` (from the beginning) for which ``keep`` is true, until ``want`` are seen.

    With ``distinct``, ``want`` counts distinct ``distinct(record)`` values instead of
    records, so duplicates (which at-least-once stages may write) do not end the wait early.
    """
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap_servers, "group.id": "test-collect",
                         "enable.auto.commit": False, "fetch.wait.max.ms": 50})
    metadata = consumer.list_topics(topic, timeout=10)
    consumer.assign([TopicPartition(topic, p, 0) for p in metadata.topics[topic].partitions])
    out = []
    seen: set[object] = set()
    deadline = time.monotonic() + timeout_s
    try:
        while (len(seen) if distinct else len(out)) < want and time.monotonic() < deadline:
            for record in consumer.consume(1000, 0.2):
                if record.error() is None and keep(record):
                    out.append(record)
                    if distinct:
                        seen.add(distinct(record))
    finally:
        consumer.close()
    return out


def header(record, name: str) -> bytes | None:
    return dict(record.headers() or []).get(name)


def publish_telemetry(pub: mqtt.Client, unique: str, stop: threading.Event, per_second: int) -> None:
    """QoS 1 telemetry of 20 devices at ``per_second`` until ``stop`` is set."""
    started, i = time.monotonic(), 0
    while not stop.is_set():
        pub.publish(f"device/k{i % 20}-{unique}/telemetry", json.dumps({"seq": i}).encode(), qos=1)
        i += 1
        ahead = i / per_second - (time.monotonic() - started)
        if ahead > 0:
            stop.wait(ahead)  # pacing the load, not synchronising
