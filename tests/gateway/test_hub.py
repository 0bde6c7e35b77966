"""hub: fan-out to subscribed clients' queues; never another tenant's event, each event once."""

from __future__ import annotations

import asyncio
import json

from hypothesis import given
from hypothesis import strategies as st

from guardstream.gateway.auth import Principal
from guardstream.gateway.channels import authorise, parse_channel
from guardstream.gateway.feed import FeedEvent
from guardstream.gateway.hub import Client, Hub
from guardstream.gateway.metrics import GatewayMetrics

TENANTS = ["acme", "globex"]
DEVICES = ["g-1", "g-2", "s-1"]
SCHEMAS = ["guardstream.DeviceAlert", "guardstream.GuardPosition", "guardstream.SensorReading",
           "guardstream.Telemetry"]
METRICS = GatewayMetrics.create()


class Nowhere:
    async def send(self, message: str) -> None:
        raise AssertionError("the test reads queues, nothing is sent")

    async def close(self, code: int = 1000, reason: str = "") -> None:
        pass


def event(offset: int, schema: str, tenant: str, device: str) -> FeedEvent:
    return FeedEvent("events.high", 0, offset, 1, schema, {"event_id": f"e{offset}", "tenant": tenant,
                                                           "device_id": device})


def received(client: Client) -> list[dict]:
    return [json.loads(item.payload) for item in client.queue.drain()]


principals = st.builds(lambda tenants, roles: Principal("u", frozenset(tenants), frozenset(roles), 0.0),
                       st.frozensets(st.sampled_from(TENANTS)), st.frozensets(st.sampled_from(["noc", "operator"])))
channel_names = st.sampled_from([f"tenant:{t}:{k}" for t in TENANTS for k in ("alerts", "positions", "sensors",
                                                                               "telemetry")]
                                + [f"device:{d}" for d in DEVICES] + ["noc:alerts"])
events = st.lists(st.tuples(st.sampled_from(SCHEMAS), st.sampled_from(TENANTS), st.sampled_from(DEVICES)),
                  max_size=40)


@given(st.lists(st.tuples(principals, st.lists(channel_names, max_size=6)), min_size=1, max_size=5), events)
def test_a_client_gets_only_its_tenants_events_once_each(clients_spec, script) -> None:
    hub = Hub({}, METRICS)
    clients = []
    for principal, names in clients_spec:
        client = Client(Nowhere(), principal, 10_000, METRICS)
        hub.add(client)
        allowed = [n for n in names if authorise(principal, parse_channel(n), None) is None]
        hub.subscribe(client, allowed)
        clients.append(client)
    hub.dispatch([event(n, *spec) for n, spec in enumerate(script)])
    for client in clients:
        got = received(client)
        offsets = [m["offset"] for m in got]
        assert len(offsets) == len(set(offsets))  # once, even when several channels match
        for message in got:
            assert client.principal.sees(message["data"]["tenant"])
            assert message["channel"] in client.subscriptions


def test_the_first_matching_channel_names_the_event_and_positions_conflate() -> None:
    hub = Hub({}, METRICS)
    client = Client(Nowhere(), Principal("u", frozenset({"acme"}), frozenset(), 0.0), 100, METRICS)
    hub.add(client)
    hub.subscribe(client, ["device:g-1", "tenant:acme:positions"])
    hub.dispatch([event(1, "guardstream.GuardPosition", "acme", "g-1"),
                  event(2, "guardstream.GuardPosition", "acme", "g-1"),
                  event(3, "guardstream.GuardPosition", "acme", "g-2")])
    assert [(m["channel"], m["offset"]) for m in received(client)] == [
        ("tenant:acme:positions", 2), ("tenant:acme:positions", 3)]
    assert hub.positions == {("events.high", 0): 4}
    assert hub.device_tenants == {"g-1": "acme", "g-2": "acme"}


def test_a_removed_client_leaves_no_subscription_behind() -> None:
    hub = Hub({}, METRICS)
    client = Client(Nowhere(), Principal("u", frozenset({"acme"}), frozenset(), 0.0), 100, METRICS)
    hub.add(client)
    hub.subscribe(client, ["tenant:acme:alerts", "device:g-1"])
    hub.remove(client)
    assert hub.by_channel == {} and hub.clients == set()


def test_a_queue_full_of_alerts_closes_the_client_with_1013_and_delivers_nothing_more() -> None:
    class Recorder(Nowhere):
        closed: tuple[int, str] | None = None

        async def close(self, code: int = 1000, reason: str = "") -> None:
            self.closed = (code, reason)

    async def scenario() -> tuple[Recorder, Client]:
        sender = Recorder()
        hub = Hub({}, METRICS)
        client = Client(sender, Principal("u", frozenset({"acme"}), frozenset(), 0.0), 2, METRICS)
        hub.add(client)
        hub.subscribe(client, ["tenant:acme:alerts"])
        hub.dispatch([event(n, "guardstream.DeviceAlert", "acme", "g-1") for n in range(4)])
        await asyncio.sleep(0)  # one turn of the loop: the close task it scheduled runs
        return sender, client

    sender, client = asyncio.run(scenario())
    assert sender.closed == (1013, "slow_consumer") and client.closing == "slow_consumer"
    assert len(client.queue) == 0


class Connection:
    """A FrameSink that takes ``room`` bytes until drained, and keeps what it was given."""

    def __init__(self, room: int) -> None:
        self.taking, self.written, self.writes = room, [], 0
        self.drain = asyncio.Event()

    @property
    def open(self) -> bool:
        return True

    def room(self) -> int:
        return self.taking

    def write(self, frames: list[bytes]) -> None:
        self.writes += 1
        for frame in frames:
            self.taking -= len(frame)
            self.written.append(json.loads(frame[2:] if frame[1] < 126 else frame[4:]))

    async def drained(self) -> None:
        await self.drain.wait()
        self.taking = 10**9


def test_a_batch_goes_out_in_one_write_and_what_the_connection_does_not_take_is_queued() -> None:
    async def scenario() -> tuple[Connection, Connection, int]:
        hub = Hub({}, METRICS)
        fast, slow = Connection(10**9), Connection(1)
        principal = Principal("u", frozenset({"acme"}), frozenset(), 0.0)
        clients = [Client(Nowhere(), principal, 100, METRICS, fast), Client(Nowhere(), principal, 100, METRICS, slow)]
        for client in clients:
            hub.add(client)
            hub.subscribe(client, ["tenant:acme:positions", "tenant:acme:alerts"])
        hub.dispatch([event(1, "guardstream.GuardPosition", "acme", "g-1"),
                      event(2, "guardstream.DeviceAlert", "acme", "g-1"),
                      event(3, "guardstream.GuardPosition", "acme", "g-2"),
                      event(4, "guardstream.GuardPosition", "acme", "g-1")])
        hub.dispatch([event(5, "guardstream.GuardPosition", "acme", "g-2")])
        queued = len(clients[1].queue)
        pump = asyncio.create_task(clients[1].pump())
        slow.drain.set()

        async def emptied() -> None:
            while len(clients[1].queue):
                await asyncio.sleep(0)  # the sender task's turn

        await asyncio.wait_for(emptied(), 5)
        pump.cancel()
        return fast, slow, queued

    fast, slow, queued = asyncio.run(scenario())
    assert [m["offset"] for m in fast.written] == [1, 2, 3, 4, 5] and fast.writes == 2
    # one frame fits the slow connection; the rest waits where positions conflate (3 by 5) and the
    # alert keeps its place
    assert queued == 3
    assert [m["offset"] for m in slow.written] == [1, 2, 4, 5]
