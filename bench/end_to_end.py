"""End-to-end latency: MQTT publish -> bridge -> worker -> gateway -> WebSocket client.

Starts its own tansu and mosquitto, runs `guardstream bridge`, `worker` and
`gateway` as processes, and connects one WebSocket client for tenant "acme", in a
process of its own (as a browser is), apart from the publishers.

1. Positions: GPS fixes at RATE messages/s (QoS 1) for SECONDS; the latency of
   each is the time from its publish to its arrival at the client (matched by
   event id: the bridge's msg.id is a hash of topic and payload, so the
   publisher knows it in advance).
2. Alerts under a flood: BACKLOG telemetry messages published as fast as the
   broker takes them, while a panic alert is published every 50 ms; the latency
   of each alert to the client.

Prints p50/p90/p99/max for both. Run: python bench/end_to_end.py [RATE] [SECONDS] [BACKLOG]
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from tempfile import TemporaryDirectory

import paho.mqtt.client as mqtt
import websockets
from embedded import embedded_env, ready
from pipeline_rig import stage_latencies
from paho.mqtt.enums import CallbackAPIVersion

from guardstream.connectors.raw import message_id
from guardstream.gateway.auth import issue
from guardstream.infra import topics
from guardstream.infra.stack import free_port, kafka_answers, mqtt_spec, tansu_spec, tcp_accepts, wait_until
from guardstream.settings import Settings

SECRET = "bench-secret-of-the-end-to-end-run"
TENANT = "acme"


def percentiles(samples: list[float]) -> str:
    if not samples:
        return "no samples"
    ordered = sorted(samples)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000  # noqa: E731
    return (f"n={len(ordered):,}  p50 {pick(.50):.1f} ms  p90 {pick(.90):.1f} ms  p99 {pick(.99):.1f} ms  "
            f"max {ordered[-1] * 1000:.1f} ms  mean {statistics.fmean(ordered) * 1000:.1f} ms")


class Stack:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.processes: list[subprocess.Popen] = []

    def spawn(self, argv: list[str], env: dict[str, str], name: str) -> subprocess.Popen:
        log = (self.tmp / f"{name}.log").open("w")
        process = subprocess.Popen(argv, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT)
        self.processes.append(process)
        return process

    def start(self) -> Settings:
        kafka_port, mqtt_port = free_port(), free_port()
        spec = tansu_spec(kafka_port)
        self.spawn(list(spec.argv), dict(spec.env), "kafka")
        spec, _ = mqtt_spec(mqtt_port, self.tmp / "mqtt")
        self.spawn(list(spec.argv), dict(spec.env), "mqtt")
        bootstrap = f"127.0.0.1:{kafka_port}"
        wait_until(lambda: kafka_answers(bootstrap), 30, "tansu")
        wait_until(lambda: tcp_accepts("127.0.0.1", mqtt_port), 30, "mosquitto")
        settings = Settings.from_env(embedded_env(
            KAFKA_BOOTSTRAP_SERVERS=bootstrap, MQTT_URL=f"mqtt://127.0.0.1:{mqtt_port}",
            GUARDSTREAM_JWT_SECRET=SECRET, GUARDSTREAM_STATE_DIR=str(self.tmp / "state"),
            GUARDSTREAM_GATEWAY_PORT=str(free_port()), GUARDSTREAM_DEFAULT_TENANT=TENANT))
        topics.apply(settings)
        for command in ("bridge", "worker", "gateway"):
            port = free_port()
            self.spawn([sys.executable, "-m", "guardstream.cli", command],
                       settings.replace(metrics_port=port).as_env(), command)
            wait_until(lambda: ready(port), 60, command)
        return settings

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.terminate()
        for process in self.processes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()


def publisher(settings: Settings, name: str = "pub") -> mqtt.Client:
    host, port = settings.mqtt_url.rsplit("/", 1)[-1].split(":")
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-{name}-{os.getpid()}", protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(2000)
    client.max_queued_messages_set(0)
    client.connect(host, int(port))
    client.loop_start()
    return client


def publish_positions(client: mqtt.Client, sent: dict[str, float], rate: int, seconds: float) -> None:
    start = time.monotonic()
    for i in range(int(rate * seconds)):
        due = start + i / rate
        pause = due - time.monotonic()
        if pause > 0:
            time.sleep(pause)  # pacing the load generator, not synchronising
        guard = f"guard-{i % 200}"
        topic = f"guard/{guard}/gps"
        payload = json.dumps({"ts": time.time(), "lat": 52.52 + (i % 200) * 1e-4, "lon": 13.40 + (i % 7) * 1e-4,
                              "accuracy_m": 5, "tenant": TENANT, "seq": i}).encode()
        sent[message_id(topic, payload)] = time.time()
        client.publish(topic, payload, qos=1)


def publish_flood(client: mqtt.Client, alerter: mqtt.Client, sent: dict[str, float], backlog: int,
                  done: threading.Event) -> None:
    # the alerting devices have connections of their own, as in the field
    alerts = threading.Thread(target=_alerts_every, args=(alerter, sent, done), daemon=True)
    alerts.start()
    for i in range(backlog):
        payload = json.dumps({"ts": time.time(), "battery_pct": 80, "tenant": TENANT, "seq": i}).encode()
        while client.publish(f"device/radio-{i % 500}/telemetry", payload, qos=1).rc != mqtt.MQTT_ERR_SUCCESS:
            done.wait(0.001)
    done.set()
    alerts.join()


def _alerts_every(client: mqtt.Client, sent: dict[str, float], done: threading.Event) -> None:
    i = 0
    while not done.wait(0.05):
        topic = f"alert/panic/guard-{i % 50}"
        payload = json.dumps({"ts": time.time(), "tenant": TENANT, "message": f"bench {i}"}).encode()
        sent[message_id(topic, payload)] = time.time()
        client.publish(topic, payload, qos=1)
        i += 1


def _receive_in_process(url: str, channel: str, settle_s: float, until, ready, out) -> None:
    """The dashboard client, in a process of its own as a browser would be: the publishers'
    threads would otherwise hold the GIL while its events wait (measured: 23 ms -> 12 ms at
    p50 for the gateway hop when the publishers' process switched threads ten times as often)."""
    asyncio.run(_receive(url, channel, settle_s, until, ready, out))


async def _receive(url: str, channel: str, settle_s: float, until, ready, out) -> None:
    arrived: dict[str, float] = {}
    async with websockets.connect(url, max_size=2**22) as ws:
        await ws.send(json.dumps({"op": "subscribe", "channels": [channel]}))
        deadline = None
        while True:
            if until.is_set() and deadline is None:
                deadline = time.monotonic() + settle_s
            if deadline and time.monotonic() > deadline:
                break
            try:
                raw = await asyncio.wait_for(ws.recv(), timeout=0.5)
            except asyncio.TimeoutError:
                continue
            now = time.time()
            message = json.loads(raw)
            if message.get("type") == "subscribed":
                ready.set()
            elif message.get("type") == "event":
                event_id = (message.get("data") or {}).get("event_id")
                if event_id:
                    arrived.setdefault(event_id, now)
    out.put(arrived)


def measure(url: str, channel: str, settle_s: float, publish: Callable[[dict[str, float]], None]
            ) -> tuple[list[float], int, dict[str, float], dict[str, float]]:
    """(latencies, messages not received, publish times, arrival times) of what ``publish`` sent."""
    ctx = mp.get_context("spawn")
    until, ready, out = ctx.Event(), ctx.Event(), ctx.Queue()
    receiver = ctx.Process(target=_receive_in_process, args=(url, channel, settle_s, until, ready, out))
    receiver.start()
    try:
        if not ready.wait(30):
            raise RuntimeError(f"the WebSocket client did not subscribe to {channel}")
        sent: dict[str, float] = {}
        publish(sent)
        until.set()
        arrived = out.get(timeout=settle_s + 60)
    finally:
        receiver.join(30)
    latencies = [arrived[k] - at for k, at in sent.items() if k in arrived]
    return latencies, len(sent) - len(latencies), sent, arrived


def run(settings: Settings, rate: int, seconds: float, backlog: int) -> None:
    token = issue(SECRET, "bench", [TENANT], ["noc"], settings.jwt_audience, time.time(), 3600)
    url = f"ws://127.0.0.1:{settings.gateway_port}/?token={token}"
    client = publisher(settings)

    positions, missing, published, arrived = measure(
        url, f"tenant:{TENANT}:positions", 5, lambda sent: publish_positions(client, sent, rate, seconds))
    print(f"positions at {rate:,} msg/s for {seconds:g} s: {percentiles(positions)}; {missing:,} not received")
    print_stages(settings, published, arrived)

    alerter = publisher(settings, "alerter")
    timing: dict[str, float] = {}

    def flood(sent: dict[str, float]) -> None:
        started = time.monotonic()
        publish_flood(client, alerter, sent, backlog, threading.Event())
        timing["flood_s"] = time.monotonic() - started

    alerts, missing, _, _ = measure(url, f"tenant:{TENANT}:alerts", 30, flood)
    print(f"panic alerts during a flood of {backlog:,} telemetry messages ({backlog / timing['flood_s']:,.0f} msg/s "
          f"published): {percentiles(alerts)}; {missing:,} not received")
    client.loop_stop()
    alerter.loop_stop()


def print_stages(settings: Settings, published: dict[str, float], arrived: dict[str, float]) -> None:
    """Where the time goes: publish -> bridge receipt -> raw record -> event record -> client."""
    for name, values in stage_latencies(settings, published, arrived).items():
        print(f"  {name:<45} {percentiles(values)}")


def main() -> None:
    rate = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 20
    backlog = int(sys.argv[3]) if len(sys.argv) > 3 else 100_000
    with TemporaryDirectory() as tmp:
        stack = Stack(Path(tmp))
        try:
            settings = stack.start()
            run(settings, rate, seconds, backlog)
        finally:
            stack.stop()


if __name__ == "__main__":
    main()
