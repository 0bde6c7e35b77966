"""Small JSON files under ``GUARDSTREAM_STATE_DIR`` that operator commands resume from.

Written atomically (a temporary file, fsync, rename), so a crash leaves the
previous version or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from guardstream.errors import InputError


def load_json(path: Path) -> dict[str, Any] | None:
    """The document at ``path``, or None when there is none."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise InputError(f"{path}: unreadable state file ({exc}); delete it to start afresh",
                         reason="bad_state_file") from exc
    if not isinstance(doc, dict):
        raise InputError(f"{path}: unreadable state file; delete it to start afresh", reason="bad_state_file")
    return doc


def save_json(path: Path, doc: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with temporary.open("w") as handle:
        json.dump(doc, handle, indent=1, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
