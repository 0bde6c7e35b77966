"""``guardstream health``: what to check and how results read; pure, no I/O.

A check is a name and a function that returns a one-line detail or raises
:class:`CheckFailed`; the runner (:mod:`.health`) times them, runs them
concurrently and prints one line per result. Exit code 0 when every check
passed, 1 otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from guardstream.errors import GuardstreamError

WILDCARD_HOSTS = ("", "0.0.0.0", "::", "[::]")


class CheckFailed(GuardstreamError):
    """A check's expected failure (unreachable, not ready, not migrated); ``detail`` says what."""

    reason = "check_failed"


@dataclass(frozen=True)
class Check:
    name: str
    run: Callable[[], str]  # the detail of a pass; raises CheckFailed (or another GuardstreamError)


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    detail: str
    latency_s: float


def exit_code(results: Sequence[CheckResult]) -> int:
    return 0 if results and all(r.ok for r in results) else 1


def line(result: CheckResult, name_width: int) -> str:
    """``OK   kafka     1 broker, 19 topics (12 ms)``"""
    status = "OK" if result.ok else "FAIL"
    detail = " ".join(result.detail.split())  # one line, whatever a library put in its message
    return f"{status:<4} {result.name:<{name_width}} {detail} ({result.latency_s * 1000:.0f} ms)"


def parse_endpoints(text: str) -> list[tuple[str, str]]:
    """``name=url,...`` (``GUARDSTREAM_HEALTH_ENDPOINTS``, checked by the settings) -> [(name, url)]."""
    pairs = []
    for part in (p.strip() for p in text.split(",")):
        if part:
            name, _, url = part.partition("=")
            pairs.append((name.strip(), url.strip()))
    return pairs


def readyz_url(url: str) -> str:
    """A component's base URL (``http://host:9400``) as its ``/readyz``; a URL with a path is used as given."""
    path = urlsplit(url).path
    return url if path not in ("", "/") else url.rstrip("/") + "/readyz"


def stack_endpoints(doc: Mapping[str, Any] | None, alive: Callable[[int], bool]) -> list[tuple[str, str]]:
    """[(component, /readyz URL)] from the local stack's ``stack.json``; none when the stack that
    wrote it is no longer running."""
    if not doc or not isinstance(doc.get("pid"), int) or not alive(doc["pid"]):
        return []
    host = str(doc.get("metrics_host") or "")
    host = "127.0.0.1" if host in WILDCARD_HOSTS else host
    host = f"[{host}]" if ":" in host and not host.startswith("[") else host
    ports = doc.get("metrics_ports") or {}
    return [(name, f"http://{host}:{port}/readyz") for name, port in ports.items() if isinstance(port, int) and port]


def component_checks(configured: Sequence[tuple[str, str]],
                     from_stack: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """Configured endpoints first, then the stack's components not configured under the same name."""
    names = {name for name, _ in configured}
    return [(name, readyz_url(url)) for name, url in configured] + \
           [(name, url) for name, url in from_stack if name not in names]
