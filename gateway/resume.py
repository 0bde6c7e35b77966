"""Resume after a reconnect with no gap and no duplicate. Pure.

A client tells the gateway the last offset it saw per topic-partition. When
the subscribe arrives, the hub's live position of each partition (the offset
of the next event it will dispatch) marks the border: offsets before it are
replayed from Kafka, offsets from it on arrive live. While the replay runs,
live events for the client wait in a :class:`ReplayGate`; when it ends, those
at or below an offset already replayed are dropped and the rest follow the
``live`` message, in order.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from guardstream.gateway.queues import ClientQueue, Item, Offer

TP = tuple[str, int]


@dataclass(frozen=True)
class ReplayPlan:
    ranges: Mapping[TP, tuple[int, int]]  # [first, end) to read, per partition
    gaps: Mapping[TP, tuple[int, int]]  # [first, end) no longer in Kafka (past retention)


def plan_replay(resume: Mapping[TP, int], live: Mapping[TP, int], oldest: Mapping[TP, int]) -> ReplayPlan:
    """What to read for a client that saw up to ``resume[tp]``, given the hub's ``live`` positions
    and the ``oldest`` offsets still in Kafka. Partitions the hub does not read are left out."""
    ranges: dict[TP, tuple[int, int]] = {}
    gaps: dict[TP, tuple[int, int]] = {}
    for tp, last in resume.items():
        end = live.get(tp)
        if end is None:
            continue
        first = last + 1
        kept = max(first, oldest.get(tp, 0))
        if kept > first:
            gaps[tp] = (first, min(kept, end))
        if kept < end:
            ranges[tp] = (kept, end)
    return ReplayPlan(ranges, gaps)


@dataclass
class ReplayGate:
    """Holds a client's live messages while its replay runs."""

    held: ClientQueue
    replayed: dict[TP, int] = field(default_factory=dict)  # highest offset sent by the replay

    @classmethod
    def with_capacity(cls, capacity: int) -> ReplayGate:
        return cls(ClientQueue(capacity))

    def hold(self, item: Item) -> Offer:
        return self.held.offer(item)

    def note_replayed(self, tp: TP, offset: int) -> None:
        if offset > self.replayed.get(tp, -1):
            self.replayed[tp] = offset

    def release(self) -> list[Item]:
        """The held messages the replay did not already send, in arrival order."""
        return [item for item in self.held.drain()
                if item.topic is None or item.offset > self.replayed.get((item.topic, item.partition), -1)]
