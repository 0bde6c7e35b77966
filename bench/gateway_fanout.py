"""Gateway fan-out: deliveries/s to 1,000 connected WebSocket clients, beside a bare ``websockets.broadcast``.

Starts its own tansu broker, then serves the same clients and the same records
in turn from:

* **bare**: a minimal server that reads events.high with the gateway's own push
  consumer (``feed.PushFeed``), renders each record once with the gateway's
  ``event_message`` and hands it to ``websockets.broadcast``: no queues, no
  authorisation, no conflation, no back-pressure. The floor websockets sets.
* **gateway**: ``guardstream gateway`` from this tree.
* **gateway@REF** (with ``--before REF``): the gateway of a git revision,
  extracted to a temporary directory, to compare before/after in one run.

In each round two client processes open 500 connections each, all subscribed to
the same tenant's positions. GuardPositions (one device each, so nothing
conflates) are produced to events.high at ``--rate``, faster than any of them
delivers, so each server runs saturated: the gateway's consumer then waits for
its event loop and the backlog stays in Kafka. Clients read frames with a few
lines of header parsing (no websockets library on their side: it would cost
more CPU per message than the servers spend) and take each message's latency
from the record's ``ts_ms``. Prints, per round, deliveries/s (all clients, from
the first record produced to the last message received), latency, the
server's CPU per delivery, and the ratio of each gateway to the bare broadcast.

Clients, server and broker share the machine, so the figures are floors for
the servers alone.

Run: python bench/gateway_fanout.py [--clients 1000] [--rate 300] [--seconds 4] [--before main]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
import urllib.request
from pathlib import Path

from confluent_kafka import Producer
from embedded import embedded_env, ready
from websockets.frames import OP_PONG, OP_TEXT, Frame

from guardstream.catalog import TOPICS
from guardstream.gateway.auth import issue
from guardstream.infra import topics
from guardstream.infra.stack import free_port, kafka_answers, tansu_spec, wait_until
from guardstream.kafka import producer_config
from guardstream.records import GUARD_POSITION
from guardstream.schemas.codec import Codec
from guardstream.schemas.registry import FileRegistry
from guardstream.settings import Settings

TENANT = "bench"
CHANNEL = f"tenant:{TENANT}:positions"
SECRET = "bench-gateway-secret-0123456789abcdef-0123456789"
CLIENT_PROCESSES = 2
IDLE_S = 5.0  # a client that heard nothing for this long after its first event is done
LATENCY_SAMPLE = 10  # every n-th message's latency is kept
REPO = Path(__file__).resolve().parent.parent


def now_ms() -> int:
    return time.time_ns() // 1_000_000


# -- a client process: N raw connections, counts and latencies ---------------------------------

class Counting(asyncio.Protocol):
    """One connection: handshake, subscribe, then count text frames (answering pings)."""

    def __init__(self, request: bytes, stats: dict) -> None:
        self.request, self.stats = request, stats
        self.buffer = bytearray()
        self.upgraded = False
        self.texts = 0  # hello, subscribed, then events
        self.subscribed = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        if not self.upgraded:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            if not buffer.startswith(b"HTTP/1.1 101"):
                raise SystemExit(f"handshake refused: {bytes(buffer[:200])!r}")
            self.upgraded = True
            del buffer[:end + 4]
        at, size = 0, len(buffer)
        stats = self.stats
        while size - at >= 2:
            length, start = buffer[at + 1] & 0x7F, at + 2
            if length == 126:
                if size - at < 4:
                    break
                length, start = int.from_bytes(buffer[at + 2:at + 4], "big"), at + 4
            elif length == 127:
                if size - at < 10:
                    break
                length, start = int.from_bytes(buffer[at + 2:at + 10], "big"), at + 10
            if size < start + length:
                break
            opcode = buffer[at] & 0x0F
            if opcode == OP_TEXT.value:
                self.texts += 1
                if self.texts > 2:
                    stats["received"] += 1
                    if stats["received"] % LATENCY_SAMPLE == 0:
                        ts = buffer.find(b'"ts_ms":', start, start + length) + 8
                        stats["latencies"].append(now_ms() - int(buffer[ts:ts + 13]))
                elif self.texts == 1:
                    self.transport.write(Frame(OP_TEXT, json.dumps(
                        {"op": "subscribe", "channels": [CHANNEL]}).encode()).serialize(mask=True, extensions=[]))
                else:
                    self.subscribed.set_result(None)
            elif opcode == 0x9:  # ping
                self.transport.write(Frame(OP_PONG, bytes(buffer[start:start + length])).serialize(
                    mask=True, extensions=[]))
            elif opcode == 0x8:  # close
                self.transport.close()
            at = start + length
        del buffer[:at]
        stats["last_ms"] = now_ms()


def handshake(port: int, token: str) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer {token}\r\n\r\n").encode()


async def client_worker(port: int, connections: int, expected: int, timeout_s: float) -> dict:
    loop = asyncio.get_running_loop()
    token = issue(SECRET, "bench", [TENANT], [], "guardstream", time.time(), 3600)
    stats: dict = {"received": 0, "latencies": [], "last_ms": 0}
    opened = []
    for _ in range(connections):
        _, protocol = await loop.create_connection(lambda: Counting(handshake(port, token), stats), "127.0.0.1", port)
        opened.append(protocol)
    await asyncio.wait_for(asyncio.gather(*(p.subscribed for p in opened)), 120)
    print("ready", flush=True)
    cpu = time.process_time()
    deadline = time.monotonic() + timeout_s
    while stats["received"] < expected * connections and time.monotonic() < deadline:
        await asyncio.sleep(0.2)  # polling a counter the protocols update, not synchronising
        if stats["last_ms"] and now_ms() - stats["last_ms"] > IDLE_S * 1000 and stats["received"]:
            break
    stats["cpu_s"] = time.process_time() - cpu
    for protocol in opened:
        protocol.transport.close()
    return stats


# -- the bare server: the gateway's push consumer, one render per record, websockets.broadcast ----

def run_bare(port: int) -> None:
    asyncio.run(bare_server(port))


async def bare_server(port: int) -> None:
    from websockets.asyncio.server import broadcast, serve

    from guardstream.gateway.feed import PushFeed
    from guardstream.gateway.metrics import GatewayMetrics
    from guardstream.gateway.protocol import event_message, render

    settings = Settings.from_env(dict(os.environ))  # the bench's settings, as the gateway gets them
    loop = asyncio.get_running_loop()
    connections: set = set()

    def on_batch(events: list) -> None:
        for event in events:
            broadcast(connections, event_message(CHANNEL, event.topic, event.partition, event.offset, event.schema,
                                                 event.record))

    async def handler(ws) -> None:
        await ws.send(render({"type": "hello"}))
        await ws.recv()
        await ws.send(render({"type": "subscribed", "channels": [CHANNEL]}))
        connections.add(ws)
        try:
            await ws.wait_closed()
        finally:
            connections.discard(ws)

    feed = PushFeed(settings, Codec(FileRegistry.load()), GatewayMetrics.create(), on_batch, loop,
                    threading.Event(), (TOPICS.events_high.name,), "bare")
    await asyncio.to_thread(feed.open)
    failed = loop.create_future()
    feed.start(lambda exc: loop.call_soon_threadsafe(failed.set_exception, exc))
    async with serve(handler, "127.0.0.1", port, compression=None, max_size=2**16):
        print("ready", flush=True)
        await failed


# -- the bench ---------------------------------------------------------------------------------

def produce(settings: Settings, rate: float, seconds: float, first: int) -> int:
    """Produces ``rate * seconds`` positions, numbered from ``first``; returns when it started, epoch ms."""
    codec = Codec(FileRegistry.load())
    producer = Producer(producer_config(settings, "bench-gateway", **{"linger.ms": 5}))
    total = int(rate * seconds)
    start, started = time.monotonic(), now_ms()
    for n in range(first, first + total):
        delay = start + (n - first) / rate - time.monotonic()
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
    return started


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of process ``pid``, all its threads."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(fields[11]) / os.sysconf("SC_CLK_TCK"), int(fields[12]) / os.sysconf("SC_CLK_TCK")


def metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        lines = reply.read().decode().splitlines()
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith(name + "{") or
               line.startswith(name + " "))


def source_of(ref: str, into: Path) -> Path:
    """The importable ``guardstream`` package of git revision ``ref``, laid out under ``into``
    as its pyproject's package-dir maps it (components live in top-level folders)."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", ref], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    mapping = tomllib.loads((into / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    for package, folder in mapping.items():
        parts = package.split(".")
        if len(parts) == 2:
            (into / "guardstream" / parts[1]).symlink_to(into / folder)
    return into


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=300.0, help="records per second produced")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--before", metavar="REF", help="also run the gateway of this git revision")
    parser.add_argument("--rounds", default="bare,gateway,before", help="which rounds, in this order")
    parser.add_argument("--worker", nargs=4, metavar=("PORT", "CONNECTIONS", "EXPECTED", "TIMEOUT"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--bare", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        port, connections, expected, timeout_s = args.worker
        result = asyncio.run(client_worker(int(port), int(connections), int(expected), float(timeout_s)))
        print(json.dumps(result), flush=True)
        return
    if args.bare:
        run_bare(args.bare)
        return

    kafka_port = free_port()
    spec = tansu_spec(kafka_port)
    broker = subprocess.Popen(list(spec.argv), env={**os.environ, **spec.env},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        settings = Settings.from_env(embedded_env(KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{kafka_port}"))
        wait_until(lambda: kafka_answers(settings.kafka_bootstrap_servers), 30, "tansu")
        topics.apply(settings)
        per_process = args.clients // CLIENT_PROCESSES
        expected = int(args.rate * args.seconds)
        print(f"{per_process * CLIENT_PROCESSES:,} clients in {CLIENT_PROCESSES} processes; per round "
              f"{expected:,} positions produced at {args.rate:g}/s to {TOPICS.events_high.name} = "
              f"{expected * per_process * CLIENT_PROCESSES:,} deliveries due; {os.cpu_count()} CPUs", flush=True)
        figures: dict[str, float] = {}
        with tempfile.TemporaryDirectory() as scratch:
            for n, name in enumerate(r for r in args.rounds.split(",") if r != "before" or args.before):
                label = f"gateway@{args.before}" if name == "before" else name
                source = source_of(args.before, Path(scratch)) if name == "before" else None
                figures[label] = round_of(name, label, settings, args, per_process, expected, n * expected, source)
        if "bare" in figures:
            for label, rate in figures.items():
                if label != "bare":
                    print(f"{label} / bare broadcast: {rate / figures['bare']:.2f}")
    finally:
        broker.terminate()
        broker.wait(15)


def round_of(name: str, label: str, settings: Settings, args: argparse.Namespace, per_process: int,
             expected: int, first: int, source: Path | None) -> float:
    """One round against one server; prints its figures and returns its deliveries/s."""
    port, metrics_port = free_port(), free_port()
    env = {**os.environ, **settings.replace(metrics_port=metrics_port).as_env(), "GUARDSTREAM_GATEWAY_PORT": str(port),
           "GUARDSTREAM_JWT_SECRET": SECRET, "GUARDSTREAM_LOG_LEVEL": "warning"}
    if source is not None:
        env["PYTHONPATH"] = str(source)
    if name == "bare":
        server = subprocess.Popen([sys.executable, __file__, "--bare", str(port)], env=env, stdout=subprocess.PIPE,
                                  text=True)
        children = [server]
        assert server.stdout.readline().strip() == "ready"
    else:
        # -m puts the working directory first on sys.path: run where only PYTHONPATH's tree is found
        server = subprocess.Popen([sys.executable, "-m", "guardstream.cli", "gateway"], env=env,
                                  cwd=str(source) if source is not None else None)
        children = [server]
        wait_until(lambda: ready(metrics_port), 30, "gateway")
    try:
        workers = [subprocess.Popen([sys.executable, __file__, "--worker", str(port), str(per_process), str(expected),
                                     str(args.seconds + 240)], stdout=subprocess.PIPE, text=True)
                   for _ in range(CLIENT_PROCESSES)]
        children += workers
        for worker in workers:
            assert worker.stdout.readline().strip() == "ready"
        cpu = cpu_seconds(server.pid)
        started = produce(settings, args.rate, args.seconds, first)
        results = [json.loads(worker.stdout.readline()) for worker in workers]
        user, system = (after - before for after, before in zip(cpu_seconds(server.pid), cpu, strict=True))
        used = user + system
        received = sum(r["received"] for r in results)
        seconds = (max(r["last_ms"] for r in results) - started) / 1000
        latencies = sorted(x for r in results for x in r["latencies"])
        line = (f"{label:>16}: {received:,} of {expected * per_process * CLIENT_PROCESSES:,} in {seconds:.1f} s = "
                f"{received / seconds:,.0f} deliveries/s; server CPU {user:.1f} s user + {system:.1f} s system = "
                f"{used / max(received, 1) * 1e6:.1f} us per delivery, clients' CPU "
                f"{sum(r['cpu_s'] for r in results):.1f} s")
        if latencies:
            line += (f"; latency p50 {statistics.median(latencies):.0f} ms, "
                     f"p99 {latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]:.0f} ms")
        if name != "bare":
            line += (f"; conflated {metric(metrics_port, 'guardstream_gateway_messages_conflated_total'):,.0f}, "
                     f"dropped {metric(metrics_port, 'guardstream_gateway_messages_dropped_total'):,.0f}")
        print(line, flush=True)
        return received / seconds
    finally:
        for child in reversed(children):
            if child.poll() is None:
                child.terminate()
                try:
                    child.wait(15)
                except subprocess.TimeoutExpired:
                    child.kill()


if __name__ == "__main__":
    main()
