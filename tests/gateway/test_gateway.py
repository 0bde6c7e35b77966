"""``guardstream gateway`` as a real process against tansu: refusals, conflation, resume, acknowledge, HTTP."""

from __future__ import annotations

import asyncio
import json
import socket
import urllib.error
import urllib.request

import pytest
from gateway_support import (ALLOWED_ORIGIN, CODEC, alert, close_of, next_message, position, produce, subscribe,
                             token, until, ws)
from support.processes import collect

from guardstream.catalog import TOPICS
from guardstream.infra.stack import wait_until

pytestmark = pytest.mark.slow
HIGH, CRITICAL, ACTIONS = TOPICS.events_high.name, TOPICS.events_critical.name, TOPICS.alerts_actions.name


# -- refusals -------------------------------------------------------------------------------

async def refused_with(gateway, bearer, headers=None, subscribe_to=None):
    async with ws(gateway, bearer, additional_headers=headers or {}) as conn:
        if subscribe_to is not None:
            assert (await next_message(conn))["type"] == "hello"
            await conn.send(json.dumps({"op": "subscribe", "channels": subscribe_to}))
        return await close_of(conn)


@pytest.mark.parametrize(("case", "bearer", "headers", "channels", "code", "reason"), [
    ("no token", None, None, None, 4401, "missing_token"),
    ("expired", token(ttl_s=-3600), None, None, 4408, "token_expired"),
    ("bad signature", token(secret="not-the-gateway-secret-0123456789abcdef"), None, None, 4401, "bad_signature"),
    ("wrong audience", token(audience="billing"), None, None, 4401, "wrong_audience"),
    ("wrong origin", token(), {"Origin": "https://evil.example"}, None, 4403, "forbidden_origin"),
    ("cross-tenant subscribe", token(tenants=["acme"]), None, ["tenant:globex:alerts"], 4403, "forbidden_channel"),
    ("noc channel without role noc", token(roles=["operator"]), None, ["noc:alerts"], 4403, "forbidden_channel"),
])
def test_each_refusal_closes_with_its_code(gateway, case, bearer, headers, channels, code, reason) -> None:
    before = gateway.metric("guardstream_gateway_refusals_total", reason=reason)
    assert asyncio.run(refused_with(gateway, bearer, headers, channels)) == (code, reason)
    wait_until(lambda: gateway.metric("guardstream_gateway_refusals_total", reason=reason) > before, 5,
               f"refusal {reason} counted")


async def hello_via(gateway, **kwargs) -> dict:
    async with ws(gateway, **kwargs) as conn:
        return await next_message(conn)


def test_a_token_in_header_subprotocol_or_query_and_an_allowed_origin_are_admitted(gateway) -> None:
    good = token(sub="carol", tenants=["acme", "globex"])
    assert asyncio.run(hello_via(gateway, bearer=good))["sub"] == "carol"
    via_protocol = asyncio.run(hello_via(gateway, subprotocols=["guardstream.v1", f"bearer.{good}"]))
    assert via_protocol["tenants"] == ["acme", "globex"]

    async def via_query():
        from websockets.asyncio.client import connect
        async with connect(f"{gateway.ws_url}?token={good}", origin=ALLOWED_ORIGIN) as conn:
            assert conn.subprotocol is None
            return await next_message(conn)
    assert asyncio.run(via_query())["type"] == "hello"
    own = f"http://127.0.0.1:{gateway.port}"
    assert asyncio.run(hello_via(gateway, bearer=good, additional_headers={"Origin": own}))["type"] == "hello"


def test_flooding_and_oversize_messages_are_refused(gateway) -> None:
    async def flood():
        async with ws(gateway, token()) as conn:
            for _ in range(101):  # the default limit is 100 a minute
                await conn.send('{"op": "ping"}')
            return await close_of(conn)

    async def oversize():
        async with ws(gateway, token(), max_size=None) as conn:
            await conn.send(json.dumps({"op": "ping", "pad": "x" * 70_000}))
            return await close_of(conn)
    assert asyncio.run(flood()) == (4429, "rate_limited")
    assert asyncio.run(oversize())[0] == 1009


def test_bad_messages_get_an_error_and_the_connection_stays(gateway) -> None:
    async def talk():
        async with ws(gateway, token()) as conn:
            await next_message(conn)
            await conn.send("{nope")
            error = await next_message(conn)
            await conn.send('{"op": "ping"}')
            return error, await next_message(conn)
    error, pong = asyncio.run(talk())
    assert (error["type"], error["code"], error["reason"]) == ("error", 4400, "bad_json")
    assert pong == {"type": "pong"}


# -- a slow client ----------------------------------------------------------------------------

def test_a_client_that_does_not_read_gets_the_newest_position_and_older_ones_conflate(gateway, applied, unique):
    tenant, count = f"slow{unique}", 3000
    records = [position(tenant, "g-1", n) for n in range(count)]

    async def scenario():
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window: the gateway backs up soon
        sock.connect(("127.0.0.1", gateway.port))
        # max_queue=1: the client library stops reading the socket while we do not read
        async with ws(gateway, token(tenants=[tenant]), sock=sock, max_queue=1) as conn:
            await subscribe(conn, [f"tenant:{tenant}:positions"])
            conflated = gateway.metric("guardstream_gateway_messages_conflated_total", kind="positions")
            fed = gateway.metric("guardstream_gateway_feed_records_total", topic=HIGH)
            await asyncio.to_thread(produce, applied, HIGH, "guardstream.GuardPosition", records)
            await asyncio.to_thread(wait_until, lambda: gateway.metric(
                "guardstream_gateway_feed_records_total", topic=HIGH) >= fed + count, 30, "gateway read them all")
            moved = gateway.metric("guardstream_gateway_messages_conflated_total", kind="positions") - conflated
            got = await until(conn, lambda m: m.get("data", {}).get("event_id") == records[-1]["event_id"], 60)
            return moved, got

    moved, got = asyncio.run(scenario())
    ids = [m["data"]["event_id"] for m in got]
    assert moved > 0
    assert ids[-1] == records[-1]["event_id"] and len(ids) < len(records)
    offsets = [m["offset"] for m in got]
    assert offsets == sorted(offsets)


# -- resume --------------------------------------------------------------------------------------

def test_resume_after_a_dropped_connection_has_no_gap_and_no_duplicate(gateway, applied, unique) -> None:
    tenant = f"res{unique}"
    channel = f"tenant:{tenant}:positions"
    first = [position(tenant, f"d-{n}", n) for n in range(12)]  # one device each: nothing conflates
    second = [position(tenant, f"d-{n}", n) for n in range(12, 24)]
    third = [position(tenant, f"d-{n}", n) for n in range(24, 30)]

    async def scenario():
        seen: dict[str, int] = {}
        async with ws(gateway, token(tenants=[tenant])) as conn:
            subscribed = await subscribe(conn, [channel])
            seen.update(subscribed["positions"])
            await asyncio.to_thread(produce, applied, HIGH, "guardstream.GuardPosition", first)
            read = [await next_message(conn) for _ in range(5)]  # reads some, then the connection drops
        for message in read:
            key = f"{message['topic']}:{message['partition']}"
            seen[key] = max(seen[key], message["offset"])
        fed = gateway.metric("guardstream_gateway_feed_records_total", topic=HIGH)
        await asyncio.to_thread(produce, applied, HIGH, "guardstream.GuardPosition", second)
        await asyncio.to_thread(wait_until, lambda: gateway.metric(
            "guardstream_gateway_feed_records_total", topic=HIGH) >= fed + len(second), 30, "gateway read them")
        async with ws(gateway, token(tenants=[tenant])) as conn:
            await subscribe(conn, [channel], resume=seen)
            replayed = await until(conn, lambda m: m["type"] == "live")
            await asyncio.to_thread(produce, applied, HIGH, "guardstream.GuardPosition", third)
            live = [await next_message(conn) for _ in third]
        return read, replayed, live

    read, replayed, live = asyncio.run(scenario())
    events = [m for m in replayed if m["type"] == "event"]
    assert replayed[-1] == {"type": "live", "replayed": len(events), "gaps": {}}
    got = [m["data"]["event_id"] for m in events]
    expected = [r["event_id"] for r in first + second if r["event_id"] not in {m["data"]["event_id"] for m in read}]
    assert sorted(got) == sorted(expected) and len(got) == len(set(got))
    for partition in {m["partition"] for m in events}:
        offsets = [m["offset"] for m in events if m["partition"] == partition]
        assert offsets == sorted(offsets)
    assert sorted(m["data"]["event_id"] for m in live) == sorted(r["event_id"] for r in third)
    assert gateway.metric("guardstream_gateway_messages_replayed_total") >= len(events)
    assert gateway.metric("guardstream_gateway_messages_delivered_total", kind="positions") >= len(live)
    assert gateway.metric("guardstream_gateway_delivery_latency_seconds_count") >= len(live)


# -- acknowledge -----------------------------------------------------------------------------------

def test_an_operator_acknowledges_and_every_dashboard_sees_the_new_status(gateway, applied, unique) -> None:
    tenant = f"ack{unique}"
    raised = alert(tenant, "g-7")

    async def scenario():
        async with ws(gateway, token(sub="op-1", tenants=[tenant], roles=["operator"])) as operator, \
                ws(gateway, token(sub="viewer", tenants=[tenant], roles=[])) as viewer, \
                ws(gateway, token(sub="other", tenants=["elsewhere"], roles=["operator"])) as other:
            for conn in (operator, viewer):
                await subscribe(conn, [f"tenant:{tenant}:alerts"])
            await subscribe(other, ["tenant:elsewhere:alerts"])
            await asyncio.to_thread(produce, applied, CRITICAL, "guardstream.DeviceAlert", [raised])
            seen = await until(viewer, lambda m: m["type"] == "event")
            await until(operator, lambda m: m["type"] == "event")
            refusals = []
            for conn, alert_id in ((viewer, raised["event_id"]), (other, raised["event_id"]), (operator, "nope")):
                await conn.send(json.dumps({"op": "ack", "alert_event_id": alert_id, "action": "ACKNOWLEDGE"}))
                refusals.append(await until(conn, lambda m: m["type"] == "error"))
            await operator.send(json.dumps({"op": "ack", "alert_event_id": raised["event_id"],
                                            "action": "ACKNOWLEDGE", "note": "on my way"}))
            acked = await until(operator, lambda m: m["type"] == "acked")
            status = await until(viewer, lambda m: m["type"] == "alert_status")
            return seen[-1], [r[-1]["reason"] for r in refusals], acked[-1], status[-1]

    event, refusals, acked, status = asyncio.run(scenario())
    assert event["data"]["event_id"] == raised["event_id"] and event["channel"] == f"tenant:{tenant}:alerts"
    assert refusals == ["forbidden_action", "forbidden_action", "unknown_alert"]
    assert (status["alert_event_id"], status["status"], status["actor"]) == (raised["event_id"], "ACKNOWLEDGED", "op-1")
    records = collect(applied, ACTIONS, lambda r: r.key() == raised["event_id"].encode(), 1, 30)
    schema, action = CODEC.decode(records[0].value())
    assert schema == "guardstream.AlertAction"
    assert action == {"action_id": acked["action_id"], "tenant": tenant, "alert_event_id": raised["event_id"],
                      "action": "ACKNOWLEDGE", "actor": "op-1", "ts_ms": action["ts_ms"], "note": "on my way"}


# -- HTTP on the same port ------------------------------------------------------------------------

def get(url: str) -> tuple[int, dict, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as reply:
            return reply.status, dict(reply.headers), reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_the_page_its_files_health_and_the_fences_of_the_token_s_tenants(gateway, applied, unique) -> None:
    from guardstream.streams.fence_admin import GEOFENCE
    mine, theirs = f"fa{unique}", f"fb{unique}"
    fences = [{"fence_id": f"{t}-site", "tenant": t, "name": "HQ", "kind": "SITE", "radius_m": None,
               "geometry": json.dumps({"type": "Polygon", "coordinates": [[[13.4, 52.5], [13.41, 52.5],
                                                                         [13.41, 52.51], [13.4, 52.5]]]}),
               "updated_ms": 1} for t in (mine, theirs)]
    from confluent_kafka import Producer

    from guardstream.kafka import producer_config
    producer = Producer(producer_config(applied, "gateway-tests"))
    for fence in fences:
        producer.produce(TOPICS.geofences.name, CODEC.encode(GEOFENCE, fence), fence["fence_id"].encode())
    assert producer.flush(30) == 0

    status, headers, body = get(gateway.http_url + "/")
    assert status == 200 and b"/static/app.js" in body and "default-src 'none'" in headers["Content-Security-Policy"]
    assert get(gateway.http_url + "/static/app.js")[0] == 200
    assert get(gateway.http_url + "/static/../server.py")[0] == 404
    assert get(gateway.http_url + "/healthz")[:1] == (200,) and get(gateway.http_url + "/readyz")[0] == 200
    assert get(gateway.http_url + "/api/fences")[0] == 401

    def listed() -> list[str]:
        status, _, body = get(f"{gateway.http_url}/api/fences?token={token(tenants=[mine])}")
        assert status == 200
        return [f["fence_id"] for f in json.loads(body)["fences"]]
    wait_until(lambda: f"{mine}-site" in listed(), 30, "the new fence listed")
    assert f"{theirs}-site" not in listed()
