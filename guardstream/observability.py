"""``/metrics``, ``/healthz`` and ``/readyz`` for every component, served the same way.

Each component declares its metrics once, in its own ``metrics.py``, on a
:class:`prometheus_client.CollectorRegistry` it gets from :func:`new_registry`,
and calls :func:`serve` with a readiness check. Names follow Prometheus
conventions: ``guardstream_<component>_<what>_<unit>`` with ``_total`` for
counters, ``_seconds`` and ``_bytes`` for units. Labels come from one shared
vocabulary (:data:`LABELS`) so a dashboard can join series across components.

``/healthz`` answers 200 while the process runs; ``/readyz`` answers 200 when
the component's check passes and 503 with the reason otherwise.
"""

from __future__ import annotations

import errno
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest

from guardstream import __version__
from guardstream.errors import ConfigError, GuardstreamError, UnavailableError

# The shared label vocabulary: the same meaning wherever the name appears.
LABELS = {
    "component": "bridge, commands, worker, sink, push, gateway, lag-exporter",
    "instance": "host name of the process",
    "topic": "Kafka topic, or MQTT topic prefix for the bridge",
    "partition": "Kafka partition",
    "stage": "bridge, validate, enrich, route, sink",
    "reason": "stable reason code of a refusal or dead letter",
    "priority": "critical, high, normal, low",
    "kind": "record or channel kind",
}

# (ready?, why not) — a component's readiness check
ReadyCheck = Callable[[], tuple[bool, str]]


def all_ready(checks: dict[str, ReadyCheck]) -> ReadyCheck:
    """One readiness check over several parts (lanes, consumers): ready when every part is."""
    def ready() -> tuple[bool, str]:
        for name, check in checks.items():
            ok, why = check()
            if not ok:
                return False, f"{name}: {why}"
        return True, ""
    return ready


def new_registry(component: str) -> CollectorRegistry:
    """A registry carrying ``guardstream_component_info`` with the shared labels."""
    registry = CollectorRegistry()
    info = Gauge("guardstream_component_info", "Always 1; labels name the running component.",
                 ["component", "instance", "version"], registry=registry)
    info.labels(component, socket.gethostname(), __version__).set(1)
    return registry


@dataclass
class Endpoints:
    server: ThreadingHTTPServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def cannot_listen(exc: OSError, host: str, port: int, host_setting: str, port_setting: str) -> GuardstreamError:
    """Why a server could not listen on ``host:port``, naming the setting to change: a port taken or
    not ours to use is its port setting's fault, an address not on this machine its host setting's."""
    where = f"{host}:{port}"
    if exc.errno == errno.EADDRINUSE:
        return ConfigError(port_setting, f"{where} is already in use (another component or program listens "
                                         "there): give each process a port of its own, or 0 for any free one")
    if exc.errno == errno.EACCES:
        return ConfigError(port_setting, f"{where}: not allowed to listen there (ports below 1024 need privileges)")
    if exc.errno == errno.EADDRNOTAVAIL or isinstance(exc, socket.gaierror):
        return ConfigError(host_setting, f"{host!r} is not an address of this machine")
    return UnavailableError(f"cannot listen on {where}: {exc}", reason="cannot_listen")


def serve(registry: CollectorRegistry, ready: ReadyCheck, host: str, port: int) -> Endpoints:
    """Serve the three endpoints on a daemon thread (port 0 picks a free one)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._reply(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                self._reply(200, b"ok\n")
            elif path == "/readyz":
                ok, why = ready()
                self._reply(200 if ok else 503, (("ready" if ok else f"not ready: {why}") + "\n").encode())
            else:
                self._reply(404, b"not found: try /metrics, /healthz or /readyz\n")

        def _reply(self, status: int, body: bytes, content_type: str = "text/plain; charset=utf-8") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # scrapes are not news
            return

    try:
        server = ThreadingHTTPServer((host, port), Handler)
    except OSError as exc:
        raise cannot_listen(exc, host, port, "GUARDSTREAM_METRICS_HOST", "GUARDSTREAM_METRICS_PORT") from exc
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="endpoints", daemon=True)
    thread.start()
    return Endpoints(server, thread)
