"""Helpers of the scale-out tests: a broker of a test's own with more partitions than the
session's two, and per-process figures (CPU, log lines) of component processes."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from support.processes import Component, start_tansu, stop_process

from guardstream.infra import topics
from guardstream.settings import Settings

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@contextmanager
def broker_with_partitions(settings: Settings, log: Path, partitions: int) -> Iterator[Settings]:
    """A tansu broker of its own with the catalog's topics, each capped at ``partitions``
    (the catalog's counts are higher); yields the settings pointed at it."""
    process, bootstrap = start_tansu(log)
    own = settings.replace(kafka_bootstrap_servers=bootstrap, partitions_max=partitions)
    try:
        topics.apply(own)
        yield own
    finally:
        stop_process(process)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far, from /proc/<pid>/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def restored_entries(component: Component) -> list[int]:
    """The state entries a worker restored at each of its partition assignments (from its log)."""
    return [int(n) for n in re.findall(r"restored (\d+) state entries", component.output())]
