"""Helpers of the scale-out tests: a broker of a test's own with more partitions than the
session's two, and what a worker's log says it restored."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from support.processes import Component, start_tansu, stop_process

from guardstream.infra import topics
from guardstream.settings import Settings

@contextmanager
def broker_with_partitions(settings: Settings, log: Path, partitions: int) -> Iterator[Settings]:
    """A tansu broker of its own with the catalog's topics, none with more than ``partitions``
    partitions; yields the settings pointed at it."""
    process, bootstrap = start_tansu(log)
    own = settings.replace(kafka_bootstrap_servers=bootstrap, partitions_max=partitions)
    try:
        topics.apply(own)
        yield own
    finally:
        stop_process(process)


def restored_entries(component: Component) -> list[int]:
    """The state entries a worker restored at each of its partition assignments (from its log)."""
    return [int(n) for n in re.findall(r"restored (\d+) state entries", component.output())]
