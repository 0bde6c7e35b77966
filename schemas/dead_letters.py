"""Dead letters: one shape, one builder and one detail limit for every stage.

The value is a ``guardstream.DeadLetter`` record (the refused payload inside it,
unchanged up to :data:`MAX_PAYLOAD` bytes); the headers follow Kafka Connect's ``__connect.errors.*``
convention so existing dead-letter tooling reads them (see ``HEADERS.md``).
The bridge, the worker, the sink and the command relay all call
:func:`dead_letter`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from guardstream import records

MAX_DETAIL = 1000  # DeadLetter.detail: at most 1000 characters
# The most of a refused payload a dead letter carries. A dead letter must always fit the
# producer's limit (``message.max.bytes``, 1,000,000 by default, headers and Avro framing
# included): one that does not is refused by the client, and a refusal of the refusal has
# nowhere left to go. A longer payload is cut, and the cut is said in the detail and in the
# ``guardstream.payload.*`` headers (its whole length and SHA-256), so it can still be matched
# with what the device sent.
MAX_PAYLOAD = 256 * 1024


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


@dataclass(frozen=True)
class Cut:
    """What a dead letter keeps of a payload longer than it may carry."""

    kept: bytes
    length: int  # of the whole payload
    sha256: str  # of the whole payload, hex

    @property
    def note(self) -> str:
        return f" [payload cut to {len(self.kept)} of {self.length} bytes, sha256 {self.sha256}]"


def cut_payload(payload: bytes, limit: int = MAX_PAYLOAD) -> Cut | None:
    """None when ``payload`` fits in a dead letter whole; else what is kept of it."""
    if len(payload) <= limit:
        return None
    return Cut(payload[:limit], len(payload), hashlib.sha256(payload).hexdigest())


def dead_letter(stage: str, reason: str, detail: str, source: Source, payload: bytes,
                now_ms: int, max_payload: int = MAX_PAYLOAD) -> tuple[records.DeadLetter, list[tuple[str, bytes]]]:
    """(DeadLetter record, Connect-style headers) for one refused record; a payload over
    ``max_payload`` bytes is cut, and the cut recorded (see :data:`MAX_PAYLOAD`)."""
    cut = cut_payload(payload, max_payload)
    if cut is None:
        detail = cut_detail(detail)
    else:
        payload = cut.kept
        detail = cut_detail(detail)[:MAX_DETAIL - len(cut.note)] + cut.note  # the note is never cut off
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
    if cut is not None:
        headers += [("guardstream.payload.bytes", str(cut.length).encode()),
                    ("guardstream.payload.sha256", cut.sha256.encode())]
    return record, headers
