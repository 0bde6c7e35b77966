"""The whole pipeline on this machine, a load that costs the machine little, and where the CPU goes.

:class:`Rig` starts its own tansu, mosquitto and PostgreSQL (pgserver, in a
temporary folder) and runs ``guardstream bridge``, ``worker``, ``sink`` and
``gateway`` as processes, as ``guardstream up`` does. :func:`run_load` then
publishes GPS fixes at a fixed rate (QoS 1) and a panic every 50 ms from
devices of their own, while one WebSocket client (a process of its own, as a
browser is) takes the tenant's positions and alerts; it returns what was sent,
what arrived and when, and what reached PostgreSQL.

The load generator writes MQTT packets on a plain socket, built once per
message: paho costs 20-40 us of CPU a message, which at 10,000 msg/s would take
a third of a core from the pipeline it measures. Devices publish from other
machines; the generator's and the client's CPU are reported beside the
pipeline's, never in it.

:func:`cpu_seconds` (``infra/process_cpu.py``) reads each process's user + system time from
``/proc/<pid>/stat``; PostgreSQL counts its postmaster, every backend and what
its exited children used.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import multiprocessing as mp
import os
import re
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from embedded import embedded_env, ready

from guardstream.infra import topics
from guardstream.infra.process_cpu import cpu_seconds
from guardstream.infra.migrate import migrate
from guardstream.infra.stack import free_port, kafka_answers, mqtt_spec, start_postgres, tansu_spec, tcp_accepts, \
    wait_until
from guardstream.settings import Settings

SECRET = "bench-secret-of-the-pipeline-rig"
TENANT = "acme"
COMPONENTS = ("bridge", "worker", "sink", "gateway")
PANIC_EVERY_S = 0.05
TICK_S = 0.002  # the generator sends what is due every 2 ms: 20 packets a write at 10,000 msg/s
EVENT_ID = re.compile(r'"event_id":\s*"([0-9a-f]{32})"')


# -- the pipeline ---------------------------------------------------------------------------

@dataclass
class Rig:
    tmp: Path
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    postmaster: int = 0
    settings: Settings | None = None
    _stop_postgres: object = None

    def spawn(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen:
        log = (self.tmp / f"{name}.log").open("w")
        process = subprocess.Popen(argv, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT)
        self.processes[name] = process
        return process

    def start(self, extra_env: dict[str, str] | None = None) -> Settings:
        kafka_port, mqtt_port = free_port(), free_port()
        spec = tansu_spec(kafka_port)
        self.spawn("tansu", list(spec.argv), dict(spec.env))
        spec, _ = mqtt_spec(mqtt_port, self.tmp / "mqtt")
        self.spawn("mosquitto", list(spec.argv), dict(spec.env))
        database_url, self._stop_postgres = start_postgres(self.tmp / "pg")
        self.postmaster = int((self.tmp / "pg" / "postmaster.pid").read_text().split()[0])
        bootstrap = f"127.0.0.1:{kafka_port}"
        wait_until(lambda: kafka_answers(bootstrap), 30, "tansu")
        wait_until(lambda: tcp_accepts("127.0.0.1", mqtt_port), 30, "mosquitto")
        settings = Settings.from_env(embedded_env(
            KAFKA_BOOTSTRAP_SERVERS=bootstrap, MQTT_URL=f"mqtt://127.0.0.1:{mqtt_port}", DATABASE_URL=database_url,
            GUARDSTREAM_JWT_SECRET=SECRET, GUARDSTREAM_STATE_DIR=str(self.tmp / "state"),
            GUARDSTREAM_GATEWAY_PORT=str(free_port()), GUARDSTREAM_DEFAULT_TENANT=TENANT, **(extra_env or {})))
        topics.apply(settings)
        migrate(settings.database_url)
        for command in COMPONENTS:
            port = free_port()
            self.spawn(command, [sys.executable, "-m", "guardstream.cli", command],
                       settings.replace(metrics_port=port).as_env())
            wait_until(lambda: ready(port), 90, command)
        self.settings = settings
        return settings

    def cpu(self) -> dict[str, float]:
        """CPU seconds so far of each server and component, PostgreSQL with all its processes."""
        out = {name: cpu_seconds(p.pid) for name, p in self.processes.items()}
        out["postgres"] = cpu_seconds(self.postmaster, children=True)
        return out

    def stop(self) -> None:
        for process in reversed(list(self.processes.values())):
            process.terminate()
        for process in self.processes.values():
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
        if callable(self._stop_postgres):
            self._stop_postgres()


def pg_counts(settings: Settings) -> tuple[int, int]:
    """(guard_positions rows, device_alerts rows) in the rig's database."""
    import psycopg
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        positions = conn.execute("SELECT count(*) FROM guard_positions").fetchone()[0]
        alerts = conn.execute("SELECT count(*) FROM device_alerts").fetchone()[0]
    return positions, alerts


# -- the load generator ----------------------------------------------------------------------

def _mqtt_string(text: bytes) -> bytes:
    return len(text).to_bytes(2, "big") + text


def _remaining_length(value: int) -> bytes:
    out = bytearray()
    while True:
        value, digit = divmod(value, 128)
        out.append(digit | (0x80 if value else 0))
        if not value:
            return bytes(out)


class RawPublisher:
    """One MQTT 3.1.1 connection that writes QoS 1 PUBLISH packets and counts the PUBACKs back."""

    def __init__(self, host: str, port: int, client_id: str) -> None:
        self.sock = socket.create_connection((host, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        body = _mqtt_string(b"MQTT") + bytes([4, 0x02]) + (60).to_bytes(2, "big") + _mqtt_string(client_id.encode())
        self.sock.sendall(bytes([0x10]) + _remaining_length(len(body)) + body)
        connack = self.sock.recv(4)
        if len(connack) < 4 or connack[0] != 0x20 or connack[3] != 0:
            raise RuntimeError(f"MQTT broker refused the connection: {connack!r}")
        self.sock.setblocking(False)
        self.mid = 0
        self.sent = 0
        self.acked = 0
        self._pending = b""

    def packet(self, topic: bytes, payload: bytes) -> bytes:
        self.mid = self.mid % 65_535 + 1
        body = _mqtt_string(topic) + self.mid.to_bytes(2, "big") + payload
        self.sent += 1
        return bytes([0x32]) + _remaining_length(len(body)) + body

    def write(self, packets: bytes) -> None:
        self._pending += packets
        while self._pending:
            try:
                n = self.sock.send(self._pending)
            except BlockingIOError:
                self.drain_acks(wait_s=0.001)
                continue
            self._pending = self._pending[n:]

    def drain_acks(self, wait_s: float = 0.0) -> None:
        import select
        if wait_s and not select.select([self.sock], [], [], wait_s)[0]:
            return
        while True:
            try:
                data = self.sock.recv(65_536)
            except BlockingIOError:
                return
            if not data:
                raise RuntimeError("the MQTT broker closed the connection")
            self.acked += len(data) // 4  # PUBACKs of MQTT 3.1.1: four bytes each

    def close(self) -> None:
        self.sock.close()


def message_id(topic: bytes, payload: bytes) -> str:
    """The bridge's msg.id of this message (connectors/raw.message_id), so the generator knows it."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(topic)
    digest.update(b"\x00")
    digest.update(payload)
    return digest.hexdigest()


def generate(host: str, port: int, rate: int, seconds: float, devices: int, start_at: float, out) -> None:
    """Fixes at ``rate`` from ``devices`` guards and a panic every 50 ms, from ``start_at`` (time.time)."""
    fixes = RawPublisher(host, port, f"bench-fixes-{os.getpid()}")
    panics = RawPublisher(host, port, f"bench-panics-{os.getpid()}")
    sent_fixes: dict[str, float] = {}
    sent_panics: dict[str, float] = {}
    total = int(rate * seconds)
    cpu_before = time.process_time()
    while time.time() < start_at:
        time.sleep(min(0.01, max(0.0, start_at - time.time())))
    began = time.monotonic()
    i = panic = 0
    while i < total:
        now = time.monotonic()
        due = min(total, int((now - began) * rate) + 1)
        if due > i:
            chunk = []
            stamp = time.time()
            for n in range(i, due):
                topic = f"guard/guard-{n % devices}/gps".encode()
                payload = (f'{{"ts":{stamp:.6f},"lat":{52.52 + (n % devices) * 1e-5:.6f},'
                           f'"lon":{13.40 + (n % 7) * 1e-4:.6f},"accuracy_m":5,"tenant":"{TENANT}","seq":{n}}}'
                           ).encode()
                sent_fixes[message_id(topic, payload)] = stamp
                chunk.append(fixes.packet(topic, payload))
            fixes.write(b"".join(chunk))
            i = due
        if now - began >= panic * PANIC_EVERY_S:
            stamp = time.time()
            topic = f"alert/panic/guard-{panic % 50}".encode()
            payload = f'{{"ts":{stamp:.6f},"tenant":"{TENANT}","message":"bench {panic}"}}'.encode()
            sent_panics[message_id(topic, payload)] = stamp
            panics.write(panics.packet(topic, payload))
            panic += 1
        fixes.drain_acks()
        panics.drain_acks()
        time.sleep(TICK_S)  # pacing the generator, not synchronising
    deadline = time.monotonic() + 120
    while (fixes.acked < fixes.sent or panics.acked < panics.sent) and time.monotonic() < deadline:
        fixes.drain_acks(wait_s=0.05)
        panics.drain_acks(wait_s=0.0)
    out.put({"fixes": sent_fixes, "panics": sent_panics, "acked": fixes.acked + panics.acked,
             "published_s": time.monotonic() - began, "cpu_s": time.process_time() - cpu_before})
    fixes.close()
    panics.close()


# -- the WebSocket client ---------------------------------------------------------------------

def receive(url: str, quiet_s: float, ready_event, stop_event, out) -> None:
    asyncio.run(_receive(url, quiet_s, ready_event, stop_event, out))


async def _receive(url: str, quiet_s: float, ready_event, stop_event, out) -> None:
    import websockets
    arrived: dict[str, float] = {}
    cpu_before = time.process_time()
    async with websockets.connect(url, max_size=2**22) as ws:
        await ws.send(json.dumps({"op": "subscribe",
                                  "channels": [f"tenant:{TENANT}:positions", f"tenant:{TENANT}:alerts"]}))
        last = time.monotonic()
        while not (stop_event.is_set() and time.monotonic() - last > quiet_s):
            try:
                raw = await asyncio.wait_for(ws.recv(), timeout=0.2)
            except asyncio.TimeoutError:
                continue
            now = time.time()
            last = time.monotonic()
            match = EVENT_ID.search(raw)
            if match:
                arrived.setdefault(match.group(1), now)
            elif '"subscribed"' in raw:
                ready_event.set()
    out.put({"arrived": arrived, "cpu_s": time.process_time() - cpu_before})


# -- one run ----------------------------------------------------------------------------------

@dataclass
class Result:
    rate: int
    seconds: float
    fixes: dict[str, float]
    panics: dict[str, float]
    arrived: dict[str, float]
    acked: int
    published_s: float
    pg_positions: int
    pg_alerts: int
    cpu: dict[str, float]  # seconds per process over the run
    wall_s: float
    generator_cpu_s: float
    client_cpu_s: float
    stage_p99_ms: dict[str, float] = field(default_factory=dict)  # filled by whoever reads the stages

    def latencies(self, sent: dict[str, float]) -> list[float]:
        return sorted(self.arrived[k] - at for k, at in sent.items() if k in self.arrived)

    @property
    def messages(self) -> int:
        return len(self.fixes) + len(self.panics)


def run_load(rig: Rig, rate: int, seconds: float, devices: int = 2000, drain_s: float = 60.0) -> Result:
    """Publish for ``seconds`` at ``rate``; wait until PostgreSQL holds every message (or ``drain_s``
    passes without progress); CPU is counted from the first publish to that moment."""
    from guardstream.gateway.auth import issue
    settings = rig.settings
    assert settings is not None
    base_positions, base_alerts = pg_counts(settings)
    token = issue(SECRET, "bench", [TENANT], ["noc"], settings.jwt_audience, time.time(), 3600)
    url = f"ws://127.0.0.1:{settings.gateway_port}/?token={token}"
    ctx = mp.get_context("spawn")
    ready_event, stop_event, received = ctx.Event(), ctx.Event(), ctx.Queue()
    client = ctx.Process(target=receive, args=(url, 2.0, ready_event, stop_event, received))
    client.start()
    if not ready_event.wait(30):
        raise RuntimeError("the WebSocket client did not subscribe")
    host, port = settings.mqtt_url.rsplit("/", 1)[-1].split(":")
    start_at = time.time() + 1.0
    generated = ctx.Queue()
    generator = ctx.Process(target=generate, args=(host, int(port), rate, seconds, devices, start_at, generated))
    generator.start()
    while time.time() < start_at:
        time.sleep(0.001)  # waiting for the agreed start, to read the CPU counters at it
    cpu_before, wall_before = rig.cpu(), time.monotonic()
    sent = generated.get(timeout=seconds + 180)
    want = (base_positions + len(sent["fixes"]), base_alerts + len(sent["panics"]))
    counts, progress_at = pg_counts(settings), time.monotonic()
    while counts[0] < want[0] or counts[1] < want[1]:
        if time.monotonic() - progress_at > drain_s:
            break
        time.sleep(0.05)  # polling PostgreSQL's row count: the condition waited on
        now = pg_counts(settings)
        if now != counts:
            counts, progress_at = now, time.monotonic()
    cpu_after, wall_after = rig.cpu(), time.monotonic()
    stop_event.set()
    got = received.get(timeout=60)
    client.join(30)
    generator.join(30)
    return Result(rate=rate, seconds=seconds, fixes=sent["fixes"], panics=sent["panics"], arrived=got["arrived"],
                  acked=sent["acked"], published_s=sent["published_s"],
                  pg_positions=counts[0] - base_positions, pg_alerts=counts[1] - base_alerts,
                  cpu={k: cpu_after[k] - cpu_before.get(k, 0.0) for k in cpu_after},
                  wall_s=wall_after - wall_before, generator_cpu_s=sent["cpu_s"], client_cpu_s=got["cpu_s"])


def _read_all(settings: Settings, topic: str) -> list:
    from confluent_kafka import Consumer
    from guardstream.topic_end import ReadToEnd, partitions_of, reader_config
    consumer = Consumer(reader_config(settings, "bench-stages"))
    try:
        starts = {(topic, p): 0 for p in partitions_of(consumer, topic)}
        return [m for records in ReadToEnd(consumer, starts, 120) for m in records]
    finally:
        consumer.close()


def stage_latencies(settings: Settings, published: dict[str, float], arrived: dict[str, float]
                    ) -> dict[str, list[float]]:
    """Where the time of each fix that arrived went, by stage: publish -> bridge receipt (its
    ``received_ms`` header) -> raw record -> event record (their timestamps) -> client."""
    from guardstream.catalog import TOPICS
    from guardstream.schemas.codec import Codec
    from guardstream.schemas.registry import FileRegistry
    raw = {dict(m.headers())["msg.id"].decode(): m for m in _read_all(settings, TOPICS.raw_guard.name)}
    codec = Codec(FileRegistry.load())
    events = {codec.decode(m.value())[1]["event_id"]: m for m in _read_all(settings, TOPICS.events_high.name)}
    stages: dict[str, list[float]] = {"MQTT publish -> bridge receipt": [], "bridge receipt -> raw record": [],
                                      "raw record -> event record (worker)": [],
                                      "event record -> WebSocket client (gateway)": []}
    for event_id, at in arrived.items():
        if event_id not in raw or event_id not in events or event_id not in published:
            continue
        received = int(dict(raw[event_id].headers())["received_ms"]) / 1000
        raw_ts, event_ts = raw[event_id].timestamp()[1] / 1000, events[event_id].timestamp()[1] / 1000
        for name, value in zip(stages, (received - published[event_id], raw_ts - received, event_ts - raw_ts,
                                        at - event_ts)):
            stages[name].append(max(0.0, value))
    return stages


def pick(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else float("nan")
