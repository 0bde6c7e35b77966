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


def parse(text: str, fmt: str, updated_ms: int) -> tuple[list[Device], list[Problem]]:
    """(records, problems) of a fleet file; ``fmt`` is ``csv`` or ``json``."""
    try:
        rows = _csv_rows(text) if fmt == "csv" else _json_rows(text)
    except ValueError as exc:
        return [], [Problem(0, "", "not_readable", str(exc))]
    records: list[Device] = []
    problems: list[Problem] = []
    first_row: dict[str, int] = {}
    for number, row in rows:
        built = _device(number, row, updated_ms)
        if isinstance(built, Problem):
            problems.append(built)
            continue
        seen = first_row.setdefault(built["device_id"], number)
        if seen != number:
            problems.append(Problem(number, built["device_id"], "duplicate_id", f"also in row {seen}"))
            continue
        records.append(built)
    return records, problems


def _csv_rows(text: str) -> list[tuple[int, dict[str, Any]]]:
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames:
        raise ValueError("no header line")
    out = []
    for row in reader:
        if not any((v or "").strip() for k, v in row.items() if k is not None):
            continue  # a blank line
        extra = row.pop(None, None)  # more cells than the header names
        if extra:
            row["\x00extra"] = extra
        out.append((reader.line_num, row))
    return out


def _json_rows(text: str) -> list[tuple[int, dict[str, Any]]]:
    doc = json.loads(text)
    if not isinstance(doc, list):
        raise ValueError("a JSON fleet file is an array of objects")
    return [(n, row if isinstance(row, dict) else {"\x00not_object": row}) for n, row in enumerate(doc, 1)]


def _device(number: int, raw: Mapping[str, Any], updated_ms: int) -> Device | Problem:
    row: dict[str, Any] = {}
    for name, value in raw.items():
        key = ALIASES.get(name.strip().lower(), name.strip().lower())
        if name == "\x00not_object":
            return Problem(number, "", "bad_value", "not a JSON object")
        if name == "\x00extra" or key not in FIELDS:
            what = "more cells than the header names" if name == "\x00extra" else f"unknown field {name!r}"
            return Problem(number, str(raw.get("device_id") or raw.get("id") or ""), "unknown_field", what)
        if isinstance(value, int) and not isinstance(value, bool) and key in ("device_id", "tenant", "site_id"):
            value = str(value)  # the old fleet's integer ids, as the decimal string in its topics
        row[key] = value.strip() if isinstance(value, str) else value
    device_id = row.get("device_id")
    problem = (_missing(number, row) or _bad_ids(number, row) or _bad_kind(number, row)
               or _bad_enabled(number, row))
    if problem:
        return problem
    return device(device_id=device_id, tenant=row["tenant"], kind=_kind(row), site_id=row.get("site_id") or None,
                  enabled=_enabled(row), updated_ms=updated_ms)


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
