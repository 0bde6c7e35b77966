"""When the sink flushes a batch, and how it finds the bad rows in one; pure, no I/O.

Records are counted per *lane*: one lane per priority topic and one
(:data:`CONTROL_LANE`) for geofences, alert actions and dead letters. Each lane
has a :class:`BatchPolicy`; a batch is flushed as soon as one lane is full or
its oldest record has waited ``max_age_s``, so an alert never waits for a
bulk lane to fill. The critical consumer has one lane with small numbers
(50 rows / 20 ms), the bulk consumer the others with big ones (5,000 / 500 ms).

:func:`isolate_failures` splits a batch the database refused into halves
until each refusal is pinned on one record, so one bad row costs a handful of
attempts instead of the whole batch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import TypeVar

from guardstream.catalog import Priority, TOPICS

CONTROL_LANE = "control"
_PRIORITY_LANES = {t.name: t.priority.value for t in TOPICS.events() if t.priority is not None}


def lane_of(topic: str) -> str:
    """The lane of a topic: its priority for events.*, :data:`CONTROL_LANE` otherwise."""
    return _PRIORITY_LANES.get(topic, CONTROL_LANE)


@dataclass(frozen=True)
class BatchPolicy:
    max_rows: int
    max_age_s: float

    def __post_init__(self) -> None:
        if self.max_rows < 1 or not self.max_age_s > 0:
            raise ValueError(f"a batch needs max_rows >= 1 and max_age_s > 0, got {self}")


def critical_policies(max_rows: int, max_age_s: float) -> Mapping[str, BatchPolicy]:
    return MappingProxyType({Priority.CRITICAL.value: BatchPolicy(max_rows, max_age_s)})


def bulk_policies(max_rows: int, max_age_s: float) -> Mapping[str, BatchPolicy]:
    lanes = [p.value for p in Priority if p is not Priority.CRITICAL] + [CONTROL_LANE]
    return MappingProxyType({lane: BatchPolicy(max_rows, max_age_s) for lane in lanes})


class FlushReason(StrEnum):
    FULL = "full"  # a lane reached max_rows, or the batch reached the largest max_rows
    AGED = "aged"  # a lane's oldest record waited max_age_s


@dataclass(frozen=True)
class Lane:
    rows: int
    oldest_at: float  # monotonic seconds when its first pending record arrived


@dataclass(frozen=True)
class BatchClock:
    """Pending records per lane; the whole state the flush decision needs."""

    lanes: Mapping[str, Lane] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def rows(self) -> int:
        return sum(lane.rows for lane in self.lanes.values())

    def added(self, lane: str, count: int, now: float) -> BatchClock:
        if count <= 0:
            return self
        current = self.lanes.get(lane)
        updated = Lane(count, now) if current is None else Lane(current.rows + count, current.oldest_at)
        return BatchClock(MappingProxyType({**self.lanes, lane: updated}))


EMPTY = BatchClock()


def _policy(policies: Mapping[str, BatchPolicy], lane: str) -> BatchPolicy:
    policy = policies.get(lane)
    if policy is None:
        raise KeyError(f"no batch policy for lane {lane!r}")
    return policy


def capacity(policies: Mapping[str, BatchPolicy]) -> int:
    """The most records a batch holds: the largest lane limit."""
    return max(p.max_rows for p in policies.values())


def flush_reason(clock: BatchClock, policies: Mapping[str, BatchPolicy], now: float) -> FlushReason | None:
    """Why the batch must be flushed now, or None to keep collecting."""
    if clock.rows >= capacity(policies):
        return FlushReason.FULL
    for name, lane in clock.lanes.items():
        if lane.rows >= _policy(policies, name).max_rows:
            return FlushReason.FULL
    for name, lane in clock.lanes.items():
        if now - lane.oldest_at >= _policy(policies, name).max_age_s:
            return FlushReason.AGED
    return None


def room(clock: BatchClock, policies: Mapping[str, BatchPolicy]) -> int:
    """How many records the next poll may take without overfilling the batch (at least 1)."""
    return max(1, capacity(policies) - clock.rows)


def poll_timeout(clock: BatchClock, policies: Mapping[str, BatchPolicy], now: float, idle_s: float) -> float:
    """How long the next poll may block: until the first lane ages out, ``idle_s`` when empty."""
    wait = idle_s
    for name, lane in clock.lanes.items():
        wait = min(wait, lane.oldest_at + _policy(policies, name).max_age_s - now)
    return max(0.0, wait)


# -- finding the bad rows ------------------------------------------------------------------

T = TypeVar("T")
F = TypeVar("F")


def isolate_failures(items: Sequence[T], attempt: Callable[[Sequence[T]], F | None]) -> list[tuple[T, F]]:
    """Write ``items`` with ``attempt`` (None: written; else the failure), halving what fails.

    Returns each item that fails on its own with its failure; every other item
    was written by exactly one successful attempt, left to right. ``attempt``
    must undo a failed call completely (a savepoint does).
    """
    if not items:
        return []
    failure = attempt(items)
    if failure is None:
        return []
    if len(items) == 1:
        return [(items[0], failure)]
    middle = len(items) // 2
    return isolate_failures(items[:middle], attempt) + isolate_failures(items[middle:], attempt)
