"""Per-device state that survives restarts: kept in memory, logged to a compacted topic.

Every change is written to the worker-state changelog (key
``store|raw topic|device``, JSON value, partition = the raw record's
partition) in the same flush as the batch's outputs, before the batch's
offsets are committed. When partitions are assigned, their state is read back
from the changelog partitions of the same numbers: a restarted or rebalanced
worker continues where the previous owner stopped.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

from confluent_kafka import Consumer, Message, Producer

from guardstream.catalog import TOPICS
from guardstream.kafka import produce
from guardstream.settings import Settings
from guardstream.streams.geofence_state import DeviceState
from guardstream.streams.rules import RuleState
from guardstream.topic_end import ReadToEnd, reader_config

# store name -> the state class (with to_dict / from_dict) it holds per device
STORES: dict[str, Any] = {"geofence": DeviceState, "rules": RuleState}


def changelog_key(store: str, topic: str, device: str) -> bytes:
    return f"{store}|{topic}|{device}".encode()


def parse_key(key: bytes) -> tuple[str, str, str] | None:
    parts = key.decode("utf-8", "replace").split("|", 2)
    return (parts[0], parts[1], parts[2]) if len(parts) == 3 else None


class StateStore:
    def __init__(self, settings: Settings, producer: Producer | None) -> None:
        self.settings = settings
        self.producer = producer
        self.topic = TOPICS.worker_state.name
        # store -> device -> state object; the raw (topic, partition) each device came from
        self.values: dict[str, dict[str, Any]] = {s: {} for s in STORES}
        self.origin: dict[tuple[str, str], tuple[str, int]] = {}
        self._staged: set[tuple[str, str]] = set()  # changed since the last checkpoint

    def put(self, store: str, device: str, value: Any, topic: str, partition: int,
            on_delivery: Callable[[Any, Any], None] | None = None) -> None:
        self.values[store][device] = value
        self.origin[(store, device)] = (topic, partition)
        body = json.dumps(value.to_dict(), separators=(",", ":")).encode()
        produce(self.producer, self.topic, body, changelog_key(store, topic, device), partition=partition,
                on_delivery=on_delivery)

    def stage(self, store: str, device: str, value: Any, topic: str, partition: int) -> None:
        """Change the state in memory now; it reaches the changelog with :meth:`write_staged`."""
        self.values[store][device] = value
        self.origin[(store, device)] = (topic, partition)
        self._staged.add((store, device))

    def write_staged(self, on_delivery: Callable[[Any, Any], None] | None = None) -> int:
        """Write every staged change (once per device, however often it changed); returns how many."""
        staged, self._staged = self._staged, set()
        written = 0
        for store, device in staged:
            value = self.values[store].get(device)
            if value is not None:  # None: its partition went to another worker meanwhile
                topic, partition = self.origin[(store, device)]
                self.put(store, device, value, topic, partition, on_delivery)
                written += 1
        return written

    def take_staged(self) -> list[tuple[bytes, bytes, int]]:
        """Every staged change as a changelog record (key, value, partition), once per device,
        for a caller writing with a producer of its own; the staging is emptied."""
        staged, self._staged = self._staged, set()
        out = []
        for store, device in staged:
            value = self.values[store].get(device)
            if value is not None:  # None: its partition went to another worker meanwhile
                topic, partition = self.origin[(store, device)]
                body = json.dumps(value.to_dict(), separators=(",", ":")).encode()
                out.append((changelog_key(store, topic, device), body, partition))
        return out

    def evict(self, devices: Iterable[str], on_delivery: Callable[[Any, Any], None] | None = None) -> int:
        """Drop the state of ``devices`` here and in the changelog (a tombstone per store entry, which
        :meth:`restore` reads as gone); returns how many tombstones were written."""
        tombstones = self.drop(devices)
        for key, _, partition in tombstones:
            produce(self.producer, self.topic, None, key, partition=partition, on_delivery=on_delivery)
        return len(tombstones)

    def drop(self, devices: Iterable[str]) -> list[tuple[bytes, None, int]]:
        """Drop the state of ``devices`` here; the changelog tombstones (key, None, partition) that
        drop it there too, for the caller to write (:meth:`evict` writes them itself)."""
        tombstones: list[tuple[bytes, None, int]] = []
        for device in devices:
            for store in STORES:
                self.values[store].pop(device, None)
                self._staged.discard((store, device))
                origin = self.origin.pop((store, device), None)
                if origin is not None:
                    tombstones.append((changelog_key(store, origin[0], device), None, origin[1]))
        return tombstones

    def forget(self, assigned: Iterable[tuple[str, int]]) -> None:
        """Drop what belongs to partitions no longer assigned (kept ones stay)."""
        keep = set(assigned)
        for (store, device), origin in list(self.origin.items()):
            if origin not in keep:
                del self.origin[(store, device)]
                self.values[store].pop(device, None)

    def restore(self, assigned: Iterable[tuple[str, int]], timeout_s: float = 60.0) -> int:
        """Read the changelog for newly assigned raw partitions; returns entries restored.
        :class:`UnavailableError` when the changelog is not read to its end within ``timeout_s``."""
        wanted = set(assigned)
        partitions = sorted({p for _, p in wanted})
        if not partitions:
            return 0
        consumer = Consumer(reader_config(self.settings, "guardstream-worker-restore"))
        try:
            restored = 0
            for records in ReadToEnd(consumer, {(self.topic, p): 0 for p in partitions}, timeout_s):
                restored += sum(self._restore_one(record, wanted) for record in records)
            return restored
        finally:
            consumer.close()

    def _restore_one(self, record: Message, wanted: set[tuple[str, int]]) -> bool:
        """Apply one changelog record of the wanted raw partitions; False for any other record."""
        parsed = parse_key(record.key() or b"")
        if parsed is None or (parsed[1], record.partition()) not in wanted or parsed[0] not in STORES:
            return False
        store, topic, device = parsed
        if record.value() is None:
            self.values[store].pop(device, None)
            self.origin.pop((store, device), None)
        else:
            self.values[store][device] = STORES[store].from_dict(json.loads(record.value()))
            self.origin[(store, device)] = (topic, record.partition())
        return True
