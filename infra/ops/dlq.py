"""``guardstream dlq inspect`` and ``dlq replay``: read dead letters, put their payloads back.

Reads the dead-letter topics from ``--since`` (or their beginning) to their exact
ends, decodes each ``guardstream.DeadLetter`` and keeps those selected. ``replay``
re-injects them as :mod:`.dead_letters` plans it, acknowledged in chunks, and
records the dead letters it re-injected in
``GUARDSTREAM_STATE_DIR/dlq-replay/<dlq topic>.json`` after each chunk, bound to the
cluster and topic ids it read them from, so a rerun re-injects only what is new
(and a checkpoint of a dead-letter topic since recreated is set aside, not used) (a crash inside a chunk may re-inject that
chunk again; downstream stages drop repeated ``msg.id``/event ids).
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import KafkaError, KafkaException, Producer

from guardstream.errors import InputError, SchemaError, UnavailableError
from guardstream.kafka import produce, producer_config
from guardstream.records import DEAD_LETTER
from guardstream.schemas.codec import Codec
from guardstream.settings import Settings

from .dead_letters import (MQTT_STAGE, NOT_REPLAYABLE, Headers, Letter, Reinjection, Replayed, Skip, binding_changed,
                           plan, selected,
                           source_position, topics_for)
from .state_files import load_json, save_json
from .topic_reader import TopicReader

CHUNK = 500


@dataclass(frozen=True)
class Selection:
    stage: str | None = None
    reason: str | None = None
    since_ms: int | None = None


@dataclass
class Inspection:
    count: int = 0
    letters: list[Letter] = field(default_factory=list)  # every selected letter (summary)
    undecodable: int = 0  # records of the dead-letter topics that are no DeadLetter


def read_letters(settings: Settings, codec: Codec, selection: Selection, inspection: Inspection) -> Iterator[Letter]:
    """The selected letters of the stage's topic(s), oldest first per partition."""
    with TopicReader(settings) as reader:
        for topic in topics_for(selection.stage):
            try:
                partitions = reader.partitions(topic)
            except InputError:
                continue  # topics not applied yet: no dead letters either
            ranges = {}
            for p, (low, end) in reader.ends(topic, partitions).items():
                start = low if selection.since_ms is None else \
                    reader.offset_for_time(topic, p, selection.since_ms, low, end)
                ranges[(topic, p)] = (start, end)
            for record in reader.read(ranges):
                try:
                    name, value = codec.decode(record.value or b"")
                except (InputError, SchemaError):
                    inspection.undecodable += 1
                    continue
                if name != DEAD_LETTER:
                    inspection.undecodable += 1
                    continue
                letter = Letter(record, value)
                if selected(letter, selection.stage, selection.reason, selection.since_ms):
                    inspection.count += 1
                    yield letter


def inspect(settings: Settings, codec: Codec, selection: Selection,
            max_records: int) -> tuple[Inspection, list[Letter]]:
    """(every selected letter, for the summary; the latest ``max_records`` of them, to show)."""
    inspection = Inspection()
    latest: deque[Letter] = deque(maxlen=max(0, max_records))
    for letter in read_letters(settings, codec, selection, inspection):
        inspection.letters.append(letter)
        latest.append(letter)
    return inspection, list(latest)


# -- replay ---------------------------------------------------------------------------------

@dataclass
class ReplayOutcome:
    planned: list[Reinjection | Skip]
    sent: Counter = field(default_factory=Counter)  # by target topic
    skipped: Counter = field(default_factory=Counter)  # by why
    checkpoint: Path | None = None
    set_aside: bool = False  # the checkpoint was of an earlier incarnation of the topic: not used


def checkpoint_path(settings: Settings, dlq_topic: str) -> Path:
    return settings.state_dir / "dlq-replay" / f"{dlq_topic}.json"


def replay(settings: Settings, codec: Codec, selection: Selection, *, dry_run: bool = False) -> ReplayOutcome:
    if selection.stage is None:
        raise InputError("dlq replay needs --stage", reason="bad_stage")
    if selection.stage in NOT_REPLAYABLE:
        raise InputError(f"dlq replay: {selection.stage} letters are undelivered notifications, not records to put "
                         "back; the notifications table holds them (status 'dead')", reason="bad_stage")
    dlq_topic = topics_for(selection.stage)[0]
    path = checkpoint_path(settings, dlq_topic)
    with TopicReader(settings) as reader:
        bound_to = reader.identity([dlq_topic])
    doc = load_json(path)
    set_aside = doc is not None and binding_changed(doc.get("bound_to"), bound_to)
    replayed = Replayed() if set_aside else Replayed.from_json(doc)
    letters = list(read_letters(settings, codec, selection, Inspection()))
    originals = _original_headers(settings, [lt for lt in letters if (lt.at.topic, lt.at.partition, lt.at.offset)
                                             not in replayed])
    outcome = ReplayOutcome(plan(letters, replayed, originals), checkpoint=path, set_aside=set_aside)
    for step in outcome.planned:
        if isinstance(step, Skip):
            outcome.skipped[step.why] += 1
    todo = [s for s in outcome.planned if isinstance(s, Reinjection)]
    if dry_run or not todo:
        if dry_run:
            outcome.sent.update(s.topic for s in todo)
        return outcome
    sender = _MqttSender(settings) if any(s.via_mqtt for s in todo) else None
    producer = _KafkaSender(settings) if any(not s.via_mqtt for s in todo) else None
    try:
        for first in range(0, len(todo), CHUNK):
            chunk = todo[first:first + CHUNK]
            for step in chunk:
                (sender if step.via_mqtt else producer).send(step)  # type: ignore[union-attr]
            for each in (sender, producer):
                if each is not None:
                    each.confirm()
            for step in chunk:
                replayed.add(step.letter.at.topic, step.letter.at.partition, step.letter.at.offset)
                outcome.sent[step.topic] += 1
            save_json(path, {**replayed.to_json(), "bound_to": bound_to})
    finally:
        if sender is not None:
            sender.close()
    return outcome


def _original_headers(settings: Settings, letters: list[Letter]) -> dict[tuple[str, int, int], Headers]:
    """Headers of the source records still in Kafka (same payload), by position."""
    found: dict[tuple[str, int, int], Headers] = {}
    with TopicReader(settings) as reader:
        bounds: dict[str, dict[int, tuple[int, int]]] = {}
        for letter in letters:
            position = source_position(letter)
            if position is None or letter.value["stage"] == MQTT_STAGE:
                continue
            topic, partition, offset = position
            if topic not in bounds:
                try:
                    bounds[topic] = reader.ends(topic, reader.partitions(topic))
                except InputError:
                    bounds[topic] = {}
            low, end = bounds[topic].get(partition, (0, 0))
            if not low <= offset < end:
                continue
            record = reader.record_at(topic, partition, offset)
            if record is not None and record.offset == offset and record.value == bytes(letter.value["payload"]):
                found[position] = list(record.headers)
    return found


class _KafkaSender:
    def __init__(self, settings: Settings) -> None:
        self.failures: list[str] = []
        self.producer = Producer(producer_config(settings, "guardstream-dlq-replay"))

    def send(self, step: Reinjection) -> None:
        try:
            produce(self.producer, step.topic, step.payload, step.key, headers=step.headers,
                    on_delivery=self._delivered)
        except KafkaException as exc:
            raise UnavailableError(f"re-injecting into {step.topic}: {exc}") from exc

    def _delivered(self, error: KafkaError | None, _message: object) -> None:
        if error is not None:
            self.failures.append(error.str())

    def confirm(self) -> None:
        left = self.producer.flush(60)
        if left or self.failures:
            raise UnavailableError(f"{left} re-injected record(s) unacknowledged, failures: {self.failures[:3]}; "
                                   "the chunk is not recorded, run again")


class _MqttSender:
    """Publishes at QoS 1 and waits for each PUBACK before the chunk counts as re-injected."""

    def __init__(self, settings: Settings, timeout_s: float = 10.0) -> None:
        import os
        from guardstream.connectors.mqtt import connect, endpoint, is_v5, new_client
        self._v5 = is_v5(settings)
        self._timeout_s = timeout_s
        self._pending: list = []
        connected = threading.Event()
        self.client = new_client(settings, f"guardstream-dlq-replay-{os.getpid()}")
        self.client.on_connect = lambda *args: connected.set()
        self.client.max_inflight_messages_set(100)
        connect(self.client, settings)
        self.client.loop_start()
        if not connected.wait(timeout_s):
            self.close()
            ep = endpoint(settings)
            raise UnavailableError(f"MQTT broker {ep.host}:{ep.port}: no connection within {timeout_s:g}s")

    def send(self, step: Reinjection) -> None:
        properties = None
        if self._v5:
            from paho.mqtt.packettypes import PacketTypes
            from paho.mqtt.properties import Properties
            properties = Properties(PacketTypes.PUBLISH)
            user = []
            for name, value in step.headers:
                text = (value or b"").decode("utf-8", "replace")
                if name == "mqtt.content_type":
                    properties.ContentType = text
                else:
                    user.append((name.removeprefix("mqtt.user."), text))
            properties.UserProperty = user
        self._pending.append(self.client.publish(step.topic, step.payload, qos=1, retain=False,
                                                 properties=properties))

    def confirm(self) -> None:
        pending, self._pending = self._pending, []
        for info in pending:
            try:
                info.wait_for_publish(self._timeout_s)
            except (RuntimeError, ValueError) as exc:
                raise UnavailableError(f"MQTT publish not confirmed: {exc}; the chunk is not recorded") from exc
            if not info.is_published():
                raise UnavailableError("MQTT publish not confirmed in time; the chunk is not recorded, run again")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
