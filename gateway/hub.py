"""The hub: live events in, each subscribed client's queue filled, then written in one go.

Runs on the event loop only (the push consumer hands it batches through
``call_soon_threadsafe``), so its maps need no locks. Per event it renders one
message and its WebSocket frame per matching channel and shares them between
all the clients that get it. Which clients get it, and on which channel, is
``channels.delivery_channel``, the decision a resume replay makes too; the hub
takes it once per route and remembers it until a subscription changes.

Every message still passes the client's bounded queue (conflation, the
never-drop rule for alerts); at the end of a batch each client that got
something writes its queue in one write, as far as its connection takes it.
What is left waits for the client's sender task, which writes when the
connection drains.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Protocol

from guardstream.gateway.auth import Principal
from guardstream.gateway.channels import Route, channel_kind, delivery_channel, route
from guardstream.gateway.feed import FeedEvent
from guardstream.gateway.frames import text_frame
from guardstream.gateway.metrics import GatewayMetrics
from guardstream.gateway.protocol import CLOSE_CODES, alert_status_message, event_message
from guardstream.gateway.queues import QUEUED, ClientQueue, Item, Lane, Offer
from guardstream.gateway.resume import ReplayGate
from guardstream.records import ALERT_ACTION, DEVICE_ALERT

log = logging.getLogger("guardstream.gateway")
TP = tuple[str, int]
REMEMBERED = 100_000  # devices and alerts whose tenant the hub remembers, each


class Sender(Protocol):
    async def send(self, message: str) -> None: ...
    async def close(self, code: int = 1000, reason: str = "") -> None: ...


class FrameSink(Protocol):
    """Pre-built frames straight onto the connection (``frames.FrameWriter``)."""

    @property
    def open(self) -> bool: ...
    def room(self) -> int: ...
    def write(self, frames: list[bytes]) -> None: ...
    async def drained(self) -> None: ...


class Client:
    def __init__(self, ws: Sender, principal: Principal, queue_capacity: int, metrics: GatewayMetrics,
                 frames: FrameSink | None = None) -> None:
        self.ws, self.principal, self.metrics, self.frames = ws, principal, metrics, frames
        self.queue = ClientQueue(queue_capacity)
        self.subscriptions: set[str] = set()
        self.gate: ReplayGate | None = None
        self.closing: str | None = None
        self.send_lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._pending: list[Item] = []  # delivered since the last flush, with an empty queue before them

    def deliver(self, item: Item) -> None:
        """``item`` goes out at the next :meth:`flush`: written then if the connection takes it,
        queued otherwise."""
        if self.closing is not None:
            return
        if self.gate is None and (self._pending or not self.queue):
            self._pending.append(item)  # nothing waits before it: the queue is bypassed unless it is needed
        else:
            self._offer(item)

    def _offer(self, item: Item) -> None:
        if self.closing is not None:
            return
        offer = self.gate.hold(item) if self.gate is not None else self.queue.offer(item)
        if offer is not QUEUED:
            self._count(offer)
            if offer.overflow:
                self.close_soon("slow_consumer")

    def flush(self) -> None:
        """Write what was delivered since the last flush, in one write, as far as the connection
        takes it now; what it does not take is queued (where positions conflate and alerts keep
        their place) for the sender task, which writes when the connection drains, or everything
        when frames cannot be written directly. Nothing is written while a protocol reply,
        snapshot or replay holds the send lock."""
        pending, self._pending = self._pending, []
        if self.closing is not None:
            return
        if pending and self.frames is not None and not self.send_lock.locked() and not self.queue:
            pending = self._write(pending)
        for item in pending:
            self._offer(item)
        if self.queue and self.closing is None:
            if self.frames is not None and not self.send_lock.locked():
                self._write_queued()
            if self.queue:
                self._wake.set()

    def _write(self, items: list[Item]) -> list[Item]:
        """Writes the frames of ``items`` the connection takes now; returns the rest."""
        assert self.frames is not None
        room = self.frames.room()
        frames = [item.frame or text_frame(item.payload) for item in items]
        if sum(map(len, frames)) > room:
            taken = 0
            while taken < len(frames) and room > 0:
                room -= len(frames[taken])
                taken += 1
            frames, items, rest = frames[:taken], items[:taken], items[taken:]
        else:
            rest = []
        if frames:
            self.frames.write(frames)
            self._sent(items, time.time())
        return rest

    def _write_queued(self) -> int:
        """How many queued messages were written."""
        assert self.frames is not None
        room = self.frames.room()
        frames, items = [], []
        while room > 0 and (item := self.queue.take()) is not None:
            frame = item.frame or text_frame(item.payload)
            frames.append(frame)
            items.append(item)
            room -= len(frame)
        if frames:
            self.frames.write(frames)
            self._sent(items, time.time())
        return len(items)

    def _count(self, offer: Offer) -> None:
        if offer.conflated is not None:
            self.metrics.inc(self.metrics.conflated, offer.conflated.kind)
        if offer.dropped is not None:
            self.metrics.inc(self.metrics.dropped, offer.dropped.kind)

    def release_gate(self) -> None:
        """After a replay: the held live messages the replay did not send, in order."""
        if self.gate is None:
            return
        held, self.gate = self.gate.release(), None
        for item in held:
            self.deliver(item)
        self.flush()

    def close_soon(self, reason: str) -> None:
        if self.closing is not None:
            return
        self.closing = reason
        self.metrics.refusals.labels(reason).inc()
        self.queue = ClientQueue(1)  # nothing queued is sent any more
        task = asyncio.get_running_loop().create_task(self.ws.close(CLOSE_CODES[reason], reason))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def send_now(self, message: str) -> None:
        """A protocol reply, ahead of queued events."""
        async with self.send_lock:
            await self.ws.send(message)
        if self.queue:
            self._wake.set()

    async def pump(self) -> None:
        """The sender task: writes what :meth:`flush` could not, until the connection ends."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self.queue and self.closing is None:
                async with self.send_lock:
                    if self.frames is not None:
                        await self.frames.drained()
                        if not self._write_queued() and not self.frames.open:
                            return  # closing: the handler ends this task
                    elif (item := self.queue.take()) is not None:
                        await self.ws.send(item.payload)
                        self._sent([item], time.time())

    def _sent(self, items: list[Item], now: float) -> None:
        record = self.metrics.deliveries.record
        for item in items:
            if item.topic is not None:
                record(item.kind, None if item.born_ms is None else max(0.0, now - item.born_ms / 1000))


class Hub:
    def __init__(self, positions: Mapping[TP, int], metrics: GatewayMetrics) -> None:
        self.metrics = metrics
        self.positions: dict[TP, int] = dict(positions)  # next offset to dispatch, per partition
        self.clients: set[Client] = set()
        self.by_channel: dict[str, set[Client]] = {}
        # who gets an event of a route, and on which channel: delivery_channel decided once per
        # route and subscription change, not once per event and client
        self._audiences: dict[tuple[str, tuple[str, ...]], list[tuple[Client, str]]] = {}
        self.device_tenants: OrderedDict[str, str] = OrderedDict()
        self.alert_tenants: OrderedDict[str, str] = OrderedDict()

    # -- subscriptions -------------------------------------------------------------------

    def add(self, client: Client) -> None:
        self.clients.add(client)
        self.metrics.connections.set(len(self.clients))

    def remove(self, client: Client) -> None:
        self.unsubscribe(client, list(client.subscriptions))
        self.clients.discard(client)
        self.metrics.connections.set(len(self.clients))

    def subscribe(self, client: Client, names: Iterable[str]) -> None:
        for name in names:
            if name not in client.subscriptions:
                client.subscriptions.add(name)
                self.by_channel.setdefault(name, set()).add(client)
                self._audiences.clear()
                self.metrics.subscriptions.labels(channel_kind(name)).inc()

    def unsubscribe(self, client: Client, names: Iterable[str]) -> None:
        for name in names:
            if name in client.subscriptions:
                client.subscriptions.discard(name)
                subscribers = self.by_channel.get(name)
                if subscribers is not None:
                    subscribers.discard(client)
                    if not subscribers:
                        del self.by_channel[name]
                self._audiences.clear()
                self.metrics.subscriptions.labels(channel_kind(name)).dec()

    def queued(self) -> tuple[int, int]:
        """(messages queued in all clients, in the deepest one)."""
        depths = [len(c.queue) for c in list(self.clients)]
        return sum(depths), max(depths, default=0)

    # -- events ----------------------------------------------------------------------------

    def dispatch(self, events: list[FeedEvent]) -> None:
        """Queue a batch's events for their clients, then write each client's share in one write."""
        touched: dict[Client, None] = {}
        for event in events:
            self.positions[event.tp] = max(self.positions.get(event.tp, 0), event.offset + 1)
            where = route(event.schema, event.record)
            if where is None:
                self.metrics.feed_refused.labels("no_channel").inc()
                continue
            self.learn(event, where)
            self._fan_out(event, where, touched)
        for client in touched:
            client.flush()

    def learn(self, event: FeedEvent, where: Route) -> None:
        """Remember which tenant a device and an alert belong to (bounded, least recent forgotten)."""
        if where.device is not None:
            _remember(self.device_tenants, where.device, where.tenant)
        if event.schema == DEVICE_ALERT:
            _remember(self.alert_tenants, event.record["event_id"], where.tenant)

    def audience(self, tenant: str, channels: tuple[str, ...]) -> list[tuple[Client, str]]:
        """The clients an event of ``tenant`` on ``channels`` goes to, each with the channel that names it."""
        # keyed by the channels someone is subscribed to: a device channel nobody follows (most of
        # them) does not make each device's events a route of their own
        by_channel = self.by_channel
        followed = tuple(name for name in channels if name in by_channel)
        key = (tenant, followed)
        found = self._audiences.get(key)
        if found is None:
            found = []
            seen: set[Client] = set()
            for name in followed:
                for client in by_channel.get(name, ()):
                    if client not in seen:
                        seen.add(client)
                        named = delivery_channel(client.principal, client.subscriptions, tenant, followed)
                        if named is not None:
                            found.append((client, named))
            if len(self._audiences) >= REMEMBERED:
                self._audiences.clear()
            self._audiences[key] = found
        return found

    def _fan_out(self, event: FeedEvent, where: Route, touched: dict[Client, None]) -> None:
        items: dict[str, Item] = {}  # one message, and one frame, per channel
        for client, name in self.audience(where.tenant, where.channels):
            item = items.get(name)
            if item is None:
                item = items[name] = message_item(event, where, name)
            client.deliver(item)
            touched[client] = None


def message_item(event: FeedEvent, where: Route, channel: str) -> Item:
    if event.schema == ALERT_ACTION:
        payload = alert_status_message(channel, event.topic, event.partition, event.offset, event.record)
    else:
        payload = event_message(channel, event.topic, event.partition, event.offset, event.schema, event.record)
    return Item(where.lane, payload, channel_kind(channel), where.device if where.lane is Lane.POSITION else None,
                event.topic, event.partition, event.offset, event.timestamp_ms, text_frame(payload))


def _remember(memory: OrderedDict[str, str], key: str, tenant: str) -> None:
    memory[key] = tenant
    memory.move_to_end(key)
    if len(memory) > REMEMBERED:
        memory.popitem(last=False)
