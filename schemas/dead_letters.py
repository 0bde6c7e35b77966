"""Dead letters: one shape, one builder and one detail limit for every stage.

The value is a ``guardstream.DeadLetter`` record (the refused payload inside it,
unchanged); the headers follow Kafka Connect's ``__connect.errors.*``
convention so existing dead-letter tooling reads them (see ``HEADERS.md``).
The bridge, the worker, the sink and the command relay all call
:func:`dead_letter`.
"""

from __future__ import annotations

from dataclasses import dataclass

from guardstream import records

MAX_DETAIL = 1000  # DeadLetter.detail: at most 1000 characters


@dataclass(frozen=True)
class Source:
    """Where the refused record came from (an MQTT topic for the bridge)."""

    topic: str | None
    partition: int | None = None
    offset: int | None = None
    key: bytes | None = None


def cut_detail(text: str) -> str:
    """``text`` within :data:`MAX_DETAIL` characters; a cut one ends in "…", so a reader knows."""
    return text if len(text) <= MAX_DETAIL else text[:MAX_DETAIL - 1] + "…"


def dead_letter(stage: str, reason: str, detail: str, source: Source, payload: bytes,
                now_ms: int) -> tuple[records.DeadLetter, list[tuple[str, bytes]]]:
    """(DeadLetter record, Connect-style headers) for one refused record."""
    detail = cut_detail(detail)
    record = records.dead_letter(stage=stage, reason=reason, detail=detail, source_topic=source.topic,
                                 source_partition=source.partition, source_offset=source.offset, key=source.key,
                                 payload=payload, ts_ms=now_ms)
    headers = [("__connect.errors.topic", (source.topic or "").encode())]
    if source.partition is not None:
        headers.append(("__connect.errors.partition", str(source.partition).encode()))
    if source.offset is not None:
        headers.append(("__connect.errors.offset", str(source.offset).encode()))
    headers += [("__connect.errors.stage", stage.encode()),
                ("__connect.errors.exception.class.name", reason.encode()),
                ("__connect.errors.exception.message", detail.encode())]
    return record, headers
