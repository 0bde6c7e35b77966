"""Duplicate removal by message id, within a bounded window."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any


class DedupWindow:
    """Message ids seen lately, bounded by count and by age; pure (the caller passes the time).

    MQTT QoS 1 redelivers after a reconnect and producers retry, so a duplicate
    arrives within minutes of the original; ten minutes and 100,000 ids bound
    the memory while catching those. Ids are forgotten in arrival order.
    """

    def __init__(self, max_entries: int = 100_000, window_ms: int = 10 * 60_000) -> None:
        if max_entries < 1 or window_ms < 0:
            raise ValueError("max_entries must be at least 1 and window_ms not negative")
        self.max_entries = max_entries
        self.window_ms = window_ms
        self._first_seen: OrderedDict[str, int] = OrderedDict()

    def seen(self, msg_id: str, now_ms: int) -> bool:
        """True when ``msg_id`` was seen within the window; otherwise remember it and return False."""
        self._forget_older_than(now_ms - self.window_ms)
        if msg_id in self._first_seen:
            return True
        self._first_seen[msg_id] = now_ms
        if len(self._first_seen) > self.max_entries:
            self._first_seen.popitem(last=False)
        return False

    def __len__(self) -> int:
        return len(self._first_seen)

    def _forget_older_than(self, cutoff_ms: int) -> None:
        entries = self._first_seen
        while entries and next(iter(entries.values())) < cutoff_ms:
            entries.popitem(last=False)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data; ``from_dict`` rebuilds an equal window."""
        return {"max_entries": self.max_entries, "window_ms": self.window_ms,
                "entries": [[msg_id, ms] for msg_id, ms in self._first_seen.items()]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DedupWindow:
        window = cls(int(data["max_entries"]), int(data["window_ms"]))
        for msg_id, ms in data["entries"][-window.max_entries:]:
            window._first_seen[str(msg_id)] = int(ms)
        return window
