"""The ``guardstream lag`` table: one row per group and partition."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text

from .burrow import Status
from .path import PATH_COLUMNS, StageQueue, path_rows, verdict
from .snapshot import Snapshot

COLUMNS = ["group", "status", "topic", "partition", "committed", "end", "lag", "lag_s", "partition_status",
           "window"]

_STYLE = {Status.OK: "green", Status.WARN: "yellow", Status.STALL: "red", Status.STOP: "red", Status.ERR: "magenta"}


def lag_rows(snapshot: Snapshot) -> list[list[str]]:
    """Rows under :data:`COLUMNS`; a group without committed offsets (or unreadable) gets one row."""
    by_group: dict[str, list[list[str]]] = {}
    for row in snapshot.lags:
        seconds = "" if row.lag_seconds is None else f"{row.lag_seconds:.1f}"
        by_group.setdefault(row.group, []).append([
            row.group, snapshot.groups[row.group].value, row.topic, str(row.partition), str(row.committed),
            str(row.end), str(row.lag), seconds, row.status.value, f"{row.window}/{snapshot.window_size}"])
    rows: list[list[str]] = []
    for group, status in sorted(snapshot.groups.items()):
        rows.extend(by_group.get(group) or [[group, status.value] + [""] * (len(COLUMNS) - 2)])
    return rows


def lag_table(snapshot: Snapshot, title: str, caption: str | None = None) -> Table:
    """The rows as a rich table, statuses coloured (for ``--watch``)."""
    table = Table(title=title, title_justify="left", caption=caption, caption_justify="left")
    for column in COLUMNS:
        table.add_column(column, justify="right" if column in ("partition", "committed", "end", "lag", "lag_s")
                         else "left")
    statuses = (COLUMNS.index("status"), COLUMNS.index("partition_status"))
    for row in lag_rows(snapshot):
        # Text, not markup: a group or topic name may hold brackets
        table.add_row(*(Text(cell, style=_STYLE[Status(cell)] if i in statuses and cell else "")
                        for i, cell in enumerate(row)))
    return table


def path_table(stages: list[StageQueue]) -> Table:
    """The whole path's queues as a rich table, the stages behind in red (for ``--watch``)."""
    table = Table(title="guardstream pipeline queues", title_justify="left", caption=verdict(stages),
                  caption_justify="left")
    for column in PATH_COLUMNS:
        table.add_column(column, justify="right" if column in ("queued", "limit", "oldest_s") else "left")
    for row in path_rows(stages):
        table.add_row(*(Text(cell, style="red" if row[-1] else "") for cell in row))
    return table
