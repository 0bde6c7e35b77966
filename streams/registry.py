"""Who a device is: the tenant of a validated record, decided from the device registry; pure.

The registry (the compacted ``devices`` topic, one ``guardstream.Device`` per device id) is
the source of truth for a device's tenant. Validation reads what the payload claims; this
module decides what the record may carry, by the table below (first matching row):

    registry entry                   payload tenant     outcome
    none, unknown = dead_letter      any                refused: unknown_device
    none, unknown = default_tenant   none               the default tenant
    none, unknown = default_tenant   T                  T (as before the registry)
    disabled                         any                refused: device_disabled
    enabled, tenant R                none, or R         R
    enabled, tenant R                T other than R     refused: tenant_mismatch

so a device of tenant A that writes ``"tenant": "B"`` never lands in B's data. System health
reports (``raw.system``) come from guardstream's components, keyed by component name, not from
fleet devices: the registry does not judge them (and the MQTT ACL lets no device publish them).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from guardstream.refusal import Refused
from guardstream.streams.validation import RawKind

# Validation's default tenant while the registry decides: a payload's tenant is 1-64 characters,
# so an empty one can only mean that the payload named none.
NO_TENANT = ""
REASONS = frozenset({"unknown_device", "device_disabled", "tenant_mismatch"})
# The raw kinds sent by fleet devices, which the registry judges, and their topics (asked per
# record: a set of names, whose hashes are cached, not of enum members, whose hash is Python code).
DEVICE_KINDS = frozenset({RawKind.DEVICE, RawKind.GUARD, RawKind.SENSOR, RawKind.ALERT})
JUDGED_TOPICS = frozenset(kind.topic.name for kind in DEVICE_KINDS)


class Unknown(enum.Enum):
    """What becomes of a record of a device the registry does not know (GUARDSTREAM_UNKNOWN_DEVICES)."""

    DEAD_LETTER = "dead_letter"
    DEFAULT_TENANT = "default_tenant"


@dataclass(frozen=True, slots=True)
class Entry:
    """A device as the registry knows it."""

    tenant: str
    kind: str  # DeviceKind symbol
    site_id: str | None
    enabled: bool


def entry_from_record(record: Mapping[str, Any]) -> Entry:
    return Entry(record["tenant"], record["kind"], record.get("site_id"), bool(record["enabled"]))


@dataclass(frozen=True)
class Registry:
    """One whole version of the registry and the rule for devices missing from it."""

    entries: Mapping[str, Entry]
    unknown: Unknown
    default_tenant: str


def tenant_for(device_id: str, claimed: str | None, registry: Registry) -> str | Refused:
    """The tenant a record of ``device_id`` carries, or why it is refused; ``claimed`` is the
    payload's tenant (None when it named none)."""
    entry = registry.entries.get(device_id)
    if entry is None:
        if registry.unknown is Unknown.DEAD_LETTER:
            return Refused("unknown_device", f"device {device_id} is not in the registry")
        return claimed or registry.default_tenant
    if not entry.enabled:
        return Refused("device_disabled", f"device {device_id} is disabled in the registry")
    if claimed is not None and claimed != entry.tenant:
        # the detail names only the claim: the device's real tenant is not the sender's business
        return Refused("tenant_mismatch", f"payload names tenant {claimed}; device {device_id} is registered "
                                          "to another tenant")
    return entry.tenant
