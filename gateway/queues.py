"""What a client's bounded outgoing queue keeps when the client falls behind. Pure.

Every message a client is due goes through :meth:`ClientQueue.offer`, which
answers with what happened, so the caller counts it and acts on it:

* **critical** messages (alerts, geofence events, alert status changes and
  protocol replies) are never dropped. When the queue is full and holds
  nothing else, the offer reports ``overflow``: the gateway closes the client
  with 1013 and the client resumes from its last offsets, losing nothing.
* **positions** conflate: a newer position of a device replaces the one still
  queued (the older is removed, the newer goes to the back, so the order of
  the queue stays the order of arrival).
* **others** (and positions when no conflation frees room) are dropped
  oldest first when the queue is full.
"""

from __future__ import annotations

import enum
from collections import OrderedDict, deque
from dataclasses import dataclass


class Lane(enum.Enum):
    CRITICAL = "critical"
    POSITION = "position"
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class Item:
    lane: Lane
    payload: str
    kind: str = ""  # channel kind, for counters
    key: str | None = None  # conflation key of a position: the device
    topic: str | None = None
    partition: int = -1
    offset: int = -1
    born_ms: int | None = None  # Kafka timestamp, for the delivery latency
    frame: bytes = b""  # the WebSocket frame of payload, built once for every client that gets it


@dataclass(frozen=True, slots=True)
class Offer:
    overflow: bool = False  # not queued: the queue is full of critical messages
    conflated: Item | None = None  # the older position this one replaced
    dropped: Item | None = None  # dropped to stay within capacity (may be the offered item)


QUEUED = Offer()


class ClientQueue:
    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._items: OrderedDict[int, Item] = OrderedDict()
        self._noncritical: deque[int] = deque()  # arrival order; entries already gone are skipped
        self._positions: dict[str, int] = {}  # device -> its queued position
        self._seq = 0

    def __len__(self) -> int:
        return len(self._items)

    def offer(self, item: Item) -> Offer:
        if item.lane is Lane.POSITION and item.key in self._positions:
            older = self._items.pop(self._positions.pop(item.key))
            self._append(item)
            return Offer(conflated=older)
        if len(self._items) < self.capacity:
            self._append(item)
            return QUEUED
        victim = self._pop_oldest_noncritical()
        if victim is not None:
            self._append(item)
            return Offer(dropped=victim)
        if item.lane is Lane.CRITICAL:
            return Offer(overflow=True)
        return Offer(dropped=item)

    def take(self) -> Item | None:
        if not self._items:
            return None
        seq, item = self._items.popitem(last=False)
        if item.lane is Lane.POSITION and self._positions.get(item.key) == seq:
            del self._positions[item.key]
        # everything before the oldest queued item is gone: forget those entries
        while self._noncritical and self._noncritical[0] <= seq:
            self._noncritical.popleft()
        return item

    def take_many(self, limit: int) -> list[Item]:
        out = []
        while len(out) < limit and (item := self.take()) is not None:
            out.append(item)
        return out

    def drain(self) -> list[Item]:
        return self.take_many(len(self._items))

    def _append(self, item: Item) -> None:
        self._seq += 1
        self._items[self._seq] = item
        if item.lane is not Lane.CRITICAL:
            self._noncritical.append(self._seq)
        if item.lane is Lane.POSITION and item.key is not None:
            self._positions[item.key] = self._seq

    def _pop_oldest_noncritical(self) -> Item | None:
        while self._noncritical:
            item = self._items.pop(self._noncritical.popleft(), None)
            if item is not None:
                if item.lane is Lane.POSITION and item.key is not None:
                    self._positions.pop(item.key, None)
                return item
        return None
