"""The database circuit breaker: a pure state machine over plain data.

    CLOSED ──TRIP (failure_threshold consecutive failures)──▶ OPEN
      ▲ │                                                     │
      │ └─FAILURE (below the threshold: retry after backoff)  │ COOLED (backoff elapsed)
      │                                                       ▼
      └──────────────SUCCESS──────────────────────────── HALF_OPEN ──FAILURE──▶ OPEN

Two consumers share the breaker, so a write begun while CLOSED may report back
while OPEN: its FAILURE keeps the circuit OPEN, its SUCCESS closes it.

Every failed write schedules the next attempt after an exponential backoff
(``base_delay_s * 2**(failures-1)``, capped at ``max_delay_s``). While OPEN no
write is attempted and the sink pauses its consumers, so nothing piles up in
memory; HALF_OPEN lets exactly one trial write through, and its outcome closes
or re-opens the circuit. Nothing is ever skipped: a batch waits, it is not
dropped. :data:`TRANSITIONS` is the whole behaviour; a pair missing from it is a
bug in the caller.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum
from types import MappingProxyType


class State(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class Event(StrEnum):
    SUCCESS = "success"
    FAILURE = "failure"  # a failed write below the threshold (or the half-open trial failed)
    TRIP = "trip"  # the failure that reaches the threshold
    COOLED = "cooled"  # the open period is over


TRANSITIONS = MappingProxyType({
    State.CLOSED: MappingProxyType({Event.SUCCESS: State.CLOSED, Event.FAILURE: State.CLOSED,
                                    Event.TRIP: State.OPEN}),
    # A write that started before the circuit opened may still report back (the
    # other consumer's): a late success proves the database answers again.
    State.OPEN: MappingProxyType({Event.COOLED: State.HALF_OPEN, Event.SUCCESS: State.CLOSED,
                                  Event.FAILURE: State.OPEN}),
    State.HALF_OPEN: MappingProxyType({Event.SUCCESS: State.CLOSED, Event.FAILURE: State.OPEN,
                                       Event.TRIP: State.OPEN}),
})

# the value of the guardstream_sink_circuit_state gauge
GAUGE_VALUE = MappingProxyType({State.CLOSED: 0, State.HALF_OPEN: 1, State.OPEN: 2})


class TransitionError(Exception):
    """An event the state does not accept: the caller broke the protocol (a bug)."""


def next_state(state: State, event: Event) -> State:
    try:
        return TRANSITIONS[state][event]
    except KeyError:
        raise TransitionError(f"{event} is not allowed in state {state}") from None


@dataclass(frozen=True)
class BreakerPolicy:
    failure_threshold: int = 3
    base_delay_s: float = 0.1
    max_delay_s: float = 10.0

    def delay(self, failures: int) -> float:
        """Backoff before the next attempt after ``failures`` consecutive failures."""
        if failures <= 0:
            return 0.0
        return min(self.max_delay_s, self.base_delay_s * 2 ** min(failures - 1, 60))


@dataclass(frozen=True)
class Breaker:
    state: State = State.CLOSED
    failures: int = 0  # consecutive failed attempts
    retry_at: float = 0.0  # monotonic time before which no attempt is made
    trial_started: bool = False  # HALF_OPEN: the one trial write is under way

    def tick(self, now: float) -> Breaker:
        """OPEN turns HALF_OPEN once its backoff has elapsed; nothing else changes with time."""
        if self.state is State.OPEN and now >= self.retry_at:
            return replace(self, state=next_state(self.state, Event.COOLED), trial_started=False)
        return self

    def permit(self, now: float) -> tuple[bool, Breaker]:
        """(may a write be attempted now, the breaker after that decision)."""
        breaker = self.tick(now)
        if breaker.state is State.OPEN or now < breaker.retry_at:
            return False, breaker
        if breaker.state is State.HALF_OPEN:
            if breaker.trial_started:
                return False, breaker
            return True, replace(breaker, trial_started=True)
        return True, breaker

    def succeeded(self) -> Breaker:
        return Breaker(next_state(self.state, Event.SUCCESS))

    def failed(self, policy: BreakerPolicy, now: float) -> Breaker:
        failures = self.failures + 1
        tripping = self.state is State.CLOSED and failures >= policy.failure_threshold
        event = Event.TRIP if tripping else Event.FAILURE
        return Breaker(next_state(self.state, event), failures, now + policy.delay(failures))

    def wait_s(self, now: float) -> float:
        """How long until an attempt may be permitted (0: now)."""
        return max(0.0, self.retry_at - now)


def diagram() -> str:
    """The transition table as Markdown, for the docs."""
    lines = ["| state | event | next state |", "|---|---|---|"]
    for state, events in TRANSITIONS.items():
        lines += [f"| {state} | {event} | {target} |" for event, target in events.items()]
    return "\n".join(lines)
