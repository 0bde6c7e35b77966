"""The Avro contracts kept in ``schemas/avro``: one ``.avsc`` file per record.

Subjects follow the record-name strategy (subject = the record's full name, e.g.
``guardstream.GuardPosition``) because one priority topic carries several record
types; see the topic catalog for which records each topic holds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

SCHEMA_DIR = Path(__file__).resolve().parent / "avro"
EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"
REGISTRY_FILE = Path(__file__).resolve().parent / "registry.json"


@dataclass(frozen=True)
class Contract:
    full_name: str
    path: Path
    schema: dict[str, Any]

    @property
    def name(self) -> str:
        return self.schema["name"]


def full_name_of(schema: dict[str, Any]) -> str:
    name = schema["name"]
    namespace = schema.get("namespace")
    return name if "." in name or not namespace else f"{namespace}.{name}"


def normalise(schema: dict[str, Any]) -> str:
    """A stable text form: two schemas with equal text are the same version."""
    return json.dumps(schema, sort_keys=True, separators=(",", ":"))


def load_contracts(schema_dir: Path = SCHEMA_DIR) -> dict[str, Contract]:
    """Every ``.avsc`` below ``schema_dir`` by full name (raises on unreadable JSON)."""
    out: dict[str, Contract] = {}
    for path in sorted(schema_dir.glob("*.avsc")):
        schema = json.loads(path.read_text())
        out[full_name_of(schema)] = Contract(full_name_of(schema), path, schema)
    return out


@cache
def current_contracts() -> dict[str, Contract]:
    return load_contracts()
