"""The database circuit breaker: its transition table, backoff, and properties over event sequences."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from guardstream.sinks.circuit import (GAUGE_VALUE, TRANSITIONS, Breaker, BreakerPolicy, Event, State,
                                       TransitionError, diagram, next_state)

POLICY = BreakerPolicy(failure_threshold=3, base_delay_s=0.1, max_delay_s=2.0)


@pytest.mark.parametrize("state, event, expected", [
    (State.CLOSED, Event.SUCCESS, State.CLOSED),
    (State.CLOSED, Event.FAILURE, State.CLOSED),
    (State.CLOSED, Event.TRIP, State.OPEN),
    (State.OPEN, Event.COOLED, State.HALF_OPEN),
    (State.OPEN, Event.FAILURE, State.OPEN),
    (State.OPEN, Event.SUCCESS, State.CLOSED),
    (State.HALF_OPEN, Event.SUCCESS, State.CLOSED),
    (State.HALF_OPEN, Event.FAILURE, State.OPEN),
])
def test_transition_table(state, event, expected):
    assert next_state(state, event) is expected


@pytest.mark.parametrize("state, event", [(State.CLOSED, Event.COOLED), (State.HALF_OPEN, Event.COOLED),
                                          (State.OPEN, Event.TRIP)])
def test_an_event_outside_the_table_is_a_bug(state, event):
    with pytest.raises(TransitionError):
        next_state(state, event)


def test_the_diagram_lists_every_transition():
    text = diagram()
    assert text.count("\n") == 1 + sum(len(events) for events in TRANSITIONS.values())
    assert "| open | cooled | half_open |" in text


@pytest.mark.parametrize("failures, delay", [(0, 0.0), (1, 0.1), (2, 0.2), (3, 0.4), (5, 1.6), (6, 2.0),
                                             (1000, 2.0)])
def test_backoff_doubles_up_to_its_cap(failures, delay):
    assert POLICY.delay(failures) == pytest.approx(delay)


def test_a_database_outage_opens_then_a_trial_closes_the_circuit():
    breaker, now = Breaker(), 0.0
    for expected in (State.CLOSED, State.CLOSED, State.OPEN):
        allowed, breaker = breaker.permit(now)
        assert allowed
        breaker = breaker.failed(POLICY, now)
        assert breaker.state is expected
        now = breaker.retry_at
    assert breaker.permit(now - 0.01)[0] is False  # open: no write before the backoff elapsed
    allowed, breaker = breaker.permit(now)
    assert allowed and breaker.state is State.HALF_OPEN
    assert breaker.permit(now)[0] is False  # one trial at a time
    breaker = breaker.failed(POLICY, now)
    assert breaker.state is State.OPEN and breaker.retry_at == pytest.approx(now + 0.8)
    allowed, breaker = breaker.permit(breaker.retry_at)
    breaker = breaker.succeeded()
    assert allowed and breaker == Breaker()
    assert GAUGE_VALUE[breaker.state] == 0


def test_failures_below_the_threshold_back_off_without_opening():
    breaker = Breaker().failed(POLICY, 10.0)
    assert breaker.state is State.CLOSED
    assert breaker.permit(10.05)[0] is False and breaker.permit(10.1)[0] is True
    assert breaker.succeeded().failures == 0


def test_a_late_result_from_the_other_consumer_is_accepted_while_open():
    opened = Breaker(State.OPEN, 3, 5.0)
    assert opened.failed(POLICY, 1.0).state is State.OPEN
    assert opened.succeeded().state is State.CLOSED


@given(st.lists(st.tuples(st.sampled_from(["ok", "fail"]), st.floats(0, 3)), max_size=40))
def test_any_sequence_of_outcomes_stays_in_the_table(steps):
    breaker, now = Breaker(), 0.0
    for outcome, delay in steps:
        now += delay
        allowed, breaker = breaker.permit(now)
        if not allowed:
            assert breaker.state is State.OPEN or breaker.trial_started or now < breaker.retry_at
            continue
        breaker = breaker.succeeded() if outcome == "ok" else breaker.failed(POLICY, now)
        assert breaker.retry_at <= now + POLICY.max_delay_s
        if outcome == "ok":
            assert breaker.state is State.CLOSED and breaker.failures == 0
        if breaker.state is State.OPEN:
            assert breaker.failures >= POLICY.failure_threshold
