"""Dead letters for operators: selection, summary, and how each is re-injected; pure, no I/O.

Every stage writes ``guardstream.DeadLetter`` records (``schemas/dead_letters.py``):
the bridge and the command relay to ``dlq.bridge``, the stream worker to
``dlq.validate``, the sink to ``dlq.sink``. ``stage`` in the record tells them
apart, so ``--stage`` picks the topic and filters on it.

Re-injection puts a letter's original payload back where it came from:

* ``bridge``: the source is an MQTT topic, so the payload is published there again
  (QoS 1, never retained) and the bridge takes it anew, under the rules in force now;
* other stages: the source is a Kafka topic; the record goes back with its key and
  its original headers (read from the source record while the topic still holds
  it, else rebuilt: ``msg.id`` from the source position, as the worker names a
  record without one, so a repeated re-injection keeps its event ids).

Each re-injected record carries ``dlq.replayed_from`` = ``dlq topic/partition/offset``
and a ``msg.id`` of its own derived from the letter (``dlq:`` + that position): the
original id was seen by the worker's duplicate filter when the record was refused,
so keeping it would drop the re-injected record as a repeat. Re-injecting the same
letter twice (a crash inside a chunk) gives the same id, which the filter does drop.
If the record is refused again, its new letter can be re-injected in turn.
Letters already re-injected (the checkpoint of :class:`Replayed`) are not re-injected
again, nor are two letters of one source record within one run.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from guardstream.catalog import TOPICS

from .records import Record, readable
from guardstream.timespec import iso

REPLAYED_FROM = "dlq.replayed_from"
MSG_ID = "msg.id"
MQTT_STAGE = "bridge"
STAGES = ("bridge", "commands", "validate", "sink", "notify")
# Their letters hold a notification that was never delivered, not a record to put back in a topic.
NOT_REPLAYABLE = frozenset({"notify"})
SUMMARY_COLUMNS = ["stage", "reason", "count", "first", "last"]
LETTER_COLUMNS = ["dlq", "time", "stage", "reason", "source", "key", "detail", "payload"]
PREVIEW_CHARS = 80

Headers = list[tuple[str, bytes | None]]


def topic_of_stage(stage: str) -> str:
    """The dead-letter topic a stage writes to."""
    return {"bridge": TOPICS.dlq_bridge, "commands": TOPICS.dlq_bridge, "validate": TOPICS.dlq_validate,
            "sink": TOPICS.dlq_sink, "notify": TOPICS.dlq_notify}[stage].name


def topics_for(stage: str | None) -> list[str]:
    if stage is not None:
        return [topic_of_stage(stage)]
    return [TOPICS.dlq_bridge.name, TOPICS.dlq_validate.name, TOPICS.dlq_sink.name, TOPICS.dlq_notify.name]


@dataclass(frozen=True)
class Letter:
    at: Record  # the dead-letter record itself (topic, partition, offset, headers)
    value: Mapping[str, Any]  # the decoded guardstream.DeadLetter

    @property
    def position(self) -> str:
        return f"{self.at.topic}/{self.at.partition}/{self.at.offset}"

    @property
    def source(self) -> str:
        v = self.value
        if v.get("source_partition") is None:
            return v.get("source_topic") or ""
        return f"{v.get('source_topic')}[{v['source_partition']}]@{v.get('source_offset')}"


def selected(letter: Letter, stage: str | None, reason: str | None, since_ms: int | None) -> bool:
    v = letter.value
    return ((stage is None or v["stage"] == stage) and (reason is None or v["reason"] == reason)
            and (since_ms is None or v["ts_ms"] >= since_ms))


def summary_rows(letters: Iterable[Letter]) -> list[list[str]]:
    """One row per (stage, reason): count, first and last time refused."""
    groups: dict[tuple[str, str], list[int]] = {}
    for letter in letters:
        key = (letter.value["stage"], letter.value["reason"])
        count, first, last = groups.get(key, [0, letter.value["ts_ms"], letter.value["ts_ms"]])
        groups[key] = [count + 1, min(first, letter.value["ts_ms"]), max(last, letter.value["ts_ms"])]
    return [[stage, reason, str(count), iso(first), iso(last)]
            for (stage, reason), (count, first, last) in sorted(groups.items())]


def preview(payload: bytes | None, chars: int = PREVIEW_CHARS) -> str:
    shown = readable(payload)
    text = shown if isinstance(shown, str) else ("" if shown is None else f"base64:{shown['base64']}")
    text = " ".join(text.split())
    return text if len(text) <= chars else text[:chars - 1] + "…"


def letter_row(letter: Letter) -> list[str]:
    v = letter.value
    key = readable(v.get("key"))
    return [letter.position, iso(v["ts_ms"]), v["stage"], v["reason"], letter.source,
            key if isinstance(key, str) else ("" if key is None else f"base64:{key['base64']}"),
            " ".join(str(v["detail"]).split()), preview(v.get("payload"))]


# -- what was re-injected already ---------------------------------------------------------

class Replayed:
    """Offsets of re-injected letters per (dlq topic, partition), kept as inclusive ranges."""

    def __init__(self, ranges: Mapping[str, Sequence[Sequence[int]]] | None = None) -> None:
        self._ranges: dict[str, list[list[int]]] = {k: [list(r) for r in v] for k, v in (ranges or {}).items()}

    @staticmethod
    def _key(topic: str, partition: int) -> str:
        return f"{topic}/{partition}"

    def __contains__(self, at: tuple[str, int, int]) -> bool:
        topic, partition, offset = at
        return any(lo <= offset <= hi for lo, hi in self._ranges.get(self._key(topic, partition), ()))

    def add(self, topic: str, partition: int, offset: int) -> None:
        if (topic, partition, offset) in self:
            return
        ranges = self._ranges.setdefault(self._key(topic, partition), [])
        ranges.append([offset, offset])
        ranges.sort()
        merged: list[list[int]] = []
        for lo, hi in ranges:
            if merged and lo <= merged[-1][1] + 1:
                merged[-1][1] = max(merged[-1][1], hi)
            else:
                merged.append([lo, hi])
        self._ranges[self._key(topic, partition)] = merged

    def to_json(self) -> dict[str, Any]:
        return {"replayed": self._ranges}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any] | None) -> Replayed:
        return cls((doc or {}).get("replayed"))


# -- re-injection -------------------------------------------------------------------------

@dataclass(frozen=True)
class Reinjection:
    letter: Letter
    via_mqtt: bool
    topic: str
    key: bytes | None
    payload: bytes
    headers: Headers  # Kafka headers, or MQTT 5 user properties (with mqtt.content_type apart)


@dataclass(frozen=True)
class Skip:
    letter: Letter
    why: str  # already_replayed, same_source, no_source


def source_position(letter: Letter) -> tuple[str, int, int] | None:
    v = letter.value
    if v.get("source_topic") is None or v.get("source_partition") is None or v.get("source_offset") is None:
        return None
    return v["source_topic"], v["source_partition"], v["source_offset"]


def plan(letters: Iterable[Letter], replayed: Replayed,
         originals: Mapping[tuple[str, int, int], Headers]) -> list[Reinjection | Skip]:
    """What to do with each selected letter, in order. ``originals``: the headers of source records
    still in Kafka, by (topic, partition, offset)."""
    out: list[Reinjection | Skip] = []
    seen_sources: set[tuple[str, int, int] | tuple[str, bytes]] = set()
    for letter in letters:
        v = letter.value
        if not v.get("source_topic"):
            out.append(Skip(letter, "no_source"))
            continue
        source = source_position(letter) or (v["source_topic"], bytes(v["payload"]))
        if (letter.at.topic, letter.at.partition, letter.at.offset) in replayed:
            seen_sources.add(source)  # a later letter of the same record stays skipped in every run
            out.append(Skip(letter, "already_replayed"))
            continue
        if source in seen_sources:
            out.append(Skip(letter, "same_source"))
            continue
        seen_sources.add(source)
        out.append(reinjection(letter, originals))
    return out


def reinjection(letter: Letter, originals: Mapping[tuple[str, int, int], Headers]) -> Reinjection:
    v = letter.value
    tag = (REPLAYED_FROM, letter.position.encode())
    if v["stage"] == MQTT_STAGE:
        # the bridge's letters keep the message's MQTT headers beside the __connect.errors ones
        kept = [(k, val) for k, val in letter.at.headers if k == "mqtt.content_type" or k.startswith("mqtt.user.")]
        return Reinjection(letter, True, v["source_topic"], None, bytes(v["payload"]), kept + [tag])
    position = source_position(letter)
    original = originals.get(position) if position else None
    headers = [(k, val) for k, val in original or () if k not in (REPLAYED_FROM, MSG_ID)]
    key = v.get("key")
    return Reinjection(letter, False, v["source_topic"], bytes(key) if key is not None else None,
                       bytes(v["payload"]), headers + [(MSG_ID, replayed_msg_id(letter)), tag])


def replayed_msg_id(letter: Letter) -> bytes:
    """The ``msg.id`` of a re-injected letter: new to the duplicate filter, the same on every attempt."""
    return f"dlq:{letter.position}".encode()


# -- checkpoints bound to the data they describe ----------------------------------------

def binding_changed(saved: Mapping[str, Any] | None, current: Mapping[str, Any]) -> bool:
    """Whether a checkpoint recorded against ``saved`` (cluster and topic ids) describes other data
    than ``current``: a topic recreated under the same name (a restarted in-memory broker, a deleted
    topic) starts its offsets again, and an old checkpoint would skip its new records. A checkpoint
    written before bindings were recorded (``saved`` None) is taken as it is."""
    if saved is None:
        return False
    if saved.get("cluster") != current.get("cluster"):
        return True
    saved_topics, current_topics = saved.get("topics") or {}, current.get("topics") or {}
    return any(saved_topics.get(t) != current_topics.get(t) for t in set(saved_topics) | set(current_topics))
