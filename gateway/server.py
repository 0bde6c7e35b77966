"""``guardstream gateway``: the WebSocket server, its handler and its start-up.

One asyncio loop serves every connection; the push consumer runs in a thread
(``feed.py``) and the hub (``hub.py``) fans its events out. A connection is
admitted after the handshake, so a refusal can carry its own close code
(``protocol.CLOSE_CODES``): Origin first, then the token. Each client message
passes the connection's token bucket, then is parsed and served in order; a
subscribe with ``resume`` replays from Kafka before the client goes live.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from guardstream.errors import ConfigError, GuardstreamError, UnavailableError
from guardstream.gateway.auth import (SUBPROTOCOL, AuthRefused, Keys, Principal, LEEWAY_S, origin_allowed,
                                      parse_origins, token_from_request, verify)
from guardstream.gateway.channels import authorise, delivery_channel, parse_channel, route
from guardstream.gateway.feed import FEED_LANES, FEED_TOPICS, ActionWriter, PushFeed, ReplayReader
from guardstream.gateway.frames import FrameWriter
from guardstream.gateway.hub import Client, Hub, message_item
from guardstream.gateway.metrics import GatewayMetrics
from guardstream.gateway.protocol import (CLOSE_CODES, PONG, TP, Ack, ProtocolError, Subscribe, Unsubscribe,
                                          acked_message, alert_action, error_message, hello_message, live_message,
                                          parse_client_message, subscribed_message, unsubscribed_message)
from guardstream.gateway.ratelimit import TokenBucket
from guardstream.gateway.resume import ReplayGate
from guardstream.gateway.snapshot import border, scope, snapshot_messages
from guardstream.gateway.store import Store
from guardstream.gateway.web import FenceCache, Routes, read_fences
from guardstream.observability import cannot_listen
from guardstream.schemas.codec import Codec
from guardstream.settings import Settings

log = logging.getLogger("guardstream.gateway")
RESUME_TOPICS = frozenset(FEED_TOPICS)
CATCH_UP_S = 10.0  # how long a snapshot ahead of the hub waits for the hub
CATCH_UP_POLL_S = 0.02


@dataclass
class Gateway:
    settings: Settings
    keys: Keys
    origins: frozenset[str]
    secure: bool
    codec: Codec
    metrics: GatewayMetrics
    hub: Hub
    writer: ActionWriter
    routes: Routes
    store: Store

    # -- handshake -------------------------------------------------------------------------

    def select_subprotocol(self, connection: ServerConnection, offered: Any) -> str | None:
        # never echo bearer.<token>: the protocol name is the only subprotocol answered
        return SUBPROTOCOL if SUBPROTOCOL in offered else None

    async def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if request.headers.get("Upgrade", "").lower() != "websocket":
            return await self.routes.answer(request)
        sock = connection.transport.get_extra_info("socket")
        if sock is not None:
            # a small kernel buffer keeps a slow client's backlog in its gateway queue, where
            # positions conflate and alerts keep their place, instead of in megabytes of stale frames
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.settings.gateway_send_buffer_bytes)
        return None

    def admit(self, request: Request) -> Principal:
        origins = request.headers.get_all("Origin")
        hosts = request.headers.get_all("Host")
        if len(origins) > 1 or not origin_allowed(origins[0] if origins else None, hosts[0] if hosts else None,
                                                  self.secure, self.origins, self.settings.gateway_host):
            raise AuthRefused(f"origin {origins} is not allowed", reason="forbidden_origin")
        _, _, query = request.path.partition("?")
        return verify(token_from_request(request.headers.raw_items(), query), self.keys, time.time())

    # -- a connection ----------------------------------------------------------------------

    async def handler(self, ws: ServerConnection) -> None:
        try:
            principal = self.admit(ws.request)
        except AuthRefused as exc:
            self.metrics.refusals.labels(exc.reason).inc()
            await ws.close(CLOSE_CODES[exc.reason], exc.reason)
            return
        client = Client(ws, principal, self.settings.gateway_queue_max, self.metrics, FrameWriter.of(ws))
        self.hub.add(client)
        self.metrics.connections_total.inc()
        pump = asyncio.create_task(client.pump())
        expiry = asyncio.get_running_loop().call_later(
            max(0.0, principal.expires_at + LEEWAY_S - time.time()), client.close_soon, "token_expired")
        try:
            await client.send_now(hello_message(principal))
            await self._serve(ws, client)
        except ConnectionClosed as exc:
            if exc.sent is not None and exc.sent.code == 1009:  # websockets closed it: max_size
                self.metrics.refusals.labels("message_too_big").inc()
        finally:
            expiry.cancel()
            self.hub.remove(client)
            pump.cancel()
            await asyncio.gather(pump, return_exceptions=True)

    async def _serve(self, ws: ServerConnection, client: Client) -> None:
        bucket = TokenBucket.per_minute(self.settings.gateway_rate_per_min, time.monotonic())
        async for message in ws:
            bucket, allowed = bucket.take(time.monotonic())
            if not allowed:
                await _refuse(client, "rate_limited")
                return
            try:
                op = parse_client_message(message, RESUME_TOPICS)
            except ProtocolError as exc:
                await _error(client, exc.reason, exc.detail)
                continue
            if isinstance(op, Subscribe):
                if not await self._subscribe(client, op):
                    return
            elif isinstance(op, Unsubscribe):
                self.hub.unsubscribe(client, op.channels)
                await client.send_now(unsubscribed_message(client.subscriptions))
            elif isinstance(op, Ack):
                await self._ack(client, op)
            else:
                await client.send_now(PONG)

    async def _subscribe(self, client: Client, op: Subscribe) -> bool:
        """False when the connection was refused."""
        for name in op.channels:
            channel = parse_channel(name)
            known = self.hub.device_tenants.get(channel.device) if channel.device else None
            reason = authorise(client.principal, channel, known)
            if reason is not None:
                await _refuse(client, reason)
                return False
        if op.resume is not None and client.subscriptions:
            await _error(client, "bad_resume", "resume is honoured in a connection's first subscribe only")
            return True
        if op.snapshot:
            return await self._subscribe_with_snapshot(client, op)
        new = frozenset(op.channels) - client.subscriptions
        live = dict(self.hub.positions)  # the border between replay and live, taken with the subscription
        if op.resume is not None:
            client.gate = ReplayGate.with_capacity(self.settings.gateway_queue_max)
        self.hub.subscribe(client, new)
        await client.send_now(subscribed_message(client.subscriptions, {tp: end - 1 for tp, end in live.items()}))
        if op.resume is not None:
            return await self._replay(client, op.resume, live, new)
        return True

    async def _subscribe_with_snapshot(self, client: Client, op: Subscribe) -> bool:
        """The channels' present state from PostgreSQL, then a replay from the offsets it reflects
        to the hub's live position, then live: every event after the snapshot exactly once."""
        if client.subscriptions:
            await _error(client, "bad_snapshot", "a snapshot is given in a connection's first subscribe only")
            return True
        try:
            snapshot = await self.store.snapshot(scope(client.principal, op.channels))
        except GuardstreamError as exc:  # unreachable or not migrated: nothing subscribed, the client may retry
            await _error(client, "unavailable", exc.detail)
            return True
        new = frozenset(op.channels)
        live = dict(self.hub.positions)
        client.gate = ReplayGate.with_capacity(self.settings.gateway_queue_max)
        self.hub.subscribe(client, new)
        await client.send_now(subscribed_message(client.subscriptions, {tp: end - 1 for tp, end in live.items()}))
        edge = border(snapshot.reflected, live)
        async with client.send_lock:
            for message in snapshot_messages(client.principal, new, snapshot, edge.resume):
                await client.ws.send(message)
        for tp, last in edge.resume.items():
            client.gate.note_replayed(tp, last)  # held live events the snapshot holds are dropped
        if not await self._caught_up(edge.ahead):
            log.warning("the hub did not reach the snapshot's offsets %s in %.0fs", edge.ahead, CATCH_UP_S)
            await _refuse(client, "replay_failed")
            return False
        return await self._replay(client, dict(edge.resume), live, new)

    async def _caught_up(self, ahead: Mapping[TP, int]) -> bool:
        """Whether the hub's live position reaches the offsets of a snapshot taken ahead of it."""
        deadline = time.monotonic() + CATCH_UP_S
        while any(self.hub.positions.get(tp, 0) < end for tp, end in ahead.items()):
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(CATCH_UP_POLL_S)
        return True

    async def _replay(self, client: Client, resume: dict[TP, int], live: dict[TP, int],
                      channels: frozenset[str]) -> bool:
        reader: ReplayReader | None = None
        sent = 0
        try:
            reader = await asyncio.to_thread(ReplayReader, self.settings, self.codec, self.metrics, resume, live)
            async with client.send_lock:
                while (events := await asyncio.to_thread(reader.chunk)) is not None:
                    for event in events:
                        where = route(event.schema, event.record)
                        if where is None:
                            continue
                        self.hub.learn(event, where)
                        name = delivery_channel(client.principal, channels, where.tenant, where.channels)
                        if name is None:
                            continue
                        await client.ws.send(message_item(event, where, name).payload)
                        if client.gate is not None:
                            client.gate.note_replayed(event.tp, event.offset)
                        sent += 1
                await client.ws.send(live_message(sent, reader.plan.gaps))
        except UnavailableError as exc:
            log.warning("replay for %s failed: %s", client.principal.subject, exc.detail)
            await _refuse(client, "replay_failed")
            return False
        finally:
            self.metrics.replayed.inc(sent)
            if reader is not None:
                await asyncio.to_thread(reader.close)
        client.release_gate()
        return True

    async def _ack(self, client: Client, op: Ack) -> None:
        tenant = self.hub.alert_tenants.get(op.alert_event_id)
        if tenant is None:
            await _error(client, "unknown_alert", f"alert {op.alert_event_id} has not passed this gateway")
            return
        if not client.principal.may_act_on(tenant):
            await _error(client, "forbidden_action", "acting on alerts needs role operator or noc and the "
                         "alert's tenant in the token")
            return
        record = alert_action(client.principal, op, tenant, str(uuid.uuid4()), time.time_ns() // 1_000_000)
        try:
            await self.writer.write(record)
        except UnavailableError as exc:
            await _error(client, "unavailable", exc.detail)
            return
        await client.send_now(acked_message(record))


async def _refuse(client: Client, reason: str) -> None:
    client.closing = reason
    client.metrics.refusals.labels(reason).inc()
    await client.ws.close(CLOSE_CODES[reason], reason)


async def _error(client: Client, reason: str, detail: str) -> None:
    client.metrics.errors.labels(reason).inc()
    await client.send_now(error_message(reason, detail))


# -- start-up ----------------------------------------------------------------------------

def tls_context(settings: Settings) -> ssl.SSLContext | None:
    cert, key = settings.gateway_tls_cert, settings.gateway_tls_key
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise ConfigError("GUARDSTREAM_GATEWAY_TLS_KEY", "GUARDSTREAM_GATEWAY_TLS_CERT and _KEY go together")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError("GUARDSTREAM_GATEWAY_TLS_CERT", f"cannot load {cert} / {key}: {exc}") from exc
    return context


def run(settings: Settings) -> int:
    return asyncio.run(_main(settings))


async def _main(settings: Settings) -> int:
    from guardstream.gateway.keys import verification_keys
    from guardstream.observability import serve as serve_metrics
    from guardstream.schemas.registry import registry_from_settings

    keys, origins, tls = verification_keys(settings), parse_origins(settings.gateway_origins), tls_context(settings)
    if settings.log_level != "debug":
        # a line per connection and per page request is noise at thousands of clients; metrics count them
        logging.getLogger("websockets").setLevel(logging.WARNING)
    codec = Codec(registry_from_settings(settings))
    loop = asyncio.get_running_loop()
    stop, failures = asyncio.Event(), []
    metrics = GatewayMetrics.create()
    hub = Hub({}, metrics)
    feeds = [PushFeed(settings, codec, metrics, hub.dispatch, loop, threading.Event(), topics, name)
             for name, topics in FEED_LANES]
    for feed in feeds:
        hub.positions.update(await asyncio.to_thread(feed.open))

    def ready() -> tuple[bool, str]:
        down = [feed.name for feed in feeds if not feed.running]
        return (False, f"push consumer not running: {', '.join(down)}") if down else (True, "")

    def failed(exc: BaseException) -> None:  # the process exits 1 and its supervisor restarts it
        failures.append(exc)
        loop.call_soon_threadsafe(stop.set)

    writer = ActionWriter(settings, codec, metrics)
    fences = FenceCache(lambda: read_fences(settings, codec))
    store = Store(settings.database_url)
    gateway = Gateway(settings, keys, origins, tls is not None, codec, metrics, hub, writer,
                      Routes(keys, fences, ready, store), store)
    metrics.queued.set_function(lambda: hub.queued()[0])
    metrics.queue_deepest.set_function(lambda: hub.queued()[1])
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    endpoints = (serve_metrics(metrics.registry, ready, settings.metrics_host, settings.metrics_port)
                 if settings.metrics_port else None)
    for feed in feeds:
        feed.start(failed)
    try:
        await _serve_until(stop, gateway, tls)
    finally:
        for feed in feeds:
            feed.join(10)
        writer.close()
        await store.close()
        if endpoints is not None:
            endpoints.close()
    return 1 if failures else 0


async def _serve_until(stop: asyncio.Event, gateway: Gateway, tls: ssl.SSLContext | None) -> None:
    settings = gateway.settings
    try:
        server = await serve(gateway.handler, settings.gateway_host, settings.gateway_port, ssl=tls,
                             process_request=gateway.process_request, select_subprotocol=gateway.select_subprotocol,
                             # per-message deflate costs a compressor per connection and CPU per frame,
                             # for messages of a few hundred bytes
                             compression=None, max_size=settings.gateway_max_message_bytes,
                             ping_interval=settings.gateway_ping_interval_s,
                             ping_timeout=settings.gateway_ping_interval_s, server_header=None)
    except OSError as exc:
        raise cannot_listen(exc, settings.gateway_host, settings.gateway_port, "GUARDSTREAM_GATEWAY_HOST",
                            "GUARDSTREAM_GATEWAY_PORT") from exc
    log.info("gateway on %s://%s:%d", "https" if tls else "http", settings.gateway_host, settings.gateway_port)
    try:
        await stop.wait()
    finally:
        server.close()  # every connection is closed with 1001 (going away)
        await server.wait_closed()
