"""Which channels an event belongs to, and who may subscribe to which channel. Pure.

Channels:

==========================  =========================================================
``tenant:{t}:alerts``       DeviceAlert and GeofenceEvent of tenant ``t``, and the status
                            changes of its alerts (``alert_status``)
``tenant:{t}:positions``    GuardPosition of tenant ``t``
``tenant:{t}:sensors``      SensorReading of tenant ``t``
``tenant:{t}:telemetry``    Telemetry and SystemHealth of tenant ``t``
``device:{id}``             every event of one device, of the subscriber's tenants only
``noc:alerts``              the alerts channel of every tenant; role ``noc``
==========================  =========================================================

Who may receive an event is decided here, in two steps, from the token's claims
alone. At subscribe time, :func:`authorise`: a tenant channel needs the tenant
in the claims (or role noc); a device channel is refused when the gateway has
seen the device in another tenant. For each event, live or replayed,
:func:`delivery_channel`: the event's tenant is checked against the
subscriber's tenants again, so a device id shared by two tenants never leaks
one tenant's events to the other, and a client subscribed to several of the
event's channels gets it once.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from guardstream.errors import InputError
from guardstream.gateway.auth import Principal
from guardstream.gateway.queues import Lane
from guardstream.records import (ALERT_ACTION, DEVICE_ALERT, GEOFENCE_EVENT, GUARD_POSITION, SENSOR_READING,
                                         SYSTEM_HEALTH, TELEMETRY)

ID = re.compile(r"[A-Za-z0-9_.:\-]{1,128}")


class Kind(enum.Enum):
    ALERTS = "alerts"
    POSITIONS = "positions"
    SENSORS = "sensors"
    TELEMETRY = "telemetry"
    DEVICE = "device"
    NOC = "noc"


TENANT_KINDS = (Kind.ALERTS, Kind.POSITIONS, Kind.SENSORS, Kind.TELEMETRY)

SCHEMA_KINDS: Mapping[str, Kind] = {
    DEVICE_ALERT: Kind.ALERTS,
    GEOFENCE_EVENT: Kind.ALERTS,
    ALERT_ACTION: Kind.ALERTS,
    GUARD_POSITION: Kind.POSITIONS,
    SENSOR_READING: Kind.SENSORS,
    TELEMETRY: Kind.TELEMETRY,
    SYSTEM_HEALTH: Kind.TELEMETRY,
}


@dataclass(frozen=True)
class Channel:
    kind: Kind
    tenant: str | None = None
    device: str | None = None

    @property
    def name(self) -> str:
        if self.kind is Kind.DEVICE:
            return f"device:{self.device}"
        if self.kind is Kind.NOC:
            return "noc:alerts"
        return f"tenant:{self.tenant}:{self.kind.value}"


def parse_channel(name: object) -> Channel:
    """The channel a name stands for; :class:`InputError` ``bad_channel`` for anything else."""
    if isinstance(name, str):
        if name == "noc:alerts":
            return Channel(Kind.NOC)
        if name.startswith("device:") and ID.fullmatch(name[len("device:"):]):
            return Channel(Kind.DEVICE, device=name[len("device:"):])
        if name.startswith("tenant:"):
            tenant, _, kind = name[len("tenant:"):].rpartition(":")
            if ID.fullmatch(tenant) and kind in {k.value for k in TENANT_KINDS}:
                return Channel(Kind(kind), tenant=tenant)
    raise InputError(f"{name!r} is no channel: tenant:<t>:alerts|positions|sensors|telemetry, "
                     "device:<id> or noc:alerts", reason="bad_channel")


def channel_kind(name: str) -> str:
    """The kind of a well-formed channel name, for metric labels."""
    return "noc" if name == "noc:alerts" else "device" if name.startswith("device:") else name.rpartition(":")[2]


def authorise(principal: Principal, channel: Channel, device_tenant: str | None) -> str | None:
    """None when ``principal`` may subscribe; otherwise the refusal's reason.

    ``device_tenant``: the tenant the gateway last saw the device in (None: not seen yet;
    allowed, since delivery checks every event's tenant anyway).
    """
    if channel.kind is Kind.NOC:
        return None if principal.noc else "forbidden_channel"
    if channel.kind is Kind.DEVICE:
        return None if device_tenant is None or principal.sees(device_tenant) else "forbidden_channel"
    return None if principal.sees(channel.tenant or "") else "forbidden_channel"


def delivery_channel(principal: Principal, subscribed: Container[str], tenant: str,
                     channels: Sequence[str]) -> str | None:
    """The channel that names an event to one client; None when the client does not receive it.

    ``tenant`` and ``channels`` are the event's (its :class:`Route`), ``subscribed`` the
    client's channels. Of several subscribed channels the first in the route's order names
    the event, so the client gets it once. The tenant is checked whatever the channel: a
    device channel was authorised from the tenant the device was last seen in, which says
    nothing of this event's. Runs per event per client: keep it to lookups.
    """
    if not principal.sees(tenant):
        return None
    for name in channels:
        if name in subscribed:
            return name
    return None


@dataclass(frozen=True)
class Route:
    """Where one decoded record goes."""

    tenant: str
    device: str | None
    channels: tuple[str, ...]  # the order decides which channel a client with several matches is told
    lane: Lane
    kind: Kind


def route(schema: str, record: Mapping[str, Any]) -> Route | None:
    """The channels of a record; None for a record type no channel carries."""
    kind = SCHEMA_KINDS.get(schema)
    tenant = record.get("tenant")
    if kind is None or not isinstance(tenant, str):
        return None
    alerts = kind is Kind.ALERTS
    lane = Lane.CRITICAL if alerts else Lane.POSITION if kind is Kind.POSITIONS else Lane.OTHER
    tenant_channel = f"tenant:{tenant}:{kind.value}"
    if schema == ALERT_ACTION:
        return Route(tenant, None, (tenant_channel, "noc:alerts"), lane, kind)
    device = record.get("device_id")
    device = device if isinstance(device, str) else None
    channels = (tenant_channel,) + (("noc:alerts",) if alerts else ()) + ((f"device:{device}",) if device else ())
    return Route(tenant, device, channels, lane, kind)
