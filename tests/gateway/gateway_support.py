"""Helpers of the gateway tests: a gateway process, tokens, records, WebSocket clients."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import Producer
from support.processes import Component, start_component
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from guardstream.gateway.auth import issue
from guardstream.infra.stack import free_port
from guardstream.kafka import producer_config
from guardstream.schemas.codec import Codec
from guardstream.schemas.registry import FileRegistry
from guardstream.settings import Settings

SECRET = "gateway-tests-secret-0123456789abcdef-0123456789"
AUDIENCE = "guardstream"
ALLOWED_ORIGIN = "https://ops.example.com"
CODEC = Codec(FileRegistry.load())


@dataclass
class GatewayProcess:
    component: Component
    port: int

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def metric(self, name: str, **labels: str) -> float:
        return self.component.metric(name, **labels)

    def stop(self) -> None:
        self.component.stop()


def start_gateway(settings: Settings, log: Path, **env: str) -> GatewayProcess:
    port = free_port()
    component = start_component(["gateway"], settings, log, **{
        "GUARDSTREAM_GATEWAY_PORT": str(port), "GUARDSTREAM_JWT_SECRET": SECRET,
        "GUARDSTREAM_GATEWAY_ORIGINS": ALLOWED_ORIGIN, **env})
    return GatewayProcess(component, port)


def token(sub: str = "alice", tenants: Iterable[str] = ("acme",), roles: Iterable[str] = ("operator",),
          ttl_s: float = 3600, secret: str = SECRET, audience: str = AUDIENCE, now: float | None = None,
          issuer: str | None = None) -> str:
    return issue(secret, sub, tenants, roles, audience, time.time() if now is None else now, ttl_s, issuer)


# -- records -------------------------------------------------------------------------------

def now_ms() -> int:
    return time.time_ns() // 1_000_000


def position(tenant: str, device: str, n: int) -> dict[str, Any]:
    return {"event_id": f"{tenant}-pos-{device}-{n}", "tenant": tenant, "device_id": device, "ts_ms": now_ms(),
            "received_ms": now_ms(), "lat": 52.52 + n / 1e5, "lon": 13.40, "accuracy_m": 4.0, "speed_mps": None,
            "heading_deg": None, "altitude_m": None, "fences": [], "in_site": None, "violation": False}


def alert(tenant: str, device: str, kind: str = "PANIC") -> dict[str, Any]:
    return {"event_id": f"{tenant}-al-{uuid.uuid4().hex[:8]}", "tenant": tenant, "device_id": device,
            "ts_ms": now_ms(), "received_ms": now_ms(), "kind": kind, "severity": "CRITICAL", "lat": 52.52,
            "lon": 13.40, "message": "panic button", "rule": None, "cause_event_id": None}


def produce(settings: Settings, topic: str, schema: str, records: list[dict[str, Any]]) -> None:
    producer = Producer(producer_config(settings, "gateway-tests"))
    for record in records:
        producer.produce(topic, CODEC.encode(schema, record), record["device_id"].encode())
        producer.poll(0)
    assert producer.flush(30) == 0


# -- WebSocket clients ---------------------------------------------------------------------

def ws(gateway: GatewayProcess, bearer: str | None = None, **kwargs: Any) -> Any:
    headers = dict(kwargs.pop("additional_headers", {}))
    if bearer is not None:
        headers["Authorization"] = f"Bearer {bearer}"
    return connect(gateway.ws_url, additional_headers=headers, open_timeout=10, **kwargs)


async def next_message(conn: ClientConnection, timeout_s: float = 15.0) -> dict[str, Any]:
    return json.loads(await asyncio.wait_for(conn.recv(), timeout_s))


async def until(conn: ClientConnection, done: Callable[[dict[str, Any]], bool],
                timeout_s: float = 20.0) -> list[dict[str, Any]]:
    """Messages up to and including the first one ``done`` accepts."""
    out: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout_s
    while True:
        message = await next_message(conn, max(0.1, deadline - time.monotonic()))
        out.append(message)
        if done(message):
            return out


async def close_of(conn: ClientConnection, timeout_s: float = 15.0) -> tuple[int, str]:
    """(code, reason) the server closed with; messages before it are read and ignored."""
    try:
        while True:
            await asyncio.wait_for(conn.recv(), timeout_s)
    except ConnectionClosed as exc:
        assert exc.rcvd is not None, "the server sent no close frame"
        return exc.rcvd.code, exc.rcvd.reason


async def subscribe(conn: ClientConnection, channels: list[str], resume: dict[str, int] | None = None,
                    ) -> dict[str, Any]:
    hello = await next_message(conn)
    assert hello["type"] == "hello", hello
    message: dict[str, Any] = {"op": "subscribe", "channels": channels}
    if resume is not None:
        message["resume"] = resume
    await conn.send(json.dumps(message))
    reply = await next_message(conn)
    assert reply["type"] == "subscribed", reply
    return reply
