"""Every worker's copy of all geofences, read from the compacted ``geofences`` topic.

:class:`FenceBook` is the pure part: fence records (or tombstones) in, a new
:class:`FenceIndex` and the ids of fences that disappeared out. :class:`FenceFeed`
is the shell: a thread that reads the topic from the beginning (no consumer
group: every worker needs every fence), rebuilds the index when fences change
and swaps it in one assignment, so a batch always sees one whole index. The
first read, to the end of the topic, builds the index once; a feed that cannot
finish it within :data:`LOAD_TIMEOUT_S` fails, and its worker with it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, Message

from guardstream.catalog import TOPICS
from guardstream.errors import GuardstreamError
from guardstream.lifecycle import start_guarded
from guardstream.schemas.codec import Codec
from guardstream.settings import Settings
from guardstream.streams.geofence import Fence, FenceIndex, fence_from_record
from guardstream.topic_end import TP, ReadToEnd, reader_config

log = logging.getLogger("guardstream.fences")
# How long the first read of every fence (and of the topic's partitions before it) may take;
# the changelog restore allows as long.
LOAD_TIMEOUT_S = 60.0


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


class FenceFeed:
    def __init__(self, settings: Settings, codec: Codec,
                 on_rebuild: Callable[[FenceIndex, float], None] | None = None) -> None:
        self.codec = codec
        self.book = FenceBook()
        self.index = FenceIndex.build(())
        self.loaded = threading.Event()
        self.stopping = threading.Event()
        self.errors = 0
        self._removed: set[str] = set()
        self._lock = threading.Lock()
        self._on_rebuild = on_rebuild
        self._consumer = Consumer(reader_config(settings, "guardstream-fences"))
        self._thread: threading.Thread | None = None

    def start(self, on_failure: Callable[[BaseException], None]) -> None:
        """Run the feed in a daemon thread; ``on_failure`` hears of an error that ended it."""
        self._thread = start_guarded("fences", self._run, on_failure, log, "geofence feed")

    def stop(self) -> None:
        self.stopping.set()
        if self._thread is not None:
            self._thread.join(10)

    def take_removed(self) -> frozenset[str]:
        """Fence ids deleted since the last call (their devices get an exit)."""
        with self._lock:
            removed, self._removed = frozenset(self._removed), set()
        return removed

    def _run(self) -> None:
        topic = TOPICS.geofences.name
        try:
            metadata = self._consumer.list_topics(topic, timeout=LOAD_TIMEOUT_S)
            partitions = list(metadata.topics[topic].partitions) if topic in metadata.topics else []
            if self._load({(topic, p): 0 for p in partitions}):
                self._follow()
        finally:
            self._consumer.close()

    def _load(self, starts: dict[TP, int]) -> bool:
        """Every fence, read to the end of the topic, in one index; False when stopped first."""
        changed = False
        for records in ReadToEnd(self._consumer, starts, LOAD_TIMEOUT_S):
            if self.stopping.is_set():
                return False
            changed |= self._apply_all(records)
        if changed:
            self._rebuild()
        self.loaded.set()
        return True

    def _follow(self) -> None:
        """Fences written since, the index rebuilt after each batch that changed one."""
        while not self.stopping.is_set():
            if self._apply_all(m for m in self._consumer.consume(1000, 0.5) if m.error() is None):
                self._rebuild()

    def _apply_all(self, records: Iterable[Message]) -> bool:
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

    def _rebuild(self) -> None:
        started = time.perf_counter()
        index, removed = self.book.rebuild()
        with self._lock:
            self.index = index  # one assignment: a batch sees the old index or the new, whole
            self._removed |= removed
        if self._on_rebuild:
            self._on_rebuild(index, time.perf_counter() - started)
