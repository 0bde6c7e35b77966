"""Reads the few records the lag needs: exact end offsets and record timestamps.

One long-lived consumer, assigned partitions only (it never joins a group or
commits), does two jobs per collection:

* **Exact end offsets.** A partition's high watermark is exact on Apache Kafka,
  but tansu reports the base offset of the last batch + 1. As
  :func:`guardstream.topic_end.probe_end_offsets` does, the reader starts at
  ``watermark - 1`` and reads to the partition's end-of-file event: one record
  on Apache Kafka, the last batch on tansu. A watermark grows with every batch
  written, on both brokers, so an unchanged watermark means an unchanged end and
  the read is skipped: a collection reads only the partitions written to since
  the last one.
* **Timestamps at committed offsets.** For lag in seconds, the record at a
  lagging group's committed offset: assign there, read one record, take its
  timestamp. A record's timestamp never changes, so an offset still committed at
  the next collection costs nothing; several groups on one partition are served
  by seeking from one offset to the next.

Both caches keep only what the last collection used, so memory follows the
cluster, not the exporter's age.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaError, KafkaException, Message
from confluent_kafka import TopicPartition as KafkaPartition

from guardstream.errors import UnavailableError
from guardstream.kafka import consumer_config
from guardstream.settings import Settings

from .snapshot import TopicPartition

READER_ID = "guardstream-lag-reader"


@dataclass
class ReadResult:
    values: dict
    missing: set = field(default_factory=set)  # not reached before the deadline


class OffsetReader:
    def __init__(self, settings: Settings, timeout_s: float = 10.0) -> None:
        self._timeout_s = timeout_s
        try:
            self._consumer = Consumer(consumer_config(settings, READER_ID, READER_ID, **{
                "enable.partition.eof": True, "fetch.wait.max.ms": 10,
                # one record, or one batch, is all any read needs
                "max.partition.fetch.bytes": 64 * 1024, "queued.max.messages.kbytes": 4096,
            }))
        except KafkaException as exc:
            raise UnavailableError(f"lag reader: {exc}") from exc
        self._ends: dict[TopicPartition, tuple[int, int]] = {}  # watermark -> exact end
        self._stamps: dict[tuple[str, int, int], int] = {}

    def close(self) -> None:
        self._consumer.close()

    def exact_ends(self, watermarks: Mapping[TopicPartition, tuple[int, int]]) -> ReadResult:
        """{(topic, partition): (oldest, exact end)} from {(topic, partition): (low, high)}."""
        ends: dict[TopicPartition, tuple[int, int]] = {}
        to_read: dict[TopicPartition, int] = {}
        for tp, (low, high) in watermarks.items():
            known = self._ends.get(tp)
            if high <= low:
                ends[tp] = (low, high)
            elif known is not None and known[0] == high:
                ends[tp] = (low, known[1])
            else:
                to_read[tp] = high - 1
        read = self._read_to_eof(to_read)
        for tp, last in read.values.items():
            ends[tp] = (watermarks[tp][0], max(watermarks[tp][1], last))
        self._ends = {tp: (watermarks[tp][1], end) for tp, (_, end) in ends.items()}
        return ReadResult(ends, read.missing)

    def timestamps(self, wanted: Iterable[tuple[str, int, int]]) -> ReadResult:
        """{(topic, partition, offset): timestamp in ms of the first record at or after offset}."""
        wanted = set(wanted)
        stamps = {key: self._stamps[key] for key in wanted if key in self._stamps}
        by_partition: dict[TopicPartition, list[int]] = {}
        for topic, partition, offset in sorted(wanted - stamps.keys()):
            by_partition.setdefault((topic, partition), []).append(offset)
        read = self._read_at(by_partition)
        stamps.update(read.values)
        self._stamps = stamps
        return ReadResult(stamps, read.missing)

    # -- reading ---------------------------------------------------------------------

    def _read_to_eof(self, start: Mapping[TopicPartition, int]) -> ReadResult:
        """{tp: end offset} read from each start offset to the partition's end-of-file."""
        result = ReadResult({})
        if not start:
            return result
        self._consumer.assign([KafkaPartition(t, p, o) for (t, p), o in start.items()])
        pending = set(start)
        try:
            for message in self._messages(pending):
                tp = (message.topic(), message.partition())
                if message.error() is None:
                    result.values[tp] = max(result.values.get(tp, 0), message.offset() + 1)
                else:  # end of partition: its offset is the end
                    result.values[tp] = max(result.values.get(tp, 0), message.offset())
                    pending.discard(tp)
        finally:
            self._consumer.unassign()
        # a partition read part of the way is no end offset at all
        result.values = {tp: end for tp, end in result.values.items() if tp not in pending}
        result.missing = pending
        return result

    def _read_at(self, offsets: dict[TopicPartition, list[int]]) -> ReadResult:
        """One record at each wanted offset (ascending per partition), seeking between them."""
        result = ReadResult({})
        if not offsets:
            return result
        queue = {tp: list(wanted) for tp, wanted in offsets.items()}
        self._consumer.assign([KafkaPartition(t, p, q[0]) for (t, p), q in queue.items()])
        pending = set(queue)
        try:
            for message in self._messages(pending):
                tp = (message.topic(), message.partition())
                wanted = queue[tp]
                if message.error() is not None:  # end of partition
                    if not wanted or message.offset() <= wanted[0]:  # nothing left at the wanted offsets
                        pending.discard(tp)
                    continue
                if not wanted or message.offset() < wanted[0]:
                    continue  # fetched before a seek took effect
                _, stamp = message.timestamp()
                # a control record or a compacted gap puts the next record past several wanted offsets
                while wanted and wanted[0] <= message.offset():
                    if stamp > 0:
                        result.values[(tp[0], tp[1], wanted[0])] = stamp
                    wanted.pop(0)
                if wanted:
                    self._consumer.seek(KafkaPartition(tp[0], tp[1], wanted[0]))
                else:
                    pending.discard(tp)
        finally:
            self._consumer.unassign()
        result.missing = {(t, p, o) for (t, p) in pending for o in queue[(t, p)]}
        return result

    def _messages(self, pending: set[TopicPartition]) -> Iterable[Message]:
        """Messages and end-of-partition events until ``pending`` empties or the deadline passes."""
        deadline = time.monotonic() + self._timeout_s
        while pending and time.monotonic() < deadline:
            # consume() waits out its whole timeout unless the batch fills: keep it short
            batch = self._consumer.consume(500, 0.02)
            for message in batch:
                error = message.error()
                if error is None or error.code() == KafkaError._PARTITION_EOF:
                    yield message
                elif not error.retriable():
                    raise UnavailableError(f"reading {message.topic()}[{message.partition()}]: {error.str()}")
