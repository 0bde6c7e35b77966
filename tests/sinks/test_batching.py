"""Flush decisions per lane and the bisection that finds bad rows: case tables and properties."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from guardstream.catalog import TOPICS, Priority
from guardstream.sinks.batching import (CONTROL_LANE, EMPTY, BatchPolicy, FlushReason, bulk_policies, capacity,
                                        critical_policies, flush_reason, isolate_failures, lane_of, poll_timeout,
                                        room)

CRITICAL = critical_policies(50, 0.020)
BULK = bulk_policies(5000, 0.5)
HIGH, LOW = Priority.HIGH.value, Priority.LOW.value


def test_lanes_follow_the_priority_topics():
    assert lane_of(TOPICS.events_critical.name) == "critical"
    assert lane_of(TOPICS.events_low.name) == "low"
    for topic in (TOPICS.geofences, TOPICS.alerts_actions, TOPICS.dlq_sink, TOPICS.dlq_validate):
        assert lane_of(topic.name) == CONTROL_LANE
    assert set(BULK) == {"high", "normal", "low", CONTROL_LANE} and set(CRITICAL) == {"critical"}


@pytest.mark.parametrize("policies, adds, now, expected", [
    (CRITICAL, [], 10.0, None),
    (CRITICAL, [("critical", 49, 10.0)], 10.019, None),
    (CRITICAL, [("critical", 50, 10.0)], 10.0, FlushReason.FULL),
    (CRITICAL, [("critical", 1, 10.0)], 10.021, FlushReason.AGED),
    (BULK, [(LOW, 4999, 10.0)], 10.4, None),
    (BULK, [(LOW, 5000, 10.0)], 10.0, FlushReason.FULL),
    (BULK, [(LOW, 3000, 10.0), (HIGH, 2000, 10.1)], 10.2, FlushReason.FULL),  # the batch as a whole is full
    (BULK, [(LOW, 10, 10.0), (LOW, 10, 10.4)], 10.5, FlushReason.AGED),  # a lane ages from its first row
    (BULK, [(LOW, 10, 10.0), (HIGH, 1, 10.45)], 10.46, None),
])
def test_flush_reason(policies, adds, now, expected):
    clock = EMPTY
    for lane, count, at in adds:
        clock = clock.added(lane, count, at)
    assert flush_reason(clock, policies, now) == expected


def test_each_lane_keeps_its_own_age_and_limit():
    policies = {HIGH: BatchPolicy(100, 0.05), LOW: BatchPolicy(5000, 1.0)}
    clock = EMPTY.added(LOW, 4000, 0.0).added(HIGH, 1, 0.5)
    assert flush_reason(clock, policies, 0.54) is None
    assert flush_reason(clock, policies, 0.55) == FlushReason.AGED
    assert flush_reason(EMPTY.added(HIGH, 100, 0.0), policies, 0.0) == FlushReason.FULL


def test_poll_waits_until_the_first_lane_ages_out():
    assert poll_timeout(EMPTY, BULK, 5.0, idle_s=0.5) == 0.5
    clock = EMPTY.added(LOW, 1, 5.0).added(HIGH, 1, 5.3)
    assert poll_timeout(clock, BULK, 5.1, idle_s=2.0) == pytest.approx(0.4)
    assert poll_timeout(clock, BULK, 9.0, idle_s=2.0) == 0.0


def test_room_bounds_the_next_poll_by_capacity():
    assert capacity(BULK) == 5000
    assert room(EMPTY.added(LOW, 4990, 0.0), BULK) == 10
    assert room(EMPTY.added(LOW, 6000, 0.0), BULK) == 1  # never zero: a paused poll may still deliver


def test_a_policy_needs_positive_limits():
    with pytest.raises(ValueError):
        BatchPolicy(0, 1.0)
    with pytest.raises(ValueError):
        BatchPolicy(10, 0.0)
    with pytest.raises(KeyError):
        flush_reason(EMPTY.added("nope", 1, 0.0), BULK, 0.0)


@given(st.lists(st.tuples(st.sampled_from([HIGH, LOW, CONTROL_LANE]), st.integers(0, 3000),
                          st.floats(0, 0.3)), max_size=12))
def test_a_batch_never_outgrows_capacity_when_polls_take_at_most_room(adds):
    clock, now = EMPTY, 0.0
    for lane, count, delay in adds:
        now += delay
        if flush_reason(clock, BULK, now) is not None:
            clock = EMPTY
        clock = clock.added(lane, min(count, room(clock, BULK)), now)
        assert clock.rows <= capacity(BULK)
        assert poll_timeout(clock, BULK, now, 1.0) >= 0


# -- isolate_failures ------------------------------------------------------------------------

def _run(n: int, bad: set[int]):
    attempts: list[list[int]] = []
    written: list[int] = []

    def attempt(chunk):
        attempts.append(list(chunk))
        failing = [i for i in chunk if i in bad]
        if failing:
            return f"bad {failing[0]}"
        written.extend(chunk)
        return None
    return isolate_failures(list(range(n)), attempt), attempts, written


def test_a_clean_batch_is_written_in_one_attempt():
    failures, attempts, written = _run(5000, set())
    assert failures == [] and len(attempts) == 1 and written == list(range(5000))


def test_one_bad_row_in_five_thousand_costs_a_few_attempts():
    failures, attempts, written = _run(5000, {1234})
    assert failures == [(1234, "bad 1234")]
    assert written == [i for i in range(5000) if i != 1234]
    assert len(attempts) <= 1 + 2 * math.ceil(math.log2(5000))


@given(st.integers(1, 300).flatmap(lambda n: st.tuples(st.just(n), st.sets(st.integers(0, n - 1), max_size=8))))
def test_isolate_finds_exactly_the_bad_rows_and_writes_the_rest_once_in_order(case):
    n, bad = case
    failures, attempts, written = _run(n, bad)
    assert [item for item, _ in failures] == sorted(bad)
    assert written == [i for i in range(n) if i not in bad]
    assert len(attempts) <= 1 + 2 * max(1, len(bad)) * math.ceil(math.log2(n) + 1)


def test_an_empty_batch_needs_no_attempt():
    assert isolate_failures([], lambda chunk: pytest.fail("no attempt expected")) == []
