"""``guardstream tail``: records of a topic, decoded, one per line, safe to pipe.

Reads from where :mod:`.positions` says, stops at the partitions' exact ends as
they were when it started (or follows with ``--follow``), and prints each record
that passes the filters as a JSON line (``--format json``) or a table row.
Records come in order within each partition.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from guardstream.catalog import TOPICS
from guardstream.errors import InputError, SchemaError
from guardstream.schemas.codec import Codec
from guardstream.settings import Settings

from .positions import StartAt, starts
from .records import TABLE_COLUMNS, Decoded, Filter, Record, fields_of, matches, table_row, view
from .topic_reader import TopicReader


def is_raw_topic(topic: str) -> bool:
    try:
        return TOPICS.by_name(topic).is_raw
    except KeyError:
        return False


def decode(codec: Codec, record: Record, raw: bool) -> Decoded:
    """The record's value: Avro by its schema id; a raw topic's payload, or anything not Avro, as bytes."""
    if record.value is None or raw:
        return Decoded(None, record.value)
    try:
        name, value = codec.decode(record.value)
    except (InputError, SchemaError):
        return Decoded(None, record.value)
    return Decoded(name, value)


@dataclass(frozen=True)
class TailRequest:
    topic: str
    start: StartAt
    follow: bool = False
    filters: tuple[Filter, ...] = ()
    max_records: int | None = None


def tail(settings: Settings, codec: Codec, request: TailRequest) -> Iterator[dict[str, Any]]:
    """The views of the records to print, in order within each partition."""
    raw = is_raw_topic(request.topic)
    shown = 0
    if request.max_records == 0:
        return
    with TopicReader(settings) as reader:
        partitions = reader.partitions(request.topic)
        bounds = reader.ends(request.topic, partitions)
        if request.start.time_ms is not None:
            first = {p: reader.offset_for_time(request.topic, p, request.start.time_ms, low, end)
                     for p, (low, end) in bounds.items()}
        else:
            first = starts(request.start, bounds)
        ranges = {(request.topic, p): (o, None if request.follow else bounds[p][1]) for p, o in first.items()}
        for record in reader.read(ranges, follow=request.follow):
            decoded = decode(codec, record, raw)
            if request.filters and not matches(request.filters, record.key, fields_of(decoded)):
                continue
            yield view(record, decoded)
            shown += 1
            if request.max_records is not None and shown >= request.max_records:
                return


class LineWriter:
    """JSON lines or table rows on ``out``; colour and aligned columns only on a terminal."""

    def __init__(self, fmt: str, out: TextIO = sys.stdout, follow: bool = False) -> None:
        from rich.console import Console
        self._fmt = fmt
        self._out = out
        self._follow = follow
        self._console = Console(file=out, soft_wrap=True) if out.isatty() else None
        self._header_done = False

    def write(self, shown: dict[str, Any]) -> None:
        if self._fmt == "json":
            line = json.dumps(shown, ensure_ascii=False, separators=(",", ":"))
            if self._console is not None:
                from rich.highlighter import JSONHighlighter
                self._console.print(JSONHighlighter()(line))
            else:
                self._out.write(line + "\n")
        else:
            self._write_row(table_row(shown))
        if self._follow:
            self._out.flush()  # a follower's reader wants each record as it comes

    def _write_row(self, row: Sequence[str]) -> None:
        if self._console is None:
            if not self._header_done:
                self._out.write("\t".join(TABLE_COLUMNS) + "\n")
            self._out.write("\t".join(c.replace("\t", " ").replace("\n", " ") for c in row) + "\n")
        else:
            from rich.text import Text
            if not self._header_done:
                self._console.print(Text("  ".join(TABLE_COLUMNS), style="bold"))
            line = f"{row[0]:>3} {row[1]:>9}  {row[2]}  {row[3]:<16}  {row[4]}"
            self._console.print(Text(line[: max(40, self._console.width)], no_wrap=True))
        self._header_done = True
