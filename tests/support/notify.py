"""Real receivers for the notifier's tests: an SMTP server (aiosmtpd) and an HTTP server that
plays both the webhook receiver and the SMS provider; and the notifier process of one test."""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import psycopg
from aiosmtpd.controller import Controller
from confluent_kafka import Consumer, Producer, TopicPartition
from support.processes import Component, start_component

from guardstream.catalog import TOPICS
from guardstream.infra.stack import free_port
from guardstream.kafka import consumer_config, produce, producer_config
from guardstream.records import ALERT_ACTION, DEVICE_ALERT, alert_action, device_alert
from guardstream.schemas.codec import Codec
from guardstream.schemas.registry import FileRegistry
from guardstream.settings import Settings
from guardstream.topic_end import probe_end_offsets

CODEC = Codec(FileRegistry.load())
SECRET = "webhook-test-secret"
SMS_PATH = "/2010-04-01/Accounts/AC-test/Messages.json"
T0 = 1_795_000_000_000


class MailBox:
    """An SMTP server on a port of its own that keeps every message it accepts; stop and start it again
    on the same port to take the provider away and bring it back. While ``release`` is clear, a message is
    kept but not answered: the provider took it and the sender has not heard so."""

    def __init__(self) -> None:
        self.port = free_port()
        self.messages: list[EmailMessage] = []
        self.release = threading.Event()
        self.release.set()
        self._lock = threading.Lock()
        self._controller: Controller | None = None
        self.start()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's name
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self._lock:
            self.messages.append(message)
        await asyncio.get_running_loop().run_in_executor(None, self.release.wait, 60)
        return "250 Message accepted for delivery"

    def start(self) -> None:
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def received(self) -> list[EmailMessage]:
        with self._lock:
            return list(self.messages)


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic() of its arrival

    def json(self) -> Any:
        return json.loads(self.body)

    def form(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(self.body.decode()).items()}


@dataclass
class HttpReceiver:
    """A local HTTP server: answers ``status`` (503 plays a provider that is down) and keeps what it took.
    Until ``refuse_until`` (``time.monotonic()``) it answers 503 whatever ``status`` says; while ``release``
    is clear, it keeps a request but answers nothing yet."""

    status: int = 200
    accepted: list[Request] = field(default_factory=list)
    refused: int = 0
    refuse_until: float = 0.0
    release: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        receiver, lock = self, threading.Lock()
        self.release.set()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status = 503 if time.monotonic() < receiver.refuse_until else receiver.status
                with lock:
                    if 200 <= status < 300:
                        receiver.accepted.append(Request(self.path, dict(self.headers.items()), body, time.monotonic()))
                    else:
                        receiver.refused += 1
                receiver.release.wait(60)
                reply = json.dumps({"sid": f"SM{uuid.uuid4().hex[:8]}", "status": "queued"}).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(reply)))
                    self.end_headers()
                    self.wfile.write(reply)
                except (BrokenPipeError, ConnectionResetError):  # the sender was killed while we held its request
                    self.close_connection = True

            def log_message(self, format: str, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def received(self, path: str) -> list[Request]:
        return [r for r in list(self.accepted) if r.path == path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def rules_file(path: Path, tenant: str, hook: str, tiers: str, extra: str = "") -> Path:
    path.write_text(f"""
{extra}
[recipients.ops]
email = "ops@example.invalid"
phone = "+15550100"
webhook = "{hook}"
[recipients.boss]
email = "boss@example.invalid"
phone = "+15550101"
[sites]
"guard-1" = "north-gate"
[[rules]]
name = "test"
tenants = ["{tenant}"]
{tiers}
""")
    return path


@dataclass
class Notifier:
    """The notifier of one test: its database, group, receivers and log; started again after a kill."""

    settings: Settings
    database_url: str
    group: str
    rules: Path
    mail: MailBox
    http: HttpReceiver
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    component: Component | None = None

    def start(self) -> Notifier:
        self.component = start_component(["notifier"], self.settings, self.log, ready_s=60, **self.environment())
        return self

    def environment(self) -> dict[str, str]:
        """The notifier's settings besides the session's: its database, group, rules and providers."""
        return {"DATABASE_URL": self.database_url, "GUARDSTREAM_NOTIFY_GROUP": self.group,
               "GUARDSTREAM_NOTIFY_RULES": str(self.rules),
               "GUARDSTREAM_NOTIFY_SMTP_URL": f"smtp://127.0.0.1:{self.mail.port}",
               "GUARDSTREAM_NOTIFY_SMTP_STARTTLS": "false", "GUARDSTREAM_NOTIFY_EMAIL_FROM": "gs@example.invalid",
               "GUARDSTREAM_NOTIFY_WEBHOOK_SECRET": SECRET,
               "GUARDSTREAM_NOTIFY_SMS_URL": self.http.url + SMS_PATH, "GUARDSTREAM_NOTIFY_SMS_ACCOUNT": "AC-test",
               "GUARDSTREAM_NOTIFY_SMS_TOKEN": "sms-token", "GUARDSTREAM_NOTIFY_SMS_FROM": "+15559999",
               "GUARDSTREAM_NOTIFY_DASHBOARD_URL": "https://dash.example.invalid/",
               "GUARDSTREAM_NOTIFY_RETRY_BASE_MS": "200", "GUARDSTREAM_NOTIFY_RETRY_MAX_MS": "1000",
               "GUARDSTREAM_NOTIFY_SEND_TIMEOUT_S": "2", **self.env}

    def kill(self) -> None:
        assert self.component is not None
        self.component.kill()

    def stop(self) -> None:
        if self.component is not None:
            self.component.stop(20)

    def metric(self, name: str, **labels: str) -> float:
        assert self.component is not None
        return self.component.metric(name, **labels)

    def rows(self, query: str, *params: Any) -> list[tuple]:
        with psycopg.connect(self.database_url) as conn:
            return conn.execute(query, params).fetchall()

    def count(self, where: str = "true", *params: Any) -> int:
        return self.rows(f"SELECT count(*) FROM notifications WHERE {where}", *params)[0][0]


def start_group_at_end(settings: Settings, group: str) -> None:
    """Commit the current end of events.critical and alerts.actions for ``group``: other tests' records are not read."""
    topics = (TOPICS.events_critical.name, TOPICS.alerts_actions.name)
    metadata = Producer(producer_config(settings, "test-notify-meta")).list_topics(timeout=10)
    partitions = [(t, p) for t in topics for p in metadata.topics[t].partitions]
    ends = probe_end_offsets(settings, partitions)
    consumer = Consumer(consumer_config(settings, "test-notify-offsets", group))
    try:
        consumer.commit(offsets=[TopicPartition(t, p, end) for (t, p), (_, end) in ends.items()], asynchronous=False)
    finally:
        consumer.close()


class Alerts:
    """A producer of DeviceAlerts and AlertActions, the way the worker and the gateway write them."""

    def __init__(self, settings: Settings, tenant: str) -> None:
        self.producer = Producer(producer_config(settings, "test-notify-alerts"))
        self.tenant = tenant

    def alert(self, event_id: str, device: str = "guard-1", kind: str = "PANIC") -> None:
        record = device_alert(event_id=event_id, tenant=self.tenant, device_id=device, ts_ms=T0, received_ms=T0 + 40,
                              kind=kind, severity="CRITICAL", lat=52.52, lon=13.405, message="panic button")
        produce(self.producer, TOPICS.events_critical.name, CODEC.encode(DEVICE_ALERT, record), device.encode())

    def action(self, alert_id: str, action: str = "ACKNOWLEDGE") -> None:
        record = alert_action(action_id=f"act-{uuid.uuid4().hex[:8]}", tenant=self.tenant, alert_event_id=alert_id,
                              action=action, actor="operator-1", ts_ms=T0 + 1000)
        produce(self.producer, TOPICS.alerts_actions.name, CODEC.encode(ALERT_ACTION, record), alert_id.encode())

    def flush(self) -> None:
        assert self.producer.flush(30) == 0
