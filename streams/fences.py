"""Every worker's copy of all geofences, read from the compacted ``geofences`` topic.

:class:`FenceBook` is the pure part: fence records (or tombstones) in, a new
:class:`FenceIndex` and the ids of fences that disappeared out. :class:`FenceFeed`
is the shell (a :class:`~guardstream.streams.compacted_feed.CompactedFeed`): it reads the
topic from the beginning, rebuilds the index when fences change and swaps it in one
assignment, so a batch always sees one whole index. The first read, to the end of the
topic, builds the index once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Message

from guardstream.catalog import TOPICS
from guardstream.errors import GuardstreamError
from guardstream.schemas.codec import Codec
from guardstream.settings import Settings
from guardstream.streams.compacted_feed import CompactedFeed
from guardstream.streams.geofence import Fence, FenceIndex, fence_from_record

log = logging.getLogger("guardstream.fences")


@dataclass
class FenceBook:
    fences: dict[str, Fence] = field(default_factory=dict)
    indexed: frozenset[str] = frozenset()

    def put(self, fence_id: str, record: dict[str, Any] | None) -> None:
        """A fence record, or None for a tombstone (the fence was deleted)."""
        if record is None:
            self.fences.pop(fence_id, None)
        else:
            self.fences[fence_id] = fence_from_record(record)

    def rebuild(self) -> tuple[FenceIndex, frozenset[str]]:
        """(new index, ids that were in the previous index and are gone now)."""
        index = FenceIndex.build(self.fences.values())
        now = frozenset(self.fences)
        removed, self.indexed = self.indexed - now, now
        return index, removed


class FenceFeed(CompactedFeed):
    def __init__(self, settings: Settings, codec: Codec,
                 on_rebuild: Callable[[FenceIndex, float], None] | None = None) -> None:
        super().__init__(settings, TOPICS.geofences.name, "guardstream-fences", log)
        self.codec = codec
        self.book = FenceBook()
        self.index = FenceIndex.build(())
        self.errors = 0
        self._removed: set[str] = set()
        self._lock = threading.Lock()
        self._on_rebuild = on_rebuild

    def take_removed(self) -> frozenset[str]:
        """Fence ids deleted since the last call (their devices get an exit)."""
        with self._lock:
            removed, self._removed = frozenset(self._removed), set()
        return removed

    def apply(self, records: Iterable[Message]) -> bool:
        changed = False
        for record in records:
            changed |= self._apply(record)
        return changed

    def _apply(self, message: Any) -> bool:
        fence_id = (message.key() or b"").decode("utf-8", "replace")
        try:
            record = None if message.value() is None else self.codec.decode(message.value())[1]
            self.book.put(fence_id, record)
            return True
        except GuardstreamError as exc:
            # a bad fence never stops the worker: it is left out, logged and counted
            self.errors += 1
            log.error("geofence %s at offset %d left out: %s: %s", fence_id, message.offset(), exc.reason, exc.detail)
            return False

    def changed(self) -> None:
        started = time.perf_counter()
        index, removed = self.book.rebuild()
        with self._lock:
            self.index = index  # one assignment: a batch sees the old index or the new, whole
            self._removed |= removed
        if self._on_rebuild:
            self._on_rebuild(index, time.perf_counter() - started)
