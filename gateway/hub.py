"""The hub: live events in, each subscribed client's queue filled, one sender task per client.

Runs on the event loop only (the push consumer hands it batches through
``call_soon_threadsafe``), so its maps need no locks. Per event it renders one
message per matching channel and shares that text between all the clients
that get it. Which clients get it, and on which channel, is
``channels.delivery_channel``, the decision a resume replay makes too.
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
from guardstream.gateway.metrics import GatewayMetrics
from guardstream.gateway.protocol import CLOSE_CODES, alert_status_message, event_message
from guardstream.gateway.queues import ClientQueue, Item, Lane, Offer
from guardstream.gateway.resume import ReplayGate
from guardstream.records import ALERT_ACTION, DEVICE_ALERT

log = logging.getLogger("guardstream.gateway")
TP = tuple[str, int]
REMEMBERED = 100_000  # devices and alerts whose tenant the hub remembers, each


class Sender(Protocol):
    async def send(self, message: str) -> None: ...
    async def close(self, code: int = 1000, reason: str = "") -> None: ...


class Client:
    def __init__(self, ws: Sender, principal: Principal, queue_capacity: int, metrics: GatewayMetrics) -> None:
        self.ws, self.principal, self.metrics = ws, principal, metrics
        self.queue = ClientQueue(queue_capacity)
        self.subscriptions: set[str] = set()
        self.gate: ReplayGate | None = None
        self.closing: str | None = None
        self.send_lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    def deliver(self, item: Item) -> None:
        if self.closing is not None:
            return
        offer = self.gate.hold(item) if self.gate is not None else self.queue.offer(item)
        self._count(offer)
        if offer.overflow:
            self.close_soon("slow_consumer")
        self._wake.set()

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

    async def pump(self) -> None:
        """The sender task: writes queued messages until the connection ends."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while (item := self.queue.take()) is not None:
                async with self.send_lock:
                    await self.ws.send(item.payload)
                self._sent(item)

    def _sent(self, item: Item) -> None:
        if item.topic is not None:
            self.metrics.deliveries.record(item.kind, None if item.born_ms is None
                                           else max(0.0, time.time() - item.born_ms / 1000))


class Hub:
    def __init__(self, positions: Mapping[TP, int], metrics: GatewayMetrics) -> None:
        self.metrics = metrics
        self.positions: dict[TP, int] = dict(positions)  # next offset to dispatch, per partition
        self.clients: set[Client] = set()
        self.by_channel: dict[str, set[Client]] = {}
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
                self.metrics.subscriptions.labels(channel_kind(name)).dec()

    def queued(self) -> tuple[int, int]:
        """(messages queued in all clients, in the deepest one)."""
        depths = [len(c.queue) for c in list(self.clients)]
        return sum(depths), max(depths, default=0)

    # -- events ----------------------------------------------------------------------------

    def dispatch(self, events: list[FeedEvent]) -> None:
        for event in events:
            self.positions[event.tp] = max(self.positions.get(event.tp, 0), event.offset + 1)
            where = route(event.schema, event.record)
            if where is None:
                self.metrics.feed_refused.labels("no_channel").inc()
                continue
            self.learn(event, where)
            self._fan_out(event, where)

    def learn(self, event: FeedEvent, where: Route) -> None:
        """Remember which tenant a device and an alert belong to (bounded, least recent forgotten)."""
        if where.device is not None:
            _remember(self.device_tenants, where.device, where.tenant)
        if event.schema == DEVICE_ALERT:
            _remember(self.alert_tenants, event.record["event_id"], where.tenant)

    def _fan_out(self, event: FeedEvent, where: Route) -> None:
        tenant, channels = where.tenant, where.channels
        for name in channels:
            subscribers = self.by_channel.get(name)
            if not subscribers:
                continue
            item = None
            for client in subscribers:
                # a client of several of the channels is served at the one that names the event
                if delivery_channel(client.principal, client.subscriptions, tenant, channels) != name:
                    continue
                if item is None:
                    item = message_item(event, where, name)
                client.deliver(item)


def message_item(event: FeedEvent, where: Route, channel: str) -> Item:
    if event.schema == ALERT_ACTION:
        payload = alert_status_message(channel, event.topic, event.partition, event.offset, event.record)
    else:
        payload = event_message(channel, event.topic, event.partition, event.offset, event.schema, event.record)
    return Item(where.lane, payload, channel_kind(channel), where.device if where.lane is Lane.POSITION else None,
                event.topic, event.partition, event.offset, event.timestamp_ms)


def _remember(memory: OrderedDict[str, str], key: str, tenant: str) -> None:
    memory[key] = tenant
    memory.move_to_end(key)
    if len(memory) > REMEMBERED:
        memory.popitem(last=False)
