"""Two gateway processes with the same settings on two ports, as behind a load balancer: a client
on gateway A, A killed -9, the client resumes on gateway B with its last offsets."""

from __future__ import annotations

import asyncio

import pytest
from gateway_support import next_message, position, produce, start_gateway, subscribe, token, until, ws

from guardstream.catalog import TOPICS
from guardstream.infra.stack import wait_until

pytestmark = pytest.mark.slow
HIGH = TOPICS.events_high.name


def test_a_client_resumes_on_another_gateway_after_its_gateway_is_killed(applied, tmp_path, unique) -> None:
    tenant = f"fo{unique}"
    channel = f"tenant:{tenant}:positions"
    a = start_gateway(applied, tmp_path / "gateway-a.log")
    b = start_gateway(applied, tmp_path / "gateway-b.log")
    first = [position(tenant, f"d-{n}", n) for n in range(40)]  # one device each: nothing conflates
    during = [position(tenant, f"d-{n}", n) for n in range(40, 80)]  # while the client has no gateway
    after = [position(tenant, f"d-{n}", n) for n in range(80, 100)]
    fed = lambda g: g.metric("guardstream_gateway_feed_records_total", topic=HIGH)  # noqa: E731

    async def scenario():
        seen: dict[str, int] = {}
        read: list[dict] = []
        async with ws(a, token(tenants=[tenant])) as conn:
            seen.update((await subscribe(conn, [channel]))["positions"])
            await asyncio.to_thread(produce, applied, HIGH, "guardstream.GuardPosition", first)
            read = [await next_message(conn) for _ in range(25)]  # some of them, then A dies
            for message in read:
                key = f"{message['topic']}:{message['partition']}"
                seen[key] = max(seen[key], message["offset"])
            await asyncio.to_thread(a.component.kill)
        b_fed = fed(b)
        await asyncio.to_thread(produce, applied, HIGH, "guardstream.GuardPosition", during)
        await asyncio.to_thread(wait_until, lambda: fed(b) >= b_fed + len(during), 30, "gateway B read them")
        async with ws(b, token(tenants=[tenant])) as conn:
            await subscribe(conn, [channel], resume=seen)
            replayed = await until(conn, lambda m: m["type"] == "live")
            await asyncio.to_thread(produce, applied, HIGH, "guardstream.GuardPosition", after)
            live = [await next_message(conn) for _ in after]
        return read, replayed, live

    try:
        read, replayed, live = asyncio.run(scenario())
    finally:
        a.stop()
        b.stop()
    events = [m for m in replayed if m["type"] == "event"]
    got = [m["data"]["event_id"] for m in read] + [m["data"]["event_id"] for m in events] + [
        m["data"]["event_id"] for m in live]
    wanted = [r["event_id"] for r in first + during + after]
    print(f"\nread on gateway A before the kill: {len(read)}; replayed by B: {len(events)}; live on B: {len(live)}; "
          f"distinct {len(set(got))} of {len(wanted)}; duplicates {len(got) - len(set(got))}")
    assert replayed[-1] == {"type": "live", "replayed": len(events), "gaps": {}}
    assert sorted(got) == sorted(wanted)  # no gap, no duplicate
    for partition in {m["partition"] for m in events}:
        offsets = [m["offset"] for m in events if m["partition"] == partition]
        assert offsets == sorted(offsets)
