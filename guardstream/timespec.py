"""Points in time as operators type them; pure, no I/O.

``TIME`` is one of:

* relative to now: ``-15m``, ``-2h``, ``-90s``, ``-1d``, ``-1w`` (``now`` is ``-0s``);
* ISO-8601: ``2024-05-01T10:00:00Z``, ``2024-05-01T12:00+02:00``, ``2024-05-01``
  (a time without an offset is UTC, as on the servers; a date alone is its midnight, UTC);
* epoch milliseconds, as Kafka stores timestamps: ``1714557600000``.

A relative time begins with ``-``, which argparse would take for an option:
:func:`time_values_attached` attaches it to its option (``--from=-15m``, the spelling
argparse documents for such a value) before the command line is parsed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from guardstream.errors import InputError

_RELATIVE = re.compile(r"^-(\d+(?:\.\d+)?)(ms|s|m|h|d|w)$")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 7 * 86_400_000}
# epoch milliseconds have 12 or 13 digits between 1973 and 2286; shorter numbers are more likely typos
_EPOCH_MS = re.compile(r"^\d{12,13}$")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def parse_time(text: str, now_ms: int) -> int:
    """Epoch milliseconds (UTC) of ``text``; :class:`InputError` (``bad_time``) when it is none of the forms."""
    spec = text.strip()
    if spec == "now":
        return now_ms
    relative = _RELATIVE.match(spec)
    if relative:
        return now_ms - round(float(relative[1]) * _UNIT_MS[relative[2]])
    if _EPOCH_MS.match(spec):
        return int(spec)
    try:
        moment = datetime.fromisoformat(spec.replace("z", "Z"))
    except ValueError as exc:
        raise InputError(f"{text!r} is not a time: use -15m, -2h, -1d, ISO-8601 (2024-05-01T10:00:00Z) "
                         "or epoch milliseconds", reason="bad_time") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // _MS  # exact: no float on the way


def iso(ms: int) -> str:
    """``2024-05-01T10:00:00.000Z`` for epoch milliseconds."""
    return (_EPOCH + ms * _MS).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


# The options whose value is a TIME, and the relative times among them that argparse, seeing a
# leading "-", would take for an option (a plain negative number it already takes for a value).
TIME_OPTIONS = frozenset({"--from", "--to", "--since"})
_RELATIVE_WORD = re.compile(r"-\d+(\.\d+)?(ms|s|m|h|d|w)?")


def time_values_attached(words: Sequence[str]) -> list[str]:
    """``words`` with each relative time that follows a time option attached to it: ``--from -15m``
    becomes ``--from=-15m``. Words after ``--`` are positional and stay as they are."""
    attached: list[str] = []
    i = 0
    while i < len(words):
        word = words[i]
        if word == "--":
            return attached + list(words[i:])
        if word in TIME_OPTIONS and i + 1 < len(words) and _RELATIVE_WORD.fullmatch(words[i + 1]):
            attached.append(f"{word}={words[i + 1]}")
            i += 2
        else:
            attached.append(word)
            i += 1
    return attached
