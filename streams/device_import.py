"""A fleet file in, Device records and the rows that are wrong out; pure.

``guardstream devices import FILE`` reads CSV (a header line, then one device per line) or
JSON (an array of objects) with these fields:

    device_id  required; 1-128 of A-Z a-z 0-9 _ . : - (the ids the bridge takes in MQTT topics);
               ``id`` is taken for it; a JSON integer is its decimal string
    tenant     required, per row; 1-64 of A-Z a-z 0-9 _ . -
    kind       GUARD, SENSOR or DEVICE (any case); default DEVICE
    site_id    optional; ``site`` is taken for it
    enabled    true/false, yes/no, 1/0; default true

Every row is checked before anything is written; a file with a bad row writes nothing. Each
problem names its row (CSV: the line number, the header being line 1; JSON: the element's
position, from 1) and a reason code of :data:`REASONS`.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from guardstream.records import DEVICE, Device, device
from guardstream.schemas.contracts import current_contracts
from guardstream.streams.validation import DEVICE_ID, TENANT_ID

REASONS = frozenset({"not_readable", "missing_field", "bad_id", "unknown_kind", "bad_value", "duplicate_id",
                     "unknown_field"})
FIELDS = ("device_id", "tenant", "kind", "site_id", "enabled")
ALIASES = {"id": "device_id", "site": "site_id"}
KINDS = next(tuple(f["type"]["symbols"]) for f in current_contracts()[DEVICE].schema["fields"] if f["name"] == "kind")
_TRUE, _FALSE = ("true", "yes", "1", "on"), ("false", "no", "0", "off")


@dataclass(frozen=True)
class Problem:
    row: int  # CSV: line number (header = 1); JSON: position in the array, from 1; 0: the whole file
    device_id: str
    reason: str
    detail: str


@dataclass(frozen=True)
class Row:
    number: int
    fields: Mapping[str, Any] | None  # None: a JSON element that is not an object
    surplus: bool = False  # a CSV line with more cells than the header names


def parse(text: str, fmt: str, updated_ms: int) -> tuple[list[Device], list[Problem]]:
    """(records, problems) of a fleet file; ``fmt`` is ``csv`` or ``json``."""
    try:
        rows = _csv_rows(text) if fmt == "csv" else _json_rows(text)
    except (ValueError, csv.Error, RecursionError) as exc:
        return [], [Problem(0, "", "not_readable", str(exc)[:200])]
    records: list[Device] = []
    problems: list[Problem] = []
    first_row: dict[str, int] = {}
    for row in rows:
        built = _device(row, updated_ms)
        if isinstance(built, Problem):
            problems.append(built)
            continue
        seen = first_row.setdefault(built["device_id"], row.number)
        if seen != row.number:
            problems.append(Problem(row.number, built["device_id"], "duplicate_id", f"also in row {seen}"))
            continue
        records.append(built)
    return records, problems


def _csv_rows(text: str) -> list[Row]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if not reader.fieldnames:
        raise ValueError("no header line")
    out = []
    for fields in reader:
        surplus = fields.pop(None, None)  # DictReader's key for cells past the header
        if not surplus and not any((v or "").strip() for v in fields.values()):
            continue  # a blank line
        out.append(Row(reader.line_num, fields, bool(surplus)))
    return out


def _json_rows(text: str) -> list[Row]:
    doc = json.loads(text)
    if not isinstance(doc, list):
        raise ValueError("a JSON fleet file is an array of objects")
    return [Row(n, element if isinstance(element, dict) else None) for n, element in enumerate(doc, 1)]


def _device(raw: Row, updated_ms: int) -> Device | Problem:
    number = raw.number
    if raw.fields is None:
        return Problem(number, "", "bad_value", "not a JSON object")
    named = str(raw.fields.get("device_id") or raw.fields.get("id") or "")
    if raw.surplus:
        return Problem(number, named, "unknown_field", "more cells than the header names")
    row: dict[str, Any] = {}
    for name, value in raw.fields.items():
        if not name.strip() and value in (None, ""):
            continue  # an unnamed, empty column (a spreadsheet's trailing comma)
        key = ALIASES.get(name.strip().lower(), name.strip().lower())
        if key not in FIELDS:
            return Problem(number, named, "unknown_field", f"unknown field {name!r}")
        if isinstance(value, int) and not isinstance(value, bool) and key in ("device_id", "tenant", "site_id"):
            value = str(value)  # the old fleet's integer ids, as the decimal string in its topics
        row[key] = value.strip() if isinstance(value, str) else value
    problem = (_missing(number, row) or _bad_ids(number, row) or _bad_kind(number, row)
               or _bad_enabled(number, row))
    if problem:
        return problem
    return device(device_id=row["device_id"], tenant=row["tenant"], kind=_kind(row),
                  site_id=row.get("site_id") or None, enabled=_enabled(row), updated_ms=updated_ms)


def _missing(number: int, row: Mapping[str, Any]) -> Problem | None:
    for name in ("device_id", "tenant"):
        if row.get(name) in (None, ""):
            return Problem(number, str(row.get("device_id") or ""), "missing_field", f"no {name}")
    return None


def _bad_ids(number: int, row: Mapping[str, Any]) -> Problem | None:
    checks: Iterable[tuple[str, Any]] = (("device_id", DEVICE_ID), ("tenant", TENANT_ID), ("site_id", TENANT_ID))
    for name, pattern in checks:
        value = row.get(name)
        if value in (None, "") and name == "site_id":
            continue
        if not isinstance(value, str) or not pattern.fullmatch(value) or value in (".", ".."):
            return Problem(number, str(row.get("device_id") or ""), "bad_id", f"{name} {value!r} is not a plain id")
    return None


def _kind(row: Mapping[str, Any]) -> str:
    kind = row.get("kind")
    return "DEVICE" if kind in (None, "") else str(kind).strip().upper()


def _bad_kind(number: int, row: Mapping[str, Any]) -> Problem | None:
    if not isinstance(row.get("kind", ""), (str, type(None))) or _kind(row) not in KINDS:
        return Problem(number, row["device_id"], "unknown_kind",
                       f"kind {row.get('kind')!r} is not one of {', '.join(KINDS)}")
    return None


def _enabled(row: Mapping[str, Any]) -> bool:
    value = row.get("enabled")
    if value is None or value == "":
        return True
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in _TRUE


def _bad_enabled(number: int, row: Mapping[str, Any]) -> Problem | None:
    value = row.get("enabled")
    if value is None or value == "" or isinstance(value, bool) or str(value).strip().lower() in _TRUE + _FALSE:
        return None
    return Problem(number, row["device_id"], "bad_value", f"enabled {value!r} is not true or false")
