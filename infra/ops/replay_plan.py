"""A replay's arithmetic: its id, its checkpoint, where each copy goes, what is already copied; pure.

A replay copies, per source partition, the records between two offsets whose
timestamps fall in ``[from, to)``. It works in chunks: produce a chunk, wait
until Kafka acknowledged all of it, then write the checkpoint: the next source
offset per partition, and per destination partition the offset after our last
acknowledged copy (``marks``).

Stopped between chunks (Ctrl-C or SIGTERM stop between two records, wait for
the acknowledgements and write the checkpoint), a rerun with the same arguments
continues at the checkpoint: exact. A crash inside a chunk (``kill -9``, a lost
machine) leaves some of that chunk's copies written and unrecorded; the
checkpoint alone would copy them again, so at worst that chunk's records would
appear twice. That is made exact too: every copy carries ``replay.id`` and
``replay.source`` (``topic/partition/offset``), so on resume the destination is
read from the marks to its end, and :func:`last_copied` finds, per (source
partition, destination partition), the last source offset already there.
Records of one source partition bound for one destination partition are
produced in order by an idempotent producer, so every offset up to that one is
there and none after it: skipping exactly those (:func:`already_copied`) leaves
no record missing or doubled.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

REPLAY_ID = "replay.id"
REPLAY_SOURCE = "replay.source"

Headers = list[tuple[str, bytes | None]]


def replay_id(source: str, target: str, from_text: str, to_text: str | None) -> str:
    """The id of a replay: the same arguments give the same id (and so resume)."""
    digest = hashlib.sha256("\x00".join((source, target, from_text.strip(), (to_text or "").strip())).encode())
    return digest.hexdigest()[:12]


# -- destination partitions ---------------------------------------------------------

def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (the Java client's default partitioner hash), as a signed 32-bit int."""
    m, r = 0x5BD1E995, 24
    length = len(data)
    h = (0x9747B28C ^ length) & 0xFFFFFFFF
    for i in range(0, length - length % 4, 4):
        k = int.from_bytes(data[i:i + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> r
        k = (k * m) & 0xFFFFFFFF
        h = (h * m) & 0xFFFFFFFF
        h ^= k
    tail = length % 4
    base = length - tail
    if tail == 3:
        h ^= data[base + 2] << 16
    if tail >= 2:
        h ^= data[base + 1] << 8
    if tail >= 1:
        h ^= data[base]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def destination_partition(key: bytes | None, source_partition: int, source_count: int, dest_count: int) -> int:
    """Same partition count: the source partition (per-partition order kept exactly); otherwise
    the key's partition as the Java client and guardstream's producers pick it (murmur2), and a
    record without a key goes to its source partition modulo the count."""
    if dest_count == source_count:
        return source_partition
    if key is None:
        return source_partition % dest_count
    return (murmur2(key) & 0x7FFFFFFF) % dest_count


# -- headers ------------------------------------------------------------------------

def source_tag(topic: str, partition: int, offset: int) -> bytes:
    return f"{topic}/{partition}/{offset}".encode()


def parse_source_tag(value: bytes | None) -> tuple[str, int, int] | None:
    """(topic, partition, offset) of a ``replay.source`` value (topic names hold no ``/``)."""
    if not value:
        return None
    parts = value.decode("utf-8", "replace").rsplit("/", 2)
    if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
        return None
    return parts[0], int(parts[1]), int(parts[2])


def copy_headers(headers: Iterable[tuple[str, bytes | None]], rid: str, tag: bytes) -> Headers:
    """The source record's headers, in order, with this replay's two appended (those of an
    earlier replay are replaced: a copy names the record it was copied from)."""
    kept = [(k, v) for k, v in headers if k not in (REPLAY_ID, REPLAY_SOURCE)]
    return kept + [(REPLAY_ID, rid.encode()), (REPLAY_SOURCE, tag)]


# -- checkpoint ---------------------------------------------------------------------

@dataclass
class Checkpoint:
    id: str
    source: str
    into: str
    from_ms: int
    to_ms: int | None
    ranges: dict[int, tuple[int, int]]  # source partition -> [first offset, end offset)
    positions: dict[int, int]  # source partition -> next offset to read; all before it are copied
    marks: dict[int, int]  # destination partition -> offset after our last acknowledged copy
    source_partitions: int
    dest_partitions: int
    copied: int = 0
    outside: int = 0  # records in the offset ranges whose timestamps fall outside [from, to)
    done: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def remaining(self) -> int:
        return sum(max(0, end - self.positions.get(p, start)) for p, (start, end) in self.ranges.items())

    def total(self) -> int:
        return sum(max(0, end - start) for start, end in self.ranges.values())

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        for name in ("ranges", "positions", "marks"):
            doc[name] = {str(k): list(v) if isinstance(v, tuple) else v for k, v in doc[name].items()}
        return doc

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Checkpoint:
        values = dict(doc)
        values["ranges"] = {int(k): (int(v[0]), int(v[1])) for k, v in doc["ranges"].items()}
        values["positions"] = {int(k): int(v) for k, v in doc["positions"].items()}
        values["marks"] = {int(k): int(v) for k, v in doc["marks"].items()}
        return cls(**values)


def in_window(timestamp_ms: int, from_ms: int, to_ms: int | None) -> bool:
    return timestamp_ms >= from_ms and (to_ms is None or timestamp_ms < to_ms)


def last_copied(tags: Iterable[tuple[int, bytes | None, bytes | None]], rid: str,
                source: str) -> dict[tuple[int, int], int]:
    """{(source partition, destination partition): last source offset copied} from the
    (destination partition, ``replay.id``, ``replay.source``) of records read past the marks."""
    last: dict[tuple[int, int], int] = {}
    wanted = rid.encode()
    for dest, found_id, tag in tags:
        if found_id != wanted:
            continue
        parsed = parse_source_tag(tag)
        if parsed is None or parsed[0] != source:
            continue
        _, partition, offset = parsed
        key = (partition, dest)
        last[key] = max(last.get(key, -1), offset)
    return last


def already_copied(last: Mapping[tuple[int, int], int], source_partition: int, dest: int, offset: int) -> bool:
    return offset <= last.get((source_partition, dest), -1)
