"""resume: what a reconnecting client is replayed, and that replay + live has no gap and no duplicate."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from guardstream.gateway.queues import Item, Lane
from guardstream.gateway.resume import ReplayGate, plan_replay

A, B, C = ("events.high", 0), ("events.high", 1), ("events.low", 0)


@pytest.mark.parametrize(("resume", "live", "oldest", "ranges", "gaps"), [
    ({A: 41}, {A: 50}, {}, {A: (42, 50)}, {}),
    ({A: 49}, {A: 50}, {}, {}, {}),  # saw everything
    ({A: -1}, {A: 3}, {}, {A: (0, 3)}, {}),  # saw nothing: from the start
    ({A: 10, B: 5}, {A: 20, B: 5}, {}, {A: (11, 20)}, {}),
    ({C: 1}, {A: 9}, {}, {}, {}),  # a partition the hub does not read
    ({A: 10}, {A: 100}, {A: 40}, {A: (40, 100)}, {A: (11, 40)}),  # past retention: a gap, reported
    ({A: 10}, {A: 30}, {A: 40}, {}, {A: (11, 30)}),
    ({A: 60}, {A: 50}, {}, {}, {}),  # ahead of the hub (another instance): nothing to replay
])
def test_plan(resume, live, oldest, ranges, gaps) -> None:
    plan = plan_replay(resume, live, oldest)
    assert plan.ranges == ranges and plan.gaps == gaps


def item(tp, offset: int) -> Item:
    return Item(Lane.CRITICAL, f"{tp}:{offset}", "alerts", None, tp[0], tp[1], offset)


@given(st.dictionaries(st.sampled_from([A, B]), st.tuples(st.integers(-1, 30), st.integers(0, 30), st.integers(0, 5)),
                       min_size=1))
def test_replay_then_live_is_every_offset_once_in_order(partitions) -> None:
    """Per partition: the client saw up to ``last``; the hub is at ``live``; ``early`` live events were
    buffered although the replay covers them too (they must not come twice)."""
    resume = {tp: min(last, end - 1) for tp, (last, end, _) in partitions.items()}
    live = {tp: end for tp, (_, end, _) in partitions.items()}
    plan = plan_replay(resume, live, {})
    gate = ReplayGate.with_capacity(1000)
    # live events from the border on arrive while the replay runs; some overlap the replay's end
    for tp, (_, end, early) in partitions.items():
        for offset in range(max(resume[tp] + 1, end - early), end + 5):
            gate.hold(item(tp, offset))
    delivered: dict[tuple, list[int]] = {tp: [] for tp in partitions}
    for tp, (first, end) in plan.ranges.items():
        for offset in range(first, end):
            delivered[tp].append(offset)
            gate.note_replayed(tp, offset)
    for held in gate.release():
        delivered[(held.topic, held.partition)].append(held.offset)
    for tp, offsets in delivered.items():
        start = resume[tp] + 1
        assert offsets == list(range(start, live[tp] + 5))


def test_protocol_replies_held_by_the_gate_are_always_released() -> None:
    gate = ReplayGate.with_capacity(10)
    gate.hold(Item(Lane.CRITICAL, "reply"))
    gate.note_replayed(A, 99)
    assert [i.payload for i in gate.release()] == ["reply"]
