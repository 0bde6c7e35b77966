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

A ``snapshot`` message names its section's fields once and carries each record
as a JSON array of its values in that order (``fields``, ``rows``): 10,000
guards as objects were 3.2 MB, mostly the field names repeated, and the bytes
are what the database, the socket and the client's parser spend their time
on. :func:`records` turns a message back into the feed's records.

:func:`scope` decides what a subscription's snapshot covers, from the token
and the channels alone; the SQL filters on it (``store.py``) and
:func:`snapshot_messages` checks each section's tenant (and device) again as
live delivery does (``channels.delivery_channel``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from guardstream.gateway.auth import Principal
from guardstream.gateway.channels import Kind, delivery_channel, parse_channel, route
from guardstream.gateway.protocol import render, tp_key
from guardstream.records import ALERT_ACTION, DEVICE_ALERT, GUARD_POSITION

TP = tuple[str, int]
CHUNK = 500  # rows per snapshot message: larger frames measured no faster (bench, 500 vs 2,000 vs 12,000)
OPEN_STATUSES = ("NEW", "ACKNOWLEDGED")

# The order of a row's values, per section: the record schemas' field order (schemas/avro/),
# then, for an alert, its status. The database renders rows in this order (store.py, and
# guard_position_snapshot_row in migration 0008); a test holds the three together.
POSITION_FIELDS = ("event_id", "tenant", "device_id", "ts_ms", "received_ms", "lat", "lon", "accuracy_m",
                   "speed_mps", "heading_deg", "altitude_m", "fences", "in_site", "violation")
ALERT_FIELDS = ("event_id", "tenant", "device_id", "ts_ms", "received_ms", "kind", "severity", "lat", "lon",
                "message", "rule", "cause_event_id", "ts_source", "claimed_kind", "claimed_severity", "status",
                "status_by", "status_ts_ms", "status_note")
ACTION_FIELDS = ("action_id", "tenant", "alert_event_id", "action", "actor", "ts_ms", "note")
FIELDS = {GUARD_POSITION: POSITION_FIELDS, DEVICE_ALERT: ALERT_FIELDS, ALERT_ACTION: ACTION_FIELDS}


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


# Rows of a snapshot that go to one channel: (tenant, device id or None, the rows). The rows are
# JSON arrays (FIELDS), one a line (JSON text never holds a raw newline), rendered and joined by
# the database: 10,000 guards are never a Python object each. The device is None when the rows
# reach the client through a tenant-wide channel, and names the one device otherwise.
Section = tuple[str, str | None, str]


@dataclass(frozen=True)
class Snapshot:
    """What the database held at one instant, as records of the feed's schemas."""

    reflected: Mapping[TP, int]  # per topic-partition: the offset after the last record the tables hold
    alerts: Sequence[Section]  # DeviceAlert records + their status (ALERT_FIELDS)
    actions: Sequence[Section]  # AlertAction records parked until their alert is written
    positions: Sequence[Section]  # GuardPosition records, the newest of each guard


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
    """The ``snapshot`` messages (per channel and schema, in chunks of rows) and the closing
    ``snapshot_end``, whose ``offsets`` (``held``: the border's resume) are where the client's
    resume position starts."""
    channels = frozenset(subscribed)
    grouped: dict[tuple[str, str], list[str]] = {}
    counts = {"alerts": 0, "actions": 0, "positions": 0}
    for schema, part, sections in ((DEVICE_ALERT, "alerts", snapshot.alerts),
                                   (ALERT_ACTION, "actions", snapshot.actions),
                                   (GUARD_POSITION, "positions", snapshot.positions)):
        for tenant, device, text in sections:
            name = _channel(principal, channels, schema, tenant, device)
            if name is None or not text:
                continue
            rows = text.split("\n")
            grouped.setdefault((name, schema), []).extend(rows)
            counts[part] += len(rows)
    out = []
    for (name, schema), rows in sorted(grouped.items()):
        head = render({"type": "snapshot", "channel": name, "schema": schema, "fields": FIELDS[schema]})[:-1]
        for start in range(0, len(rows), chunk):
            out.append(f'{head},"rows":[{",".join(rows[start:start + chunk])}]}}')
    offsets = {tp_key(tp): last for tp, last in sorted(held.items())}
    out.append(render({"type": "snapshot_end", "offsets": offsets, **counts}))
    return out


def records(message: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The records of one ``snapshot`` message, as the feed carries them (what a client does)."""
    fields = message["fields"]
    return [dict(zip(fields, row, strict=True)) for row in message["rows"]]


def _channel(principal: Principal, channels: frozenset[str], schema: str, tenant: str,
             device: str | None) -> str | None:
    where = route(schema, {"tenant": tenant, "device_id": device})
    return None if where is None else delivery_channel(principal, channels, where.tenant, where.channels)
