"""Where a running ``guardstream up`` is, for every other command.

``up`` writes ``stack.json`` in its state directory: its pid, the metrics ports of
its components, and the addresses of the servers it started, as the settings
variables that name them. Any command run later with the same state directory
(``GUARDSTREAM_STATE_DIR``, default ``.state`` in the working directory) reads
that file and uses those addresses for every variable its environment does not
set, so ``health``, ``tail`` or ``topics apply`` in a second shell talk to the
stack and not to the defaults. ``up`` also keeps the ports it picked in
``ports.json`` and asks for them again next time, so devices and scripts keep
their addresses across restarts.

A user's own servers (``MQTT_URL`` set when ``up`` started, say) are not written
down: their URLs may hold passwords, and the user's shell has them already.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from guardstream.settings import DEFAULT_STATE_DIR

STACK_FILE = "stack.json"  # the running stack: pid, components' metrics ports, server addresses
PORTS_FILE = "ports.json"  # the ports up picked last time, asked for again next time

# The variables a stack's addresses are handed over in; ``up`` writes only these.
ADDRESS_VARS = ("KAFKA_BOOTSTRAP_SERVERS", "MQTT_URL", "DATABASE_URL", "GUARDSTREAM_PROFILE",
                "GUARDSTREAM_GATEWAY_HOST", "GUARDSTREAM_GATEWAY_PORT", "GUARDSTREAM_METRICS_HOST")
# The servers: when none of these is set and no stack runs, a command talks to the defaults.
SERVER_VARS = ("KAFKA_BOOTSTRAP_SERVERS", "MQTT_URL", "DATABASE_URL")


@dataclass(frozen=True)
class RunningStack:
    pid: int
    state_dir: Path
    addresses: dict[str, str] = field(default_factory=dict)  # settings variable -> value
    metrics_host: str = "127.0.0.1"
    metrics_ports: dict[str, int] = field(default_factory=dict)


def state_dir_of(environ: Mapping[str, str]) -> Path:
    return Path(environ.get("GUARDSTREAM_STATE_DIR") or DEFAULT_STATE_DIR)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True


def parse_stack(doc: object, state_dir: Path) -> RunningStack | None:
    """The stack a ``stack.json`` document describes; None when it is not one."""
    if not isinstance(doc, dict) or not isinstance(doc.get("pid"), int):
        return None
    addresses = doc.get("addresses") or {}
    ports = doc.get("metrics_ports") or {}
    return RunningStack(
        pid=doc["pid"], state_dir=state_dir,
        addresses={k: str(v) for k, v in addresses.items() if k in ADDRESS_VARS} if isinstance(addresses, dict) else {},
        metrics_host=str(doc.get("metrics_host") or "127.0.0.1"),
        metrics_ports={k: v for k, v in ports.items() if isinstance(v, int)} if isinstance(ports, dict) else {})


def running_stack(state_dir: Path, alive: Callable[[int], bool] = pid_alive) -> RunningStack | None:
    """The stack ``up`` runs from ``state_dir``; None when none is running (or its file is unreadable)."""
    try:
        doc = json.loads((state_dir / STACK_FILE).read_text())
    except (OSError, ValueError):
        return None
    stack = parse_stack(doc, state_dir)
    return stack if stack is not None and alive(stack.pid) else None


def adopted(environ: Mapping[str, str], stack: RunningStack | None) -> dict[str, str]:
    """The variables ``stack`` supplies that ``environ`` does not set: the environment always wins."""
    if stack is None:
        return {}
    return {name: value for name, value in stack.addresses.items() if name not in environ}


def nothing_configured(environ: Mapping[str, str], stack: RunningStack | None) -> bool:
    """No running stack and no server named: a command would talk to the built-in defaults."""
    return stack is None and not any(name in environ for name in SERVER_VARS)


def no_stack_hint(state_dir: Path) -> str:
    return (f"no running stack in {state_dir} and none of {', '.join(SERVER_VARS)} set: "
            "start one with `guardstream up`, or export the addresses of your servers")


def stack_doc(pid: int, addresses: Mapping[str, str], metrics_host: str,
              metrics_ports: Mapping[str, int]) -> dict[str, object]:
    unknown = set(addresses) - set(ADDRESS_VARS)
    if unknown:
        raise ValueError(f"not an address variable: {sorted(unknown)}")
    return {"pid": pid, "addresses": dict(addresses), "metrics_host": metrics_host,
            "metrics_ports": dict(metrics_ports)}


def remembered_ports(state_dir: Path) -> dict[str, int]:
    """The ports ``up`` picked last time from ``state_dir`` (server or component name -> port)."""
    try:
        doc = json.loads((state_dir / PORTS_FILE).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(doc, dict):
        return {}
    return {k: v for k, v in doc.items() if isinstance(v, int) and 0 < v < 65536}
