"""Gateway fan-out: deliveries/s to 1,000 connected WebSocket clients, and delivery latency.

Starts its own tansu broker and one ``guardstream gateway`` process, then two
client processes that open 500 connections each, all subscribed to the same
tenant's positions. GuardPositions (one device each, so nothing conflates) are
produced to events.high at a steady rate; every client counts what it receives
and takes each message's latency from the record's ``ts_ms`` (set when it is
produced, same machine clock) to its arrival. Prints deliveries/s (all clients
together, from the first record produced to the last message received), p50 /
p99 / max latency, and what the gateway conflated or dropped for clients that
fell behind.

Clients, gateway and broker share the machine, so the figure is a floor for the
gateway alone: on 2 cores the client processes use about as much CPU as it does.

Run: python bench/gateway_fanout.py [--clients 1000] [--rate 50] [--seconds 15]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request

from confluent_kafka import Producer
from embedded import embedded_env, ready

from guardstream.catalog import TOPICS
from guardstream.gateway.auth import issue
from guardstream.infra import topics
from guardstream.records import GUARD_POSITION
from guardstream.infra.stack import free_port, kafka_answers, tansu_spec, wait_until
from guardstream.kafka import producer_config
from guardstream.schemas.codec import Codec
from guardstream.schemas.registry import FileRegistry
from guardstream.settings import Settings

TENANT = "bench"
SECRET = "bench-gateway-secret-0123456789abcdef-0123456789"
CLIENT_PROCESSES = 2


def now_ms() -> int:
    return time.time_ns() // 1_000_000


# -- a client process: N connections, counts and latencies -----------------------------------

async def client_worker(url: str, connections: int, expected: int, timeout_s: float) -> dict:
    from websockets.asyncio.client import connect
    token = issue(SECRET, "bench", [TENANT], [], "guardstream", time.time(), 3600)
    latencies: list[int] = []
    counts = [0] * connections
    ready = asyncio.Event()
    subscribed = 0
    last_ms = 0

    async def one(n: int) -> None:
        nonlocal subscribed, last_ms
        async with connect(url, additional_headers={"Authorization": f"Bearer {token}"}, open_timeout=60,
                           max_queue=256) as conn:
            await conn.recv()  # hello
            await conn.send(json.dumps({"op": "subscribe", "channels": [f"tenant:{TENANT}:positions"]}))
            await conn.recv()  # subscribed
            subscribed += 1
            if subscribed == connections:
                ready.set()
            deadline = time.monotonic() + timeout_s
            while counts[n] < expected:
                try:
                    message = await asyncio.wait_for(conn.recv(), max(0.1, deadline - time.monotonic()))
                except TimeoutError:
                    return
                at = now_ms()
                # the record's ts_ms without parsing the whole message: clients are the bottleneck here
                start = message.find('"ts_ms":') + 8
                latencies.append(at - int(message[start:start + 13]))
                counts[n] += 1
                last_ms = at

    tasks = [asyncio.create_task(one(n)) for n in range(connections)]
    await asyncio.wait_for(ready.wait(), 120)
    print("ready", flush=True)
    await asyncio.gather(*tasks, return_exceptions=True)
    return {"received": sum(counts), "latencies": latencies, "last_ms": last_ms}


def run_worker(url: str, connections: int, expected: int, timeout_s: float) -> None:
    result = asyncio.run(client_worker(url, connections, expected, timeout_s))
    print(json.dumps(result), flush=True)


# -- the bench ---------------------------------------------------------------------------------

def produce(settings: Settings, rate: float, seconds: float) -> tuple[int, int]:
    """(records produced, start in epoch ms), at ``rate`` records per second."""
    codec = Codec(FileRegistry.load())
    producer = Producer(producer_config(settings, "bench-gateway", **{"linger.ms": 5}))
    total = int(rate * seconds)
    start, started = time.monotonic(), now_ms()
    for n in range(total):
        delay = start + n / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)  # pacing the producer, not synchronising
        ts = now_ms()
        record = {"event_id": f"bench-{n}", "tenant": TENANT, "device_id": f"d-{n}", "ts_ms": ts,
                  "received_ms": ts, "lat": 52.52, "lon": 13.40, "accuracy_m": 4.0, "speed_mps": None,
                  "heading_deg": None, "altitude_m": None, "fences": [], "in_site": None, "violation": False}
        producer.produce(TOPICS.events_high.name, codec.encode(GUARD_POSITION, record),
                         record["device_id"].encode())
        producer.poll(0)
    assert producer.flush(30) == 0
    return total, started


def cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        lines = reply.read().decode().splitlines()
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith(name + "{") or
               line.startswith(name + " "))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=50.0, help="records per second produced")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--worker", nargs=4, metavar=("URL", "CONNECTIONS", "EXPECTED", "TIMEOUT"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        url, connections, expected, timeout_s = args.worker
        run_worker(url, int(connections), int(expected), float(timeout_s))
        return

    kafka_port, gateway_port, metrics_port = free_port(), free_port(), free_port()
    spec = tansu_spec(kafka_port)
    children = [subprocess.Popen(list(spec.argv), env={**os.environ, **spec.env},
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        settings = Settings.from_env(embedded_env(KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{kafka_port}"))
        wait_until(lambda: kafka_answers(settings.kafka_bootstrap_servers), 30, "tansu")
        topics.apply(settings)
        env = {**os.environ, **settings.replace(metrics_port=metrics_port).as_env(),
               "GUARDSTREAM_GATEWAY_PORT": str(gateway_port), "GUARDSTREAM_JWT_SECRET": SECRET,
               "GUARDSTREAM_LOG_LEVEL": "warning"}
        gateway = subprocess.Popen([sys.executable, "-m", "guardstream.cli", "gateway"], env=env)
        children.append(gateway)
        wait_until(lambda: ready(metrics_port), 30, "gateway")

        expected = int(args.rate * args.seconds)
        per_process = args.clients // CLIENT_PROCESSES
        url = f"ws://127.0.0.1:{gateway_port}/ws"
        workers = [subprocess.Popen([sys.executable, __file__, "--worker", url, str(per_process), str(expected),
                                     str(args.seconds + 60)], stdout=subprocess.PIPE, text=True)
                   for _ in range(CLIENT_PROCESSES)]
        children += workers
        for worker in workers:
            assert worker.stdout.readline().strip() == "ready"
        print(f"{per_process * CLIENT_PROCESSES:,} clients connected in {CLIENT_PROCESSES} processes; "
              f"producing {expected:,} positions at {args.rate:g}/s to {TOPICS.events_high.name}; "
              f"{os.cpu_count()} CPUs", flush=True)
        cpu = cpu_seconds(gateway.pid)
        _, started = produce(settings, args.rate, args.seconds)
        results = [json.loads(worker.stdout.readline()) for worker in workers]
        report(results, started, expected * per_process * CLIENT_PROCESSES, metrics_port)
        used = cpu_seconds(gateway.pid) - cpu
        received = sum(r["received"] for r in results)
        print(f"gateway CPU: {used:.1f} s, {used / max(received, 1) * 1e6:.0f} us per delivery "
              f"(the rest of the machine: broker, producer, client processes)")
    finally:
        for child in reversed(children):
            if child.poll() is None:
                child.terminate()
                try:
                    child.wait(15)
                except subprocess.TimeoutExpired:
                    child.kill()


def report(results: list[dict], started_ms: int, wanted: int, metrics_port: int) -> None:
    received = sum(r["received"] for r in results)
    latencies = sorted(x for r in results for x in r["latencies"])
    seconds = (max(r["last_ms"] for r in results) - started_ms) / 1000
    conflated = metric(metrics_port, "guardstream_gateway_messages_conflated_total")
    dropped = metric(metrics_port, "guardstream_gateway_messages_dropped_total")
    print(f"deliveries: {received:,} of {wanted:,} in {seconds:.1f} s = {received / seconds:,.0f} deliveries/s")
    if latencies:
        p50 = statistics.median(latencies)
        p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
        print(f"latency (produced -> received): p50 {p50:.0f} ms, p99 {p99:.0f} ms, max {latencies[-1]} ms")
    print(f"gateway: conflated {conflated:,.0f}, dropped {dropped:,.0f}")


if __name__ == "__main__":
    main()
