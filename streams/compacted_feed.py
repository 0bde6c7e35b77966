"""A compacted topic every worker holds whole: read from the beginning, then followed.

:class:`CompactedFeed` is the mechanism the geofence feed and the device registry feed
share: a daemon thread that reads every partition of one topic from offset 0 (no
consumer group: every worker needs every record), hands each poll's records to
:meth:`apply` and calls :meth:`changed` after a poll that changed something. The first
read, to the end of the topic, sets :attr:`loaded`; a feed that cannot finish it within
:data:`LOAD_TIMEOUT_S` fails, and its worker with it. A subclass decodes and keeps the
records (:meth:`apply`) and swaps in what it builds from them (:meth:`changed`) in one
assignment, so a batch always sees one whole version.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable

from confluent_kafka import Consumer, Message

from guardstream.lifecycle import start_guarded
from guardstream.settings import Settings
from guardstream.topic_end import TP, ReadToEnd, reader_config

# How long the first read of the topic (and of its partitions before it) may take;
# the changelog restore allows as long.
LOAD_TIMEOUT_S = 60.0


class CompactedFeed:
    def __init__(self, settings: Settings, topic: str, client_id: str, log: logging.Logger) -> None:
        self.topic = topic
        self.log = log
        self.loaded = threading.Event()
        self.stopping = threading.Event()
        self._consumer = Consumer(reader_config(settings, client_id))
        self._thread: threading.Thread | None = None

    # -- what a subclass holds -------------------------------------------------------------

    def apply(self, records: Iterable[Message]) -> bool:
        """Take one poll's records (a tombstone has no value); True when something changed."""
        raise NotImplementedError

    def changed(self) -> None:
        """Swap in what the records applied so far make (called after a poll that changed something)."""

    # -- the thread --------------------------------------------------------------------------

    def start(self, on_failure: Callable[[BaseException], None]) -> None:
        """Run the feed in a daemon thread; ``on_failure`` hears of an error that ended it."""
        self._thread = start_guarded(self.topic, self._run, on_failure, self.log, f"{self.topic} feed")

    def stop(self) -> None:
        self.stopping.set()
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        try:
            metadata = self._consumer.list_topics(self.topic, timeout=LOAD_TIMEOUT_S)
            topics = metadata.topics
            partitions = list(topics[self.topic].partitions) if self.topic in topics else []
            if self._load({(self.topic, p): 0 for p in partitions}):
                self._follow()
        finally:
            self._consumer.close()

    def _load(self, starts: dict[TP, int]) -> bool:
        """Every record, read to the end of the topic, then one :meth:`changed`; False when stopped first."""
        changed = False
        for records in ReadToEnd(self._consumer, starts, LOAD_TIMEOUT_S):
            if self.stopping.is_set():
                return False
            changed |= self.apply(records)
        if changed:
            self.changed()
        self.loaded.set()
        return True

    def _follow(self) -> None:
        """Records written since, :meth:`changed` after each poll that changed something."""
        while not self.stopping.is_set():
            if self.apply(m for m in self._consumer.consume(1000, 0.5) if m.error() is None):
                self.changed()
