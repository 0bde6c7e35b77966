"""queues: a client's bounded queue keeps alerts, conflates positions, drops the rest oldest first."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from guardstream.gateway.queues import ClientQueue, Item, Lane


def crit(n: int) -> Item:
    return Item(Lane.CRITICAL, f"c{n}", "alerts")


def pos(n: int, device: str) -> Item:
    return Item(Lane.POSITION, f"p{n}", "positions", key=device)


def other(n: int) -> Item:
    return Item(Lane.OTHER, f"o{n}", "sensors")


def payloads(queue: ClientQueue) -> list[str]:
    return [item.payload for item in queue.drain()]


def test_a_newer_position_replaces_the_queued_one_of_its_device_and_goes_last() -> None:
    queue = ClientQueue(10)
    for item in (pos(1, "a"), other(2), pos(3, "b")):
        queue.offer(item)
    offer = queue.offer(pos(4, "a"))
    assert offer.conflated == pos(1, "a") and not offer.dropped and not offer.overflow
    assert payloads(queue) == ["o2", "p3", "p4"]


@pytest.mark.parametrize(("queued", "offered", "expected", "dropped", "overflow"), [
    # full of others: the oldest other makes room for anything
    ([other(1), other(2)], crit(3), ["o2", "c3"], "o1", False),
    ([other(1), other(2)], pos(3, "a"), ["o2", "p3"], "o1", False),
    # positions without a match are dropped oldest first too
    ([pos(1, "a"), crit(2)], other(3), ["c2", "o3"], "p1", False),
    ([crit(1), pos(2, "a")], crit(3), ["c1", "c3"], "p2", False),
    # full of critical: a non-critical offer is dropped, a critical one overflows
    ([crit(1), crit(2)], other(3), ["c1", "c2"], "o3", False),
    ([crit(1), crit(2)], pos(3, "a"), ["c1", "c2"], "p3", False),
    ([crit(1), crit(2)], crit(3), ["c1", "c2"], None, True),
    # a position of a queued device conflates even when the queue is full
    ([crit(1), pos(2, "a")], pos(3, "a"), ["c1", "p3"], None, False),
])
def test_a_full_queue(queued, offered, expected, dropped, overflow) -> None:
    queue = ClientQueue(2)
    for item in queued:
        assert queue.offer(item).dropped is None
    offer = queue.offer(offered)
    assert offer.overflow is overflow
    assert (offer.dropped.payload if offer.dropped else None) == dropped
    assert payloads(queue) == expected


def test_take_many_and_len() -> None:
    queue = ClientQueue(5)
    for n in range(4):
        queue.offer(other(n))
    assert [i.payload for i in queue.take_many(3)] == ["o0", "o1", "o2"] and len(queue) == 1
    assert queue.take().payload == "o3" and queue.take() is None


items = st.one_of(
    st.builds(lambda n: crit(n), st.integers(0, 10_000)),
    st.builds(lambda n, d: pos(n, d), st.integers(0, 10_000), st.sampled_from("abcd")),
    st.builds(lambda n: other(n), st.integers(0, 10_000)),
)
steps = st.lists(st.one_of(st.tuples(st.just("offer"), items), st.tuples(st.just("take"), st.none())), max_size=200)


@given(st.integers(1, 8), steps)
def test_invariants(capacity: int, script) -> None:
    queue = ClientQueue(capacity)
    arrival: list[int] = []  # id() of every offered item, in order
    taken: list[Item] = []
    lost_critical: list[Item] = []
    counted = {"queued": 0, "out": 0}
    for action, item in script:
        if action == "take":
            got = queue.take()
            if got is not None:
                taken.append(got)
            continue
        item = Item(item.lane, f"{item.payload}#{len(arrival)}", item.kind, item.key)
        arrival.append(item.payload)
        offer = queue.offer(item)
        for gone in (offer.conflated, offer.dropped):
            if gone is not None:
                counted["out"] += 1
                assert gone.lane is not Lane.CRITICAL  # a critical message is never dropped
                if offer.conflated is not None:
                    assert gone.key == item.key
        if offer.overflow:
            lost_critical.append(item)
            assert item.lane is Lane.CRITICAL and len(queue) == capacity
            assert all(i.lane is Lane.CRITICAL for i in queue._items.values())
        else:
            counted["queued"] += 1
        assert len(queue) <= capacity
        devices = [i.key for i in queue._items.values() if i.lane is Lane.POSITION]
        assert len(devices) == len(set(devices))  # one position per device at most
    rest = queue.drain()
    # every accepted item is taken, still queued, or reported as conflated/dropped, exactly once
    assert counted["queued"] - counted["out"] == len(taken) + len(rest)
    # what comes out keeps the order of arrival
    order = {payload: n for n, payload in enumerate(arrival)}
    out = [order[i.payload] for i in taken + rest]
    assert out == sorted(out)
