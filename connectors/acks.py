"""MQTT acknowledgements, released in the order the messages arrived.

MQTT requires a client to send PUBACKs in the order it received the PUBLISH
packets, while Kafka confirms records of different partitions in any order.
:class:`OrderedAcks` holds each received message's ack until every message
received before it on the same connection is confirmed too. It also bounds how
many messages may be unconfirmed at once: the bridge stops reading from MQTT
when :attr:`full`, which is the back-pressure the broker sees. Each entry
remembers when it was added (the injected ``clock``), so :meth:`oldest_age`
tells how long the head of the window has waited for Kafka.

A reconnect starts a new *generation*: acks still pending from the old
connection are dropped, because the broker redelivers those messages and the
new copies are acked when their own Kafka writes complete.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import msgspec


class Ticket(msgspec.Struct, frozen=True, gc=False):
    generation: int
    seq: int


@dataclass
class _Entry:
    mid: int
    qos: int
    added: float  # clock reading when the message entered the window
    done: bool = False


class OrderedAcks:
    def __init__(self, capacity: int, clock: Callable[[], float] = time.monotonic) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._clock = clock
        self.generation = 0
        self._first_seq = 0  # seq of the entry at the head of the queue
        self._queue: deque[_Entry] = deque()

    def __len__(self) -> int:
        return len(self._queue)

    @property
    def full(self) -> bool:
        return len(self._queue) >= self.capacity

    def add(self, mid: int, qos: int) -> Ticket:
        """Track one received message; returns the ticket to confirm it with."""
        self._queue.append(_Entry(mid, qos, self._clock()))
        return Ticket(self.generation, self._first_seq + len(self._queue) - 1)

    def confirm(self, ticket: Ticket) -> list[tuple[int, int]]:
        """Mark a message handled; returns the (mid, qos) pairs now due, in arrival order."""
        if ticket.generation != self.generation:
            return []
        index = ticket.seq - self._first_seq
        if not 0 <= index < len(self._queue):
            return []
        self._queue[index].done = True
        due: list[tuple[int, int]] = []
        while self._queue and self._queue[0].done:
            entry = self._queue.popleft()
            self._first_seq += 1
            if entry.qos > 0:
                due.append((entry.mid, entry.qos))
        return due

    def oldest_age(self) -> float:
        """Seconds the oldest unconfirmed message has been in the window; 0 when it is empty.
        Read from other threads at scrape time: a lost race reads an empty window."""
        try:
            head = self._queue[0]
        except IndexError:
            return 0.0
        return max(0.0, self._clock() - head.added)

    def reconnected(self) -> int:
        """Forget the old connection's pending acks; returns how many were dropped."""
        dropped = len(self._queue)
        self.generation += 1
        self._first_seq = 0
        self._queue.clear()
        return dropped
