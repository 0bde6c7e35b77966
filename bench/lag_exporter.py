"""Lag exporter cost: collection time per cycle and /metrics scrape time.

Starts its own tansu broker, creates 20 topics x 10 partitions (200 in all)
with records written in batches of 10, and 20 consumer groups that each commit
offsets on 3 topics (600 lagging group partitions). Then prints:

* collection time: the first cycle (nothing cached), a quiet cycle (nothing
  written or committed since: every end offset and timestamp comes from the
  cache), and a busy cycle (every partition written to and every group moved:
  every end offset and every timestamp is read again);
* for comparison, ``probe_end_offsets`` over the same 200 partitions;
* the median and 95th percentile of many /metrics scrapes, and the body size.

Run: python bench/lag_exporter.py [SCRAPES]
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
import urllib.request

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from embedded import embedded_env

from guardstream.infra.lag.collect import LagCollector
from guardstream.infra.lag.exporter import LagExporter
from guardstream.infra.lag.metrics import LagMetrics
from guardstream.infra.stack import free_port, kafka_answers, tansu_spec, wait_until
from guardstream.kafka import admin_config, consumer_config, producer_config
from guardstream.observability import serve
from guardstream.settings import Settings
from guardstream.topic_end import probe_end_offsets

TOPICS, PARTITIONS, GROUPS, TOPICS_PER_GROUP = 20, 10, 20, 3
BATCHES, BATCH = 5, 10  # records per partition: BATCHES x BATCH


def start_broker() -> tuple[subprocess.Popen, str]:
    port = free_port()
    spec = tansu_spec(port)
    process = subprocess.Popen(list(spec.argv), env={**os.environ, **spec.env},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    bootstrap = f"127.0.0.1:{port}"
    wait_until(lambda: kafka_answers(bootstrap), 30, "tansu")
    return process, bootstrap


def topic_name(n: int) -> str:
    return f"bench.lag.{n:02d}"


def create_and_fill(settings: Settings) -> None:
    admin = AdminClient(admin_config(settings))
    for future in admin.create_topics([NewTopic(topic_name(t), PARTITIONS, 1) for t in range(TOPICS)]).values():
        future.result()
    producer = Producer(producer_config(settings, "bench", **{"linger.ms": 50}))
    for _ in range(BATCHES):  # one flush per round: each partition gets batches of BATCH records
        write(producer, BATCH)


def write(producer: Producer, records: int) -> None:
    for t in range(TOPICS):
        for p in range(PARTITIONS):
            for _ in range(records):
                producer.produce(topic_name(t), value=b"x" * 100, partition=p)
    producer.flush(30)


def commit_groups(settings: Settings, shift: int) -> None:
    """Group g commits on topics g..g+2, at an offset that leaves some lag on every partition."""
    for g in range(GROUPS):
        consumer = Consumer(consumer_config(settings, "bench", f"bench-group-{g:02d}"))
        offsets = [TopicPartition(topic_name((g + k) % TOPICS), p, (g + p) % (BATCHES * BATCH - 5) + shift)
                   for k in range(TOPICS_PER_GROUP) for p in range(PARTITIONS)]
        consumer.commit(offsets=offsets, asynchronous=False)
        consumer.close()


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main() -> None:
    scrapes = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    broker, bootstrap = start_broker()
    try:
        settings = Settings.from_env(embedded_env(KAFKA_BOOTSTRAP_SERVERS=bootstrap))
        create_and_fill(settings)
        commit_groups(settings, 0)
        collector = LagCollector(settings)
        metrics = LagMetrics.create(time.time)
        exporter = LagExporter(collector, metrics, interval_s=10)
        endpoints = serve(metrics.registry, exporter.ready, "127.0.0.1", 0)
        try:
            report(settings, collector, exporter, f"http://127.0.0.1:{endpoints.port}/metrics", scrapes)
        finally:
            endpoints.close()
            collector.close()
    finally:
        broker.terminate()
        broker.wait(10)


def report(settings: Settings, collector: LagCollector, exporter: LagExporter, url: str, scrapes: int) -> None:
    cold = timed(exporter.run_cycle)
    snapshot = collector.snapshot
    print(f"cluster: {len(snapshot.ends)} partitions, {len(snapshot.groups)} groups, "
          f"{len(snapshot.lags)} group partitions, {sum(r.lag > 0 for r in snapshot.lags)} lagging")
    quiet = [timed(exporter.run_cycle) for _ in range(5)]
    producer = Producer(producer_config(settings, "bench", **{"linger.ms": 50}))
    busy = []
    for shift in range(1, 4):
        write(producer, 2)
        commit_groups(settings, shift)
        busy.append(timed(exporter.run_cycle))
    print(f"collection, first cycle (nothing cached):        {cold * 1000:8.1f} ms")
    print(f"collection, quiet cycle (median of {len(quiet)}):          {statistics.median(quiet) * 1000:8.1f} ms")
    print(f"collection, busy cycle (all moved, median of {len(busy)}): {statistics.median(busy) * 1000:8.1f} ms")
    parts = list(snapshot.ends)
    print(f"probe_end_offsets over the {len(parts)} partitions:       "
          f"{timed(lambda: probe_end_offsets(settings, parts)) * 1000:8.1f} ms")

    times, size = [], 0
    for _ in range(scrapes):
        started = time.perf_counter()
        with urllib.request.urlopen(url, timeout=5) as response:
            size = len(response.read())
        times.append(time.perf_counter() - started)
    times.sort()
    series = sum(1 for line in urllib.request.urlopen(url, timeout=5).read().decode().splitlines()
                 if line and not line.startswith("#"))
    print(f"/metrics scrape: median {statistics.median(times) * 1000:.2f} ms, "
          f"p95 {times[int(len(times) * 0.95) - 1] * 1000:.2f} ms over {scrapes} scrapes; "
          f"{series} series, {size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
