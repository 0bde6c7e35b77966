"""Reading partitions to their end: exact end offsets, a topic read whole, the latest value per key.

Where a partition ends is the position its consumer reached when the client reports
the partition's end-of-file event, never the high watermark alone: some Kafka-protocol
brokers (tansu, the embedded broker) report the watermark as the base offset of the last
record batch + 1 rather than the last offset + 1 (ten records produced in one batch read
as end offset 1). :func:`probe_end_offsets` therefore reads from ``high watermark - 1``
to that event, which is exact on every broker (on Apache Kafka it reads one record).

One policy for every read here: one that has not reached the end of every partition by
its deadline raises :class:`UnavailableError`; it never passes part of a topic off as all
of it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from guardstream.errors import UnavailableError
from guardstream.kafka import common_config, error_text, take_batch
from guardstream.settings import Settings

TP = tuple[str, int]
# How long one poll of a read waits for records: a read that has nothing new checks its
# deadline (and its caller whether to stop) this often.
POLL_S = 0.5
BATCH = 1000


def reader_config(settings: Settings, client_id: str, **overrides: Any) -> dict[str, Any]:
    """A consumer that is only ever assigned partitions: it joins no group, commits nothing
    (its group id is only a name) and reports the end of each partition it reaches."""
    return common_config(settings, client_id) | {
        "group.id": client_id, "enable.auto.commit": False, "enable.partition.eof": True,
        # a start the broker no longer keeps (retention) reads from the oldest record it has
        "auto.offset.reset": "earliest", **overrides}


class ReadToEnd:
    """The records of partitions from their start offsets to their ends, as the ends are when
    the read reaches them.

    Assigns ``starts`` ({(topic, partition): offset}) to ``consumer`` (made with
    :func:`reader_config`) and, iterated, yields the records of each poll: a list, empty when
    the poll brought none, so a caller can stop between polls. When every partition reached
    its end the iteration ends and :attr:`ends` holds each one's end offset. A record of a
    partition already at its end (written meanwhile) still comes while others are read.

    :class:`UnavailableError` when some partition has not reached its end within
    ``timeout_s``, and at the first error the client cannot retry. The consumer stays
    assigned afterwards, so a caller can read on from the ends.
    """

    def __init__(self, consumer: Consumer, starts: Mapping[TP, int], timeout_s: float) -> None:
        self.consumer = consumer
        self.starts = dict(starts)
        self.timeout_s = timeout_s
        self.ends: dict[TP, int] = {}

    def __iter__(self) -> Iterator[list[Message]]:
        self.consumer.assign([TopicPartition(t, p, offset) for (t, p), offset in self.starts.items()])
        pending = set(self.starts)
        deadline = time.monotonic() + self.timeout_s
        while pending:
            left = deadline - time.monotonic()
            if left <= 0:
                raise UnavailableError(f"{_names(pending)} not read to the end within {self.timeout_s:g}s")
            records = []
            for message in take_batch(self.consumer, BATCH, min(POLL_S, left)):
                error = message.error()
                if error is None:
                    records.append(message)
                elif error.code() == KafkaError._PARTITION_EOF:
                    tp = (message.topic(), message.partition())
                    self.ends[tp] = message.offset()
                    pending.discard(tp)
                elif error.fatal() or not error.retriable():
                    raise UnavailableError(f"reading {message.topic()}[{message.partition()}]: {error.str()}")
            yield records


def partitions_of(consumer: Consumer, topic: str, timeout_s: float = 10.0) -> list[int]:
    """The partitions of ``topic``; :class:`UnavailableError` when Kafka does not answer or the topic is missing."""
    try:
        metadata = consumer.list_topics(topic, timeout=timeout_s)
    except KafkaException as exc:
        raise UnavailableError(f"Kafka unreachable: {error_text(exc)}") from exc
    found = metadata.topics.get(topic)
    if found is None or found.error is not None:
        raise UnavailableError(f"topic {topic} is missing: run `guardstream topics apply`")
    return sorted(found.partitions)


def latest_values(settings: Settings, topic: str, timeout_s: float, client_id: str) -> dict[bytes, bytes]:
    """{key: value} of the latest record of every key of a compacted topic, read to its end;
    a key whose latest record is a tombstone (no value) is gone and left out."""
    consumer = Consumer(reader_config(settings, client_id))
    try:
        values: dict[bytes, bytes] = {}
        starts = {(topic, p): 0 for p in partitions_of(consumer, topic)}
        for records in ReadToEnd(consumer, starts, timeout_s):
            for record in records:
                key, value = record.key() or b"", record.value()
                if value is None:
                    values.pop(key, None)
                else:
                    values[key] = value
        return values
    finally:
        consumer.close()


def probe_end_offsets(settings: Settings, partitions: Iterable[TP],
                      timeout_s: float = 10.0) -> dict[TP, tuple[int, int]]:
    """{(topic, partition): (oldest offset, exact end offset)} for each partition."""
    wanted = list(partitions)
    if not wanted:
        return {}
    consumer = Consumer(reader_config(settings, "guardstream-probe", **{"fetch.wait.max.ms": 100}))
    try:
        marks = {tp: _watermarks(consumer, tp, timeout_s) for tp in wanted}
        reading = ReadToEnd(consumer, {tp: high - 1 for tp, (low, high) in marks.items() if high > low}, timeout_s)
        for _ in reading:
            pass  # only the ends count
        return {tp: (low, max(high, reading.ends.get(tp, high))) for tp, (low, high) in marks.items()}
    finally:
        consumer.close()


def _watermarks(consumer: Consumer, tp: TP, timeout_s: float) -> tuple[int, int]:
    try:
        return consumer.get_watermark_offsets(TopicPartition(*tp), timeout=timeout_s)
    except KafkaException as exc:
        raise UnavailableError(f"watermarks of {tp[0]}[{tp[1]}]: {error_text(exc)}") from exc


def _names(partitions: Iterable[TP]) -> str:
    return ", ".join(f"{t}[{p}]" for t, p in sorted(partitions))
