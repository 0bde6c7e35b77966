"""Reading topics for the operator commands: ranges, single records, offsets by time.

One consumer, assigned partitions only: it never joins a consumer group and
never commits, so reading a topic disturbs nobody.

Offsets by time. ``offsets_for_times`` is exact on Apache Kafka, but not every
Kafka-protocol broker answers it (tansu answers offset 0 for any time). So its
answer is checked against the records around it (two reads) and, when it does
not hold, the offset is found by a binary search over record timestamps (about
log2(records) single-record reads). Both assume timestamps grow along a
partition, as they do with one producer per key or with LogAppendTime.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping

from confluent_kafka import Consumer, KafkaError, KafkaException, Message
from confluent_kafka import TopicPartition as KafkaPartition

from guardstream.errors import InputError, UnavailableError
from guardstream.kafka import consumer_config, error_text
from guardstream.settings import Settings
from guardstream.topic_end import probe_end_offsets

from .records import Record

TopicPartition = tuple[str, int]
CLIENT_ID = "guardstream-ops"


def to_record(message: Message) -> Record:
    kind, stamp = message.timestamp()
    return Record(message.topic(), message.partition(), message.offset(),
                  stamp if kind != 0 else -1,  # TIMESTAMP_NOT_AVAILABLE
                  message.key(), message.value(), tuple(message.headers() or ()))


class TopicReader:
    def __init__(self, settings: Settings, timeout_s: float = 10.0, client_id: str = CLIENT_ID) -> None:
        self._settings = settings
        self._timeout_s = timeout_s
        try:
            self._consumer = Consumer(consumer_config(settings, client_id, client_id, **{
                "enable.partition.eof": True, "fetch.wait.max.ms": 20}))
        except KafkaException as exc:
            raise UnavailableError(f"Kafka consumer: {exc}") from exc

    def close(self) -> None:
        self._consumer.close()

    def __enter__(self) -> TopicReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- metadata --------------------------------------------------------------------

    def partitions(self, topic: str) -> list[int]:
        """The partitions of ``topic``; :class:`InputError` ``unknown_topic`` when it does not exist."""
        try:
            metadata = self._consumer.list_topics(timeout=self._timeout_s)
        except KafkaException as exc:
            raise UnavailableError(f"Kafka unreachable: {error_text(exc)}") from exc
        found = metadata.topics.get(topic)
        if found is None or found.error is not None or not found.partitions:
            raise InputError(f"no topic {topic!r} on the cluster", reason="unknown_topic")
        return sorted(found.partitions)

    def identity(self, topics: Iterable[str]) -> dict[str, object]:
        """``{"cluster": id, "topics": {topic: topic id}}``: what a checkpoint is bound to. A topic
        that does not exist, or a broker that reports no topic ids, gives None for that topic."""
        from confluent_kafka import TopicCollection
        from confluent_kafka.admin import AdminClient

        from guardstream.kafka import admin_config
        names = sorted(set(topics))
        try:
            metadata = self._consumer.list_topics(timeout=self._timeout_s)
        except KafkaException as exc:
            raise UnavailableError(f"Kafka unreachable: {error_text(exc)}") from exc
        ids: dict[str, str | None] = {name: None for name in names}
        existing = [name for name in names if name in metadata.topics and metadata.topics[name].error is None]
        if existing:
            admin = AdminClient(admin_config(self._settings, "guardstream-ops"))
            for name, future in admin.describe_topics(TopicCollection(existing)).items():
                try:
                    ids[name] = str(future.result(timeout=self._timeout_s).topic_id)
                except (KafkaException, TimeoutError):
                    ids[name] = None
        return {"cluster": metadata.cluster_id, "topics": ids}

    def ends(self, topic: str, partitions: Iterable[int]) -> dict[int, tuple[int, int]]:
        """{partition: (oldest offset, exact end offset)}."""
        probed = probe_end_offsets(self._settings, [(topic, p) for p in partitions], self._timeout_s)
        return {p: bounds for (_, p), bounds in probed.items()}

    # -- single records --------------------------------------------------------------

    def record_at(self, topic: str, partition: int, offset: int) -> Record | None:
        """The first record at or after ``offset``, or None when the partition ends before."""
        self._consumer.assign([KafkaPartition(topic, partition, offset)])
        try:
            for message in self._messages({(topic, partition)}, stall_s=self._timeout_s, one=True):
                if message.error() is not None:
                    if message.offset() >= offset:  # end of the partition
                        return None
                    continue
                if message.offset() >= offset:
                    return to_record(message)
            return None
        finally:
            self._consumer.unassign()

    def offset_for_time(self, topic: str, partition: int, at_ms: int, low: int, end: int) -> int:
        """Where reading finds the first record stamped ``at_ms`` or later (``end`` when there is none)."""
        if end <= low:
            return end
        hint = self._broker_hint(topic, partition, at_ms, low, end)
        if hint is not None and self._hint_holds(topic, partition, at_ms, hint, low, end):
            return hint
        lo, hi = low, end
        while lo < hi:
            mid = (lo + hi) // 2
            found = self.record_at(topic, partition, mid)
            if found is None or found.offset >= hi or found.timestamp_ms >= at_ms:
                hi = mid  # nothing before the answer lies in [mid, found): reading from mid finds it
            else:
                lo = found.offset + 1
        return lo

    def _broker_hint(self, topic: str, partition: int, at_ms: int, low: int, end: int) -> int | None:
        try:
            answer = self._consumer.offsets_for_times([KafkaPartition(topic, partition, at_ms)],
                                                      timeout=self._timeout_s)[0]
        except KafkaException:
            return None  # the search below does not need it
        if answer.error is not None:
            return None
        return end if answer.offset < 0 else min(max(answer.offset, low), end)

    def _hint_holds(self, topic: str, partition: int, at_ms: int, hint: int, low: int, end: int) -> bool:
        if hint < end:
            at = self.record_at(topic, partition, hint)
            if at is not None and at.timestamp_ms < at_ms:
                return False
        if hint > low:
            before = self.record_at(topic, partition, hint - 1)
            if before is None or before.offset >= hint or before.timestamp_ms >= at_ms:
                return False
        return True

    # -- ranges ----------------------------------------------------------------------

    def read(self, ranges: Mapping[TopicPartition, tuple[int, int | None]], *, follow: bool = False,
             stall_s: float = 30.0) -> Iterator[Record]:
        """Records of each partition from its start offset up to (not including) its end.

        An end of None reads on (``follow``). Without ``follow`` the iterator ends when
        every partition reached its end; :class:`UnavailableError` when nothing arrives
        for ``stall_s`` before that.
        """
        wanted = {tp: bounds for tp, bounds in ranges.items() if bounds[1] is None or bounds[0] < bounds[1]}
        if not wanted:
            return
        self._consumer.assign([KafkaPartition(t, p, start) for (t, p), (start, _) in wanted.items()])
        pending = {tp for tp, (_, end) in wanted.items() if end is not None}
        try:
            for message in self._messages(pending, stall_s=None if follow else stall_s, follow=follow):
                tp = (message.topic(), message.partition())
                end = wanted[tp][1]
                if tp not in pending and end is not None:
                    continue  # a finished partition's fetch still in the queue
                if message.error() is not None:  # end of partition
                    if end is not None and message.offset() >= end:
                        pending.discard(tp)
                    continue
                if end is not None and message.offset() >= end:
                    pending.discard(tp)
                    continue
                yield to_record(message)
                if end is not None and message.offset() + 1 >= end:
                    pending.discard(tp)
        finally:
            self._consumer.unassign()

    def _messages(self, pending: set[TopicPartition], *, stall_s: float | None, follow: bool = False,
                  one: bool = False) -> Iterator[Message]:
        """Messages and end-of-partition events while ``pending`` is not empty (forever with ``follow``).

        ``one``: the caller wants the first message only; poll() hands it over as it arrives, where
        consume() would wait out its timeout for a fuller batch."""
        last_seen = time.monotonic()
        while pending or follow:
            if one:
                message = self._consumer.poll(0.1)
                batch = [message] if message is not None else []
            else:
                batch = self._consumer.consume(500, 0.02)
            if batch:
                last_seen = time.monotonic()
            elif stall_s is not None and time.monotonic() - last_seen > stall_s:
                raise UnavailableError(f"nothing read from Kafka for {stall_s:.0f}s "
                                       f"({len(pending)} partition(s) not at their end)")
            for message in batch:
                error = message.error()
                if error is None or error.code() == KafkaError._PARTITION_EOF:
                    yield message
                elif error.code() in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_PARTITION,
                                      KafkaError._UNKNOWN_TOPIC):
                    raise InputError(f"{message.topic()}: {error.str()}", reason="unknown_topic")
                elif not error.retriable():
                    raise UnavailableError(f"reading {message.topic()}: {error.str()}")
