"""Every worker's copy of the device registry, read from the compacted ``devices`` topic.

The feed reads the topic whole before its worker starts (:class:`CompactedFeed`), then
follows it: an import, a disable or an enable reaches every running worker within a poll,
with no restart. After each poll that changed a device it swaps in a new
:class:`~guardstream.streams.registry.Registry` in one assignment, so a batch sees one
whole version. The entries are copied on write: a poll that changes a device after the
first load copies the registry once (operators change it seldom); a lookup costs nothing
but the dictionary's.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from confluent_kafka import Message

from guardstream.catalog import TOPICS
from guardstream.errors import GuardstreamError
from guardstream.schemas.codec import Codec
from guardstream.settings import Settings
from guardstream.streams.compacted_feed import CompactedFeed
from guardstream.streams.registry import Entry, Registry, Unknown, entry_from_record

log = logging.getLogger("guardstream.devices")


def unknown_rule(settings: Settings) -> Registry:
    """An empty registry with the rule for unknown devices that ``settings`` set."""
    return Registry({}, Unknown(settings.unknown_device_policy), settings.tenant_default)


class DeviceFeed(CompactedFeed):
    def __init__(self, settings: Settings, codec: Codec) -> None:
        super().__init__(settings, TOPICS.devices.name, "guardstream-devices", log)
        self.codec = codec
        self.registry = unknown_rule(settings)
        self.errors = 0
        self._entries: dict[str, Entry] = {}
        self._shared = False  # True once self._entries is the registry's: change a copy then

    def apply(self, records: Iterable[Message]) -> bool:
        changes: dict[str, Entry | None] = {}
        for message in records:
            device_id = (message.key() or b"").decode("utf-8", "replace")
            try:
                value = message.value()
                changes[device_id] = None if value is None else entry_from_record(self.codec.decode(value)[1])
            except GuardstreamError as exc:
                # a bad registry record never stops the worker: logged and counted, the device's
                # previous entry (if any) stays in force
                self.errors += 1
                log.error("device %s at offset %d left as it was: %s: %s", device_id, message.offset(),
                          exc.reason, exc.detail)
        if not changes:
            return False
        if self._shared:
            self._entries, self._shared = dict(self._entries), False
        for device_id, entry in changes.items():
            if entry is None:
                self._entries.pop(device_id, None)
            else:
                self._entries[device_id] = entry
        return True

    def changed(self) -> None:
        current = self.registry
        self.registry = Registry(self._entries, current.unknown, current.default_tenant)  # one assignment
        self._shared = True
