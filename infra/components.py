"""The pipeline components ``guardstream up`` runs, each as a supervised child.

A component is a ``guardstream`` subcommand. Each one serves ``/metrics``,
``/healthz`` and ``/readyz`` on the port the stack hands it in
``GUARDSTREAM_METRICS_PORT``. A component joins the local stack by adding a line
here; nothing else in the stack knows the list.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Component:
    name: str
    command: tuple[str, ...]  # arguments after `guardstream`
    description: str
    serves_http: bool = False  # besides /metrics: a user-facing port (the gateway)
    verifies_tokens: bool = False  # gets the JWT secret; no other component's environment holds it


COMPONENTS: tuple[Component, ...] = (
    Component("bridge", ("bridge",), "MQTT -> raw Kafka topics, at least once"),
    Component("commands", ("commands",), "device commands from Kafka -> MQTT"),
    Component("worker", ("worker",), "validate, geofences, alert rules, priority routing"),
    Component("lag-exporter", ("lag-exporter",), "consumer lag, lag in seconds and group status on /metrics"),
    Component("sink", ("sink",), "priority topics, geofences, devices, dead letters, alert actions -> PostgreSQL"),
    Component("gateway", ("gateway",), "WebSocket push feed (JWT, tenants, resume) and the live dashboard",
              serves_http=True, verifies_tokens=True),
    Component("notifier", ("notifier",), "events.critical -> email, webhook, SMS and Web Push, escalated until acknowledged"),
)

# The secret that signs client tokens: only a component that verifies tokens is given it.
TOKEN_KEYS = frozenset({"GUARDSTREAM_JWT_SECRET"})

