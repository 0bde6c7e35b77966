"""Where ``tail`` starts reading each partition; pure, no I/O.

``guardstream tail TOPIC`` with no position shows the last records of each
partition (``--last N``, default 10) and stops at the current end, or follows
with ``--follow``: like Unix ``tail``, recent context first. kcat's default
(the whole topic from the beginning) would pour days of retention into a
terminal, and ``-o end`` alone prints nothing on a quiet topic.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from guardstream.errors import InputError

DEFAULT_LAST = 10

Bounds = Mapping[int, tuple[int, int]]  # {partition: (oldest offset, exact end offset)}


@dataclass(frozen=True)
class StartAt:
    """One of: the last ``last`` records, the beginning, a time, or explicit partition offsets."""

    last: int | None = DEFAULT_LAST
    beginning: bool = False
    time_ms: int | None = None
    offsets: Mapping[int, int] = field(default_factory=dict)


def parse_offset(spec: str) -> tuple[int, int]:
    """``P:O`` -> (partition, offset)."""
    partition, sep, offset = spec.partition(":")
    if not sep or not partition.strip().isdigit() or not offset.strip().isdigit():
        raise InputError(f"--offset {spec!r} is not PARTITION:OFFSET (e.g. 0:1200)", reason="bad_offset")
    return int(partition), int(offset)


def starts(start: StartAt, bounds: Bounds) -> dict[int, int]:
    """{partition: first offset to read} for every partition read (all, or those named by offsets).

    Time starts are resolved by the caller (they need the records' timestamps); here a
    ``time_ms`` start is not handled.
    """
    if start.offsets:
        unknown = sorted(set(start.offsets) - set(bounds))
        if unknown:
            raise InputError(f"no partition {unknown[0]} (the topic has {len(bounds)})", reason="bad_offset")
        return {p: min(max(o, bounds[p][0]), max(bounds[p][1], bounds[p][0])) for p, o in start.offsets.items()}
    if start.beginning:
        return {p: low for p, (low, _) in bounds.items()}
    if start.last is not None:
        return {p: max(low, end - start.last) for p, (low, end) in bounds.items()}
    raise ValueError("a time start is resolved against the records, not here")
