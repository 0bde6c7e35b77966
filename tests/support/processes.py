"""Helpers for tests that run guardstream components as real processes."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
import subprocess

import paho.mqtt.client as mqtt
from confluent_kafka import Consumer, TopicPartition
from paho.mqtt.enums import CallbackAPIVersion

from guardstream.settings import Settings


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

    def metric(self, name: str) -> float:
        total = 0.0
        for line in self.metrics().splitlines():
            if line.startswith(name + "{") or line.startswith(name + " "):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def output(self) -> str:
        return self.log.read_text()


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
