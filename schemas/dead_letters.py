"""Dead letters: one shape for every stage.

The value is a ``guardstream.DeadLetter`` record (the refused payload inside it,
unchanged); the headers follow Kafka Connect's ``__connect.errors.*``
convention so existing dead-letter tooling reads them (see ``HEADERS.md``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

SCHEMA = "guardstream.DeadLetter"
MAX_DETAIL = 1000


@dataclass(frozen=True)
class Source:
    """Where the refused record came from (an MQTT topic for the bridge)."""

    topic: str | None
    partition: int | None = None
    offset: int | None = None
    key: bytes | None = None


def dead_letter(stage: str, reason: str, detail: str, source: Source, payload: bytes,
                now_ms: int) -> tuple[dict[str, Any], list[tuple[str, bytes]]]:
    """(DeadLetter record, Connect-style headers) for one refused record."""
    detail = detail[:MAX_DETAIL]
    record = {"stage": stage, "reason": reason, "detail": detail, "source_topic": source.topic,
              "source_partition": source.partition, "source_offset": source.offset, "key": source.key,
              "payload": payload, "ts_ms": now_ms}
    headers = [("__connect.errors.topic", (source.topic or "").encode())]
    if source.partition is not None:
        headers.append(("__connect.errors.partition", str(source.partition).encode()))
    if source.offset is not None:
        headers.append(("__connect.errors.offset", str(source.offset).encode()))
    headers += [("__connect.errors.stage", stage.encode()),
                ("__connect.errors.exception.class.name", reason.encode()),
                ("__connect.errors.exception.message", detail.encode())]
    return record, headers
