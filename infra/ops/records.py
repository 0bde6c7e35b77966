"""Kafka records as operators read them: JSON-ready views and ``key=value`` filters; pure.

A record's value is shown decoded: an Avro value (Confluent framing, schema id
known) as its record, a raw payload as text. Bytes anywhere (a key, a header, an
Avro ``bytes`` field, a raw payload) are shown as text when they are UTF-8
without control characters, and as ``{"base64": "..."}`` otherwise, so every
line stays valid JSON and no byte is lost.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from guardstream.errors import InputError

from guardstream.timespec import iso

KEY_FIELD = "key"

Headers = tuple[tuple[str, bytes | None], ...]


@dataclass(frozen=True)
class Record:
    """One Kafka record as plain data."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: Headers = ()

    def header(self, name: str) -> bytes | None:
        """The last value of header ``name``, or None."""
        found = None
        for key, value in self.headers:
            if key == name:
                found = value
        return found


@dataclass(frozen=True)
class Decoded:
    """A record's value: the Avro record and its full name, or the raw payload."""

    schema: str | None  # None: not Avro (a raw payload, or an unknown schema id)
    value: Any  # the Avro record (dict), or the payload bytes


def readable(data: bytes | None) -> str | dict[str, str] | None:
    """Text when ``data`` is printable UTF-8, else ``{"base64": ...}``."""
    if data is None:
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(data).decode()}
    if any(ord(c) < 0x20 and c not in "\t\n\r" or ord(c) == 0x7F for c in text):
        return {"base64": base64.b64encode(data).decode()}
    return text


def jsonable(value: Any) -> Any:
    """``value`` with bytes made readable and non-finite floats as text, ready for ``json.dumps``."""
    if isinstance(value, bytes | bytearray):
        return readable(bytes(value))
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def headers_view(headers: Headers) -> dict[str, Any]:
    """{name: value}; a name that repeats maps to the list of its values, in order."""
    out: dict[str, Any] = {}
    for name, value in headers:
        shown = readable(value)
        if name in out:
            previous = out[name]
            out[name] = (previous if isinstance(previous, list) else [previous]) + [shown]
        else:
            out[name] = shown
    return out


def view(record: Record, decoded: Decoded) -> dict[str, Any]:
    """The JSON object ``guardstream tail`` prints for one record."""
    return {"topic": record.topic, "partition": record.partition, "offset": record.offset,
            "timestamp": iso(record.timestamp_ms), "timestamp_ms": record.timestamp_ms,
            "key": readable(record.key), "headers": headers_view(record.headers),
            "schema": decoded.schema, "value": jsonable(decoded.value)}


def fields_of(decoded: Decoded) -> Mapping[str, Any] | None:
    """Top-level fields a filter can match: the Avro record's, or a raw payload's when it is a JSON object."""
    if decoded.schema is not None:
        return decoded.value if isinstance(decoded.value, Mapping) else None
    if not isinstance(decoded.value, bytes | bytearray):
        return None
    try:
        parsed = json.loads(decoded.value)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


# -- filters ------------------------------------------------------------------------

@dataclass(frozen=True)
class Filter:
    field: str  # a top-level value field, or "key" for the record key
    wanted: str


def parse_filters(specs: Sequence[str]) -> tuple[Filter, ...]:
    filters = []
    for spec in specs:
        name, sep, wanted = spec.partition("=")
        if not sep or not name.strip():
            raise InputError(f"filter {spec!r} is not field=value", reason="bad_filter")
        filters.append(Filter(name.strip(), wanted))
    return tuple(filters)


def matches(filters: Sequence[Filter], key: bytes | None, fields: Mapping[str, Any] | None) -> bool:
    """True when every filter matches (``key=`` the record key as text, any other name a top-level field)."""
    for f in filters:
        if f.field == KEY_FIELD:
            if key is None or key.decode("utf-8", "replace") != f.wanted:
                return False
        elif fields is None or f.field not in fields or not same(fields[f.field], f.wanted):
            return False
    return True


def same(actual: Any, wanted: str) -> bool:
    """Whether a field's value equals the text typed after ``=``: numbers compare as numbers,
    ``true``/``false``/``null`` as JSON literals, bytes and strings as text, others as compact JSON."""
    if actual is None:
        return wanted == "null"
    if isinstance(actual, bool):
        return wanted == ("true" if actual else "false")
    if isinstance(actual, int | float):
        try:
            return float(wanted) == actual
        except ValueError:
            return False
    if isinstance(actual, bytes | bytearray):
        return readable(bytes(actual)) == wanted
    if isinstance(actual, str):
        return actual == wanted
    return json.dumps(jsonable(actual), separators=(",", ":"), sort_keys=True) == wanted


# -- table lines --------------------------------------------------------------------

TABLE_COLUMNS = ["partition", "offset", "timestamp", "key", "value"]


def table_row(shown: Mapping[str, Any]) -> list[str]:
    """One row under :data:`TABLE_COLUMNS` for a record :func:`view` made."""
    key = shown["key"]
    value = shown["value"]
    return [str(shown["partition"]), str(shown["offset"]), shown["timestamp"],
            key if isinstance(key, str) else ("" if key is None else json.dumps(key)),
            value if isinstance(value, str) else json.dumps(value, separators=(",", ":"), ensure_ascii=False)]
