"""The present state a subscriber starts from, and where live events take over. Pure.

A ``subscribe`` with ``"snapshot": true`` gets, before any event, the state
PostgreSQL holds for its channels: the open alerts (status NEW or
ACKNOWLEDGED, with who acted and when), the actions that wait for an alert not
written yet, and the last-known position of every guard. The sink stores, in
the transaction that writes the rows, the offset after the last record written
per topic-partition (``sink_positions``); the gateway reads those and the
tables in one REPEATABLE READ transaction, so the snapshot holds every record
below those offsets and none above. :func:`border` turns them into a resume:
the events between the snapshot and the hub's live position are replayed from
Kafka, those the snapshot already holds are dropped from the live queue, and
the client sees every later event exactly once.

:func:`scope` decides what a subscription's snapshot covers, from the token
and the channels alone; the SQL filters on it (``store.py``) and
:func:`snapshot_messages` checks every row's tenant again as live delivery
does (``channels.delivery_channel``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from guardstream.gateway.auth import Principal
from guardstream.gateway.channels import Kind, delivery_channel, parse_channel, route
from guardstream.gateway.protocol import render, tp_key
from guardstream.records import ALERT_ACTION, DEVICE_ALERT, GUARD_POSITION

TP = tuple[str, int]
CHUNK = 500  # items per snapshot message: 10,000 guards stay far below a client's default 1 MiB frame
OPEN_STATUSES = ("NEW", "ACKNOWLEDGED")


@dataclass(frozen=True)
class Scope:
    """What one snapshot reads. ``None`` tenants: every tenant (role noc only)."""

    visible: frozenset[str] | None  # the tenants the token sees: the outer filter of every query
    alert_tenants: frozenset[str] | None
    position_tenants: frozenset[str]
    devices: frozenset[str]


def scope(principal: Principal, channels: Iterable[str]) -> Scope:
    alerts: set[str] | None = set()
    positions: set[str] = set()
    devices: set[str] = set()
    for name in channels:
        channel = parse_channel(name)
        if channel.kind is Kind.NOC:
            alerts = None
        elif channel.kind is Kind.DEVICE:
            devices.add(channel.device or "")
        elif channel.kind is Kind.ALERTS and alerts is not None:
            alerts.add(channel.tenant or "")
        elif channel.kind is Kind.POSITIONS:
            positions.add(channel.tenant or "")
    return Scope(None if principal.noc else principal.tenants, None if alerts is None else frozenset(alerts),
                 frozenset(positions), frozenset(devices))


# One item of a snapshot: (tenant, device id or None, the record as JSON text). The database
# renders the JSON, so 10,000 guards are never parsed into Python objects and rendered again.
Row = tuple[str, str | None, str]


@dataclass(frozen=True)
class Snapshot:
    """What the database held at one instant, as records of the feed's schemas."""

    reflected: Mapping[TP, int]  # per topic-partition: the offset after the last record the tables hold
    alerts: Sequence[Row]  # DeviceAlert fields + status, status_by, status_ts_ms, status_note
    actions: Sequence[Row]  # AlertAction records parked until their alert is written
    positions: Sequence[Row]  # GuardPosition records, the newest of each guard


@dataclass(frozen=True)
class Border:
    resume: Mapping[TP, int]  # what a resume replay starts after: the last offset the snapshot holds
    ahead: Mapping[TP, int]  # partitions where the snapshot is past the hub: live must reach these first


def border(reflected: Mapping[TP, int], live: Mapping[TP, int]) -> Border:
    """Where the snapshot ends and live begins, for the partitions the hub reads (``live``: the
    hub's next offset). A partition the sink has no position for is held by the snapshot from
    nothing: it is replayed from its oldest retained record."""
    resume = {tp: reflected.get(tp, 0) - 1 for tp in live}
    ahead = {tp: reflected[tp] for tp, end in live.items() if reflected.get(tp, 0) > end}
    return Border(resume, ahead)


def snapshot_messages(principal: Principal, subscribed: Iterable[str], snapshot: Snapshot, held: Mapping[TP, int],
                      chunk: int = CHUNK) -> list[str]:
    """The ``snapshot`` messages (per channel and schema, in chunks) and the closing ``snapshot_end``,
    whose ``offsets`` (``held``: the border's resume) are where the client's resume position starts."""
    channels = frozenset(subscribed)
    grouped: dict[tuple[str, str], list[str]] = {}
    counts = {"alerts": 0, "actions": 0, "positions": 0}
    for schema, part, rows in ((DEVICE_ALERT, "alerts", snapshot.alerts), (ALERT_ACTION, "actions", snapshot.actions),
                               (GUARD_POSITION, "positions", snapshot.positions)):
        by_tenant: dict[str, str | None] = {}  # the tenant's or noc channel, when it names every row of the tenant
        for tenant, device, text in rows:
            if tenant not in by_tenant:
                by_tenant[tenant] = _channel(principal, channels, schema, tenant, None)
            name = by_tenant[tenant] or _channel(principal, channels, schema, tenant, device)
            if name is None:
                continue
            grouped.setdefault((name, schema), []).append(text)
            counts[part] += 1
    out = []
    for (name, schema), items in sorted(grouped.items()):
        head = render({"type": "snapshot", "channel": name, "schema": schema})[:-1]
        for start in range(0, len(items), chunk):
            out.append(f'{head},"items":[{",".join(items[start:start + chunk])}]}}')
    offsets = {tp_key(tp): last for tp, last in sorted(held.items())}
    out.append(render({"type": "snapshot_end", "offsets": offsets, **counts}))
    return out


def _channel(principal: Principal, channels: frozenset[str], schema: str, tenant: str,
             device: str | None) -> str | None:
    where = route(schema, {"tenant": tenant, "device_id": device})
    return None if where is None else delivery_channel(principal, channels, where.tenant, where.channels)
