"""Notification latency: a panic published on MQTT -> bridge -> worker -> notifier -> email accepted by
an SMTP server, while a flood of telemetry goes through the same bridge and worker; then how many
notifications a second each channel takes.

Starts its own tansu, mosquitto and a PostgreSQL database (on the server at PG_TEST_ADMIN_URL, default
postgresql://postgres@127.0.0.1:5432/postgres, else an embedded pgserver), an aiosmtpd server and a
local HTTP server (webhook receiver and SMS provider), and runs `guardstream bridge`, `worker` and
`notifier` as processes.

1. Panic -> email: BACKLOG telemetry messages published as fast as the broker takes them while a
   panic is published every 50 ms from its own connection; the latency of each panic from its
   publish to the SMTP server's acceptance of its email (matched by alert id: the bridge's msg.id,
   which the publisher computes in advance).
2. Throughput: ALERTS alerts produced at once to events.critical, routed to email, webhook and SMS;
   notifications a second per channel, from the first to the last accepted.

Run: python bench/notify_latency.py [BACKLOG] [ALERTS]   (defaults 50000 and 200, about a minute; the issue's flood is 100000)
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from tempfile import TemporaryDirectory

import psycopg
from aiosmtpd.controller import Controller
from confluent_kafka import Producer
from embedded import embedded_env, ready
from end_to_end import Stack, percentiles, publish_flood, publisher

from guardstream.catalog import TOPICS
from guardstream.infra import topics
from guardstream.infra.migrate import migrate
from guardstream.infra.stack import free_port, kafka_answers, mqtt_spec, tansu_spec, tcp_accepts, wait_until
from guardstream.kafka import produce, producer_config
from guardstream.records import DEVICE_ALERT, device_alert
from guardstream.schemas.codec import Codec
from guardstream.schemas.registry import FileRegistry
from guardstream.settings import Settings

SMS_PATH = "/2010-04-01/Accounts/AC-bench/Messages.json"

TENANT = "acme"
ADMIN_URL = os.environ.get("PG_TEST_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
RULES = """
[recipients.ops]
email = "ops@example.invalid"
phone = "+15550100"
webhook = "{hook}"
[[rules]]
name = "panic"
tenants = ["acme"]
kinds = ["PANIC"]
  [[rules.tiers]]
  recipients = ["ops"]
  channels = ["email"]
[[rules]]
name = "throughput"
tenants = ["acme"]
  [[rules.tiers]]
  recipients = ["ops"]
  channels = ["email", "webhook", "sms"]
"""


class _Acceptor:
    def __init__(self, out) -> None:
        self.out = out

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: N802 - aiosmtpd's name
        for line in envelope.content.split(b"\r\n"):
            if line.startswith(b"X-Guardstream-Alert:"):
                self.out.put((line.split(b":", 1)[1].strip().decode(), time.time()))
        return "250 OK"


def _serve_smtp(port: int, out, stop) -> None:
    controller = Controller(_Acceptor(out), hostname="127.0.0.1", port=port)
    controller.start()
    stop.wait()
    controller.stop()


class Inbox:
    """An SMTP server that notes when it accepted each alert's email; in a process of its own, as a mail
    server is, so the publishers' threads do not hold up its clock."""

    def __init__(self) -> None:
        self.accepted: dict[str, float] = {}
        self.port = free_port()
        ctx = mp.get_context("spawn")
        self._out, self._stop = ctx.Queue(), ctx.Event()
        self._process = ctx.Process(target=_serve_smtp, args=(self.port, self._out, self._stop), daemon=True)
        self._process.start()
        threading.Thread(target=self._drain, daemon=True).start()
        wait_until(lambda: tcp_accepts("127.0.0.1", self.port), 30, "SMTP server")

    def _drain(self) -> None:
        while True:
            alert_id, at = self._out.get()
            self.accepted.setdefault(alert_id, at)

    def close(self) -> None:
        self._stop.set()
        self._process.join(10)


class HttpReceiver:
    """The webhook receiver and the SMS provider: notes the path and time.monotonic() of each POST."""

    def __init__(self) -> None:
        self.arrivals: list[tuple[str, float]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.arrivals.append((self.path, time.monotonic()))
                self.send_response(201)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, format: str, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def received(self, path: str) -> list[float]:
        return [at for p, at in list(self.arrivals) if p == path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def database() -> tuple[str, object]:
    """(URL of a fresh database, what to clean up)."""
    try:
        psycopg.connect(ADMIN_URL, connect_timeout=3).close()
        admin, server = ADMIN_URL, None
    except psycopg.OperationalError:
        import pgserver
        server = pgserver.get_server(tempfile.mkdtemp(prefix="bench-pg-"), cleanup_mode="stop")
        admin = server.get_uri("postgres")
    name = f"bench_notify_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return admin.rsplit("/", 1)[0] + f"/{name}", server


def start(stack: Stack, tmp: Path, smtp_port: int, http: HttpReceiver, database_url: str) -> Settings:
    kafka_port, mqtt_port = free_port(), free_port()
    spec = tansu_spec(kafka_port)
    stack.spawn(list(spec.argv), dict(spec.env), "kafka")
    spec, _ = mqtt_spec(mqtt_port, tmp / "mqtt")
    stack.spawn(list(spec.argv), dict(spec.env), "mqtt")
    bootstrap = f"127.0.0.1:{kafka_port}"
    wait_until(lambda: kafka_answers(bootstrap), 30, "tansu")
    wait_until(lambda: tcp_accepts("127.0.0.1", mqtt_port), 30, "mosquitto")
    rules = tmp / "rules.toml"
    rules.write_text(RULES.format(hook=http.url + "/hook"))
    settings = Settings.from_env(embedded_env(
        KAFKA_BOOTSTRAP_SERVERS=bootstrap, MQTT_URL=f"mqtt://127.0.0.1:{mqtt_port}", DATABASE_URL=database_url,
        GUARDSTREAM_STATE_DIR=str(tmp / "state"), GUARDSTREAM_DEFAULT_TENANT=TENANT,
        GUARDSTREAM_NOTIFY_RULES=str(rules), GUARDSTREAM_NOTIFY_SMTP_URL=f"smtp://127.0.0.1:{smtp_port}",
        GUARDSTREAM_NOTIFY_SMTP_STARTTLS="false", GUARDSTREAM_NOTIFY_WEBHOOK_SECRET="bench",
        GUARDSTREAM_NOTIFY_SMS_URL=http.url + SMS_PATH, GUARDSTREAM_NOTIFY_SMS_ACCOUNT="AC-bench",
        GUARDSTREAM_NOTIFY_SMS_TOKEN="token", GUARDSTREAM_NOTIFY_SMS_FROM="+15559999"))
    topics.apply(settings)
    migrate(database_url)
    for command in ("bridge", "worker", "notifier"):
        port = free_port()
        stack.spawn([sys.executable, "-m", "guardstream.cli", command], settings.replace(metrics_port=port).as_env(),
                    command)
        wait_until(lambda: ready(port), 60, command)
    return settings


def print_stages(database_url: str, sent: dict[str, float], inbox: Inbox) -> None:
    """Where the time goes, from the notifications rows: publish -> row planned (bridge, worker, notifier's
    planner) -> claimed by a sender -> marked sent (the SMTP exchange) ; and the SMTP server's own clock."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT alert_id, extract(epoch FROM created_at), extract(epoch FROM claimed_at), "
                            "extract(epoch FROM sent_at) FROM notifications WHERE channel = 'email'").fetchall()
    stages: dict[str, list[float]] = {"publish -> row planned": [], "planned -> claimed": [],
                                      "claimed -> marked sent": [], "SMTP accepted -> marked sent": []}
    for alert_id, planned, claimed, done in rows:
        if alert_id in sent and claimed is not None and done is not None:
            values = [float(planned) - sent[alert_id], float(claimed) - float(planned), float(done) - float(claimed)]
            if alert_id in inbox.accepted:
                values.append(float(done) - inbox.accepted[alert_id])
            for name, value in zip(stages, values):
                stages[name].append(max(0.0, value))
    for name, values in stages.items():
        print(f"  {name:<30} {percentiles(values)}")


def panic_latency(settings: Settings, inbox: Inbox, backlog: int) -> None:
    client, alerter = publisher(settings), publisher(settings, "alerter")
    sent: dict[str, float] = {}
    started = time.monotonic()
    publish_flood(client, alerter, sent, backlog, threading.Event())
    flood_s = time.monotonic() - started
    try:
        wait_until(lambda: all(k in inbox.accepted for k in sent), 60, "every panic's email")
    except Exception as exc:  # noqa: BLE001 - a bench reports what it saw
        print(f"  ({exc})")
    latencies = [inbox.accepted[k] - at for k, at in sent.items() if k in inbox.accepted]
    print(f"panic on MQTT -> email accepted, during a flood of {backlog:,} telemetry messages "
          f"({backlog / flood_s:,.0f} msg/s published): {percentiles(latencies)}; "
          f"{len(sent) - len(latencies)} not received")
    print_stages(settings.database_url, sent, inbox)
    client.loop_stop()
    alerter.loop_stop()


def throughput(settings: Settings, inbox: Inbox, http: HttpReceiver, alerts: int) -> None:
    producer = Producer(producer_config(settings, "bench-notify"))
    codec = Codec(FileRegistry.load())
    ids = [f"tp-{uuid.uuid4().hex[:12]}" for _ in range(alerts)]
    now = int(time.time() * 1000)
    t0, t0_monotonic = time.time(), time.monotonic()
    for i, event_id in enumerate(ids):
        record = device_alert(event_id=event_id, tenant=TENANT, device_id=f"guard-{i % 50}", ts_ms=now,
                              received_ms=now, kind="SOS", severity="CRITICAL", message="throughput")
        produce(producer, TOPICS.events_critical.name, codec.encode(DEVICE_ALERT, record), record["device_id"].encode())
    producer.flush(30)
    wanted = set(ids)

    def arrivals() -> dict[str, list[float]]:
        # seconds from the first produce to each acceptance
        return {"email": [at - t0 for k, at in inbox.accepted.items() if k in wanted],
                "webhook": [at - t0_monotonic for at in http.received("/hook")],
                "sms": [at - t0_monotonic for at in http.received(SMS_PATH)]}
    try:
        wait_until(lambda: all(len(v) >= alerts for v in arrivals().values()), 120, "every notification")
    except Exception as exc:  # noqa: BLE001
        print(f"  ({exc})")
    for channel, times in arrivals().items():
        span = max(times) if times else 0.0
        print(f"  {channel:<8} {len(times):,} notifications of {alerts:,} alerts in {span:.2f} s: "
              f"{len(times) / span if span else 0:,.0f}/s")


def main() -> None:
    backlog = int(sys.argv[1]) if len(sys.argv) > 1 else 50_000
    alerts = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    database_url, server = database()
    inbox, http = Inbox(), HttpReceiver()
    with TemporaryDirectory() as tmp:
        stack = Stack(Path(tmp))
        try:
            settings = start(stack, Path(tmp), inbox.port, http, database_url)
            panic_latency(settings, inbox, backlog)
            print(f"notifications/s per channel, {alerts:,} alerts produced at once to events.critical:")
            throughput(settings, inbox, http, alerts)
        finally:
            stack.stop()
            inbox.close()
            http.close()
            if server is not None:
                server.cleanup()


if __name__ == "__main__":
    main()
