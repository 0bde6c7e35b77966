"""Child processes of ``guardstream up``: started, watched, restarted, stopped.

The restart policy is pure (:class:`Backoff`); :class:`Supervisor` is the shell
that runs processes, prefixes their output with the component's name, and on
stop sends SIGTERM, then SIGKILL to whatever is left, layer by layer: the
pipeline's components first, and the servers they use (Kafka, MQTT) only once
the components are gone, so a component's last flush still reaches its broker.
Each child runs in a process group of its own, so a terminal's Ctrl-C reaches
only the supervisor, which then stops the children in that order. Each child
also asks the kernel to be sent SIGTERM when the supervisor dies, so even a
``kill -9`` of ``guardstream up`` leaves no orphan behind.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class Backoff:
    """Exponential restart delay, forgiven once a child has run for ``stable_s``."""

    base_s: float = 0.5
    cap_s: float = 30.0
    stable_s: float = 60.0

    def next(self, failures: int, uptime_s: float) -> tuple[float, int]:
        """(delay before the restart, failures counted so far) after a child exited."""
        failures = 1 if uptime_s >= self.stable_s else failures + 1
        return min(self.cap_s, self.base_s * 2 ** (failures - 1)), failures


# Layers of children, stopped from the highest down.
SERVERS, COMPONENTS, CLIENTS = 0, 1, 2


@dataclass(frozen=True)
class ChildSpec:
    name: str
    argv: Sequence[str]
    env: Mapping[str, str] = field(default_factory=dict)
    restart: bool = True
    withheld: frozenset[str] = frozenset()  # variables kept out of the child's environment, its own or ours
    layer: int = COMPONENTS  # SERVERS stop last; CLIENTS (a simulated fleet) first
    log_file: Path | None = None  # its output goes here (appended) instead of the console


def child_env(parent: Mapping[str, str], spec: ChildSpec) -> dict[str, str]:
    """The environment of ``spec``'s process: ours, then its own, less what it must not hold."""
    return {name: value for name, value in {**parent, **spec.env}.items() if name not in spec.withheld}


def _die_with_parent() -> None:  # runs in the child between fork and exec
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class _Running:
    spec: ChildSpec
    process: subprocess.Popen
    started: float
    failures: int = 0
    restart_at: float | None = None


class Supervisor:
    def __init__(self, out: IO[str] = sys.stdout, backoff: Backoff = Backoff(), width: int = 10) -> None:
        self._out = out
        self._lock = threading.Lock()
        self._backoff = backoff
        self._width = width
        self._children: list[_Running] = []
        self._after_restart: dict[str, tuple[Callable[[], None], int | None]] = {}
        self._held: set[int] = set()  # layers whose children are not restarted for now
        self.stopping = threading.Event()

    def after_restart(self, name: str, action: Callable[[], None], hold: int | None = None) -> None:
        """Run ``action`` (in a thread of its own) each time the child ``name`` is restarted. With
        ``hold``, the children of that layer are stopped as soon as ``name`` exits and started
        again only once ``action`` is over (they must not meet ``name``'s successor before)."""
        self._after_restart[name] = (action, hold)

    def _run_after_restart(self, name: str, action: Callable[[], None], hold: int | None) -> None:
        try:
            action()
        except Exception as exc:  # noqa: BLE001 - the child runs on; the user reads what did not follow
            self.log(name, f"after the restart: {type(exc).__name__}: {exc}")
        finally:
            if hold is not None:
                self._held.discard(hold)

    def log(self, name: str, line: str) -> None:
        with self._lock:
            self._out.write(f"{name:>{self._width}} | {line.rstrip()}\n")
            self._out.flush()

    def _spawn(self, spec: ChildSpec) -> subprocess.Popen:
        process = subprocess.Popen(
            list(spec.argv), env=child_env(os.environ, spec), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, text=True, bufsize=1, preexec_fn=_die_with_parent, process_group=0)
        threading.Thread(target=self._pump, args=(spec, process), daemon=True).start()
        return process

    def _pump(self, spec: ChildSpec, process: subprocess.Popen) -> None:
        assert process.stdout is not None
        if spec.log_file is None:
            for line in process.stdout:
                self.log(spec.name, line)
            return
        spec.log_file.parent.mkdir(parents=True, exist_ok=True)
        with spec.log_file.open("a") as log:
            for line in process.stdout:
                log.write(line)
                log.flush()

    def start(self, spec: ChildSpec) -> subprocess.Popen:
        process = self._spawn(spec)
        self._children.append(_Running(spec, process, time.monotonic()))
        return process

    def pids(self) -> list[int]:
        return [c.process.pid for c in self._children]

    def pid(self, name: str) -> int | None:
        """The running process of the child ``name``; None while it is down (or unknown)."""
        for child in self._children:
            if child.spec.name == name and child.process.poll() is None:
                return child.process.pid
        return None

    def tick(self) -> None:
        """Notice exited children and restart them when their delay is over."""
        now = time.monotonic()
        for child in self._children:
            code = child.process.poll()
            if code is None or self.stopping.is_set():
                continue
            if not child.spec.restart or child.spec.layer in self._held:
                continue
            action, hold = self._after_restart.get(child.spec.name, (None, None))
            if child.restart_at is None:
                delay, child.failures = self._backoff.next(child.failures, now - child.started)
                child.restart_at = now + delay
                self.log(child.spec.name, f"exited with code {code}; restarting in {delay:.1f}s")
                if hold is not None and hold not in self._held:
                    self._held.add(hold)
                    threading.Thread(target=self.restart_layer, args=(hold,), daemon=True).start()
            elif now >= child.restart_at:
                child.process = self._spawn(child.spec)
                child.started, child.restart_at = now, None
                if action is not None:
                    threading.Thread(target=self._run_after_restart, args=(child.spec.name, action, hold),
                                     daemon=True).start()

    def run_until_stopped(self, poll_s: float = 0.2) -> None:
        while not self.stopping.wait(poll_s):
            self.tick()

    def stop(self, grace_s: float = 10.0) -> None:
        """Stop every child, the highest layer first; each layer has ``grace_s`` to exit."""
        self.stopping.set()
        for layer in sorted({c.spec.layer for c in self._children}, reverse=True):
            self._stop_all([c for c in reversed(self._children) if c.spec.layer == layer], grace_s)

    def restart_layer(self, layer: int, grace_s: float = 10.0) -> None:
        """Stop the children of ``layer``; :meth:`tick` starts them again as after any exit
        (once the layer is no longer held)."""
        # the processes of now: tick may start their successors while this waits
        processes = [(c.spec.name, c.process) for c in self._children if c.spec.layer == layer]
        for _, process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for name, process in processes:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.log(name, f"did not stop within {grace_s:.0f}s; killing")
                process.kill()
                process.wait()

    def _stop_all(self, children: list[_Running], grace_s: float) -> None:
        for child in children:
            if child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for child in children:
            try:
                child.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.log(child.spec.name, f"did not stop within {grace_s:.0f}s; killing")
                child.process.kill()
                child.process.wait()
