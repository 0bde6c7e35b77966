"""One batch of raw records in, typed events out: validate, enrich, apply rules, route.

This is the decision logic of the stream worker, free of I/O: raw records and
the worker's state go in; the records to emit, the dead letters and the new
per-device states come out. The worker shells (``worker.py``) feed it batches
from Kafka and write what it returns.

Per batch the geofence index is asked once for every GPS fix of the batch
(``apply_batch``), which is where batching pays: one vectorised spatial query
instead of one per fix.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

import msgspec

from guardstream.refusal import Refused
from guardstream.records import (
    DEVICE_ALERT, GEOFENCE_EVENT, GUARD_POSITION, DeviceAlert, GeofenceEvent, device_alert, geofence_event,
)
from guardstream.streams.geofence import FenceIndex
from guardstream.streams.geofence_state import (
    DeviceState, Fix, GeofenceTransition, Params, ViolationStarted, apply_batch, fence_removed,
)
from guardstream.streams.dedup import DedupWindow
from guardstream.streams.registry import JUDGED_TOPICS, NO_TENANT, Registry, tenant_for
from guardstream.streams.routing import Emit, emit_for
from guardstream.streams.rules import RuleState, Rules, evaluate
from guardstream.streams.validation import Policy, RawMeta, kind_for_topic, validate


class RawRecord(msgspec.Struct, frozen=True):
    """A record of a raw topic, as the bridge wrote it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Mapping[str, bytes]
    timestamp_ms: int

    def header(self, name: str) -> str | None:
        raw = self.headers.get(name)
        return raw.decode("utf-8", "replace") if raw is not None else None


@dataclass(frozen=True)
class RefusedRecord:
    """A raw record validation refused, and why: the worker writes it to ``dlq.validate``."""

    record: RawRecord
    refused: Refused


@dataclass
class State:
    """What the worker remembers between batches, for the partitions it owns."""

    fences: FenceIndex
    devices: dict[str, DeviceState] = field(default_factory=dict)  # geofence state per guard device
    rules: dict[str, RuleState] = field(default_factory=dict)  # rule state per device
    last_seen: dict[str, tuple[str, int]] = field(default_factory=dict)  # device -> (tenant, last event ms)
    dedup: DedupWindow = field(default_factory=DedupWindow)


@dataclass
class Outcome:
    emits: list[Emit] = field(default_factory=list)
    refused: list[RefusedRecord] = field(default_factory=list)
    duplicates: int = 0
    devices: dict[str, DeviceState] = field(default_factory=dict)  # geofence states that changed
    rules: dict[str, RuleState] = field(default_factory=dict)  # rule states that changed
    transitions: int = 0
    violations: int = 0
    skipped_fixes: int = 0


def meta_of(record: RawRecord) -> RawMeta:
    # A record without the bridge's msg.id (written by another producer) still gets a
    # stable id: its place in the topic.
    msg_id = record.header("msg.id") or f"{record.topic}/{record.partition}/{record.offset}"
    received = record.header("received_ms")
    return RawMeta(key=record.key.decode("utf-8", "replace") if record.key else None,
                   mqtt_topic=record.header("mqtt.topic"), catch_all=record.header("bridge.catch_all"), msg_id=msg_id,
                   received_ms=int(received) if received and received.isdigit() else record.timestamp_ms,
                   source_topic=record.topic, partition=record.partition, offset=record.offset)


def process(records: Iterable[RawRecord], state: State, policy: Policy, rules: Rules,
            params: Params, removed_fences: frozenset[str] = frozenset(),
            registry: Registry | None = None) -> Outcome:
    """Turn one batch into events. ``state.dedup`` is updated in place; every other
    change of state is returned in the :class:`Outcome` for the caller to store.

    With a ``registry``, a device's tenant is the registry's (``streams/registry.tenant_for``);
    without one, the payload's as validation read it."""
    out = Outcome()
    if removed_fences:
        _exit_removed(state, removed_fences, policy.now_ms, out)
    # validation leaves the tenant empty where the payload names none, so the registry can tell
    claims = replace(policy, default_tenant=NO_TENANT) if registry is not None else policy
    positions: list[dict] = []
    for record in records:
        meta = meta_of(record)
        if state.dedup.seen(meta.msg_id, policy.now_ms):
            out.duplicates += 1
            continue
        result = validate(kind_for_topic(record.topic), record.value or b"", meta, claims)
        if isinstance(result, Refused):
            out.refused.append(RefusedRecord(record, result))
            continue
        event = result.record
        if registry is not None:
            tenant = (tenant_for(event["device_id"], event["tenant"] or None, registry)
                      if record.topic in JUDGED_TOPICS else event["tenant"] or policy.default_tenant)
            if isinstance(tenant, Refused):
                out.refused.append(RefusedRecord(record, tenant))
                continue
            event["tenant"] = tenant
        state.last_seen[event["device_id"]] = (event["tenant"], event["received_ms"])
        if result.schema == GUARD_POSITION:
            positions.append(event)
            continue
        out.emits.append(emit_for(result.schema, event))
        _apply_rules(result.schema, event, state, rules, out)
    if positions:
        _enrich(positions, state, params, out)
    return out


def _apply_rules(schema: str, event: dict, state: State, rules: Rules, out: Outcome) -> None:
    device = event["device_id"]
    before = out.rules.get(device) or state.rules.get(device)
    after, alerts = evaluate(schema, event, before, rules)
    if after != before:
        out.rules[device] = after
    out.emits.extend(emit_for(DEVICE_ALERT, alert) for alert in alerts)


def _enrich(positions: list[dict], state: State, params: Params, out: Outcome) -> None:
    fixes = [Fix(p["device_id"], p["tenant"], p["ts_ms"], p["lat"], p["lon"], p["accuracy_m"], p["event_id"])
             for p in positions]
    current = {**state.devices, **out.devices}
    batch = apply_batch(current, fixes, state.fences, params)
    for position, result in zip(positions, batch.results):
        position["fences"] = list(result.enrichment.fences)
        position["in_site"] = result.enrichment.in_site
        position["violation"] = result.enrichment.violation
        out.emits.append(emit_for(GUARD_POSITION, position))
        if result.skipped:
            out.skipped_fixes += 1
        for output in result.outputs:
            _emit_output(output, position["received_ms"], out, position["event_id"])
    for device, new in batch.states.items():
        # a fix that changes nothing returns the state it was given, so identity tells
        # (comparing the dataclasses would compare every fence membership of every device)
        if current.get(device) is not new:
            out.devices[device] = new


def _emit_output(output: object, received_ms: int, out: Outcome, cause: str | None = None) -> None:
    if isinstance(output, GeofenceTransition):
        out.transitions += 1
        out.emits.append(emit_for(GEOFENCE_EVENT, transition_event(output, received_ms)))
    elif isinstance(output, ViolationStarted):
        out.violations += 1
        out.emits.append(emit_for(DEVICE_ALERT, violation_alert(output, received_ms, cause)))


def _exit_removed(state: State, removed: frozenset[str], now_ms: int, out: Outcome) -> None:
    """A deleted fence means an exit for every device inside it, without waiting for its next fix."""
    for device, current in list(state.devices.items()):
        for fence_id in sorted(removed & set(current.fences)):
            current, outputs = fence_removed(current, fence_id, now_ms)
            out.devices[device] = current
            for output in outputs:
                _emit_output(output, now_ms, out)


def transition_event(t: GeofenceTransition, received_ms: int) -> GeofenceEvent:
    """The GeofenceEvent record of a guard entering or leaving a fence."""
    return geofence_event(event_id=t.event_id, tenant=t.tenant, device_id=t.device_id, ts_ms=t.ts_ms,
                          received_ms=received_ms, fence_id=t.fence_id, fence_kind=t.fence_kind,
                          transition=str(t.transition), lat=t.lat, lon=t.lon, dwell_ms=t.dwell_ms, cause=t.cause)


def violation_alert(v: ViolationStarted, received_ms: int, cause_event_id: str | None = None) -> DeviceAlert:
    where = (f"inside restricted zone {', '.join(v.restricted_fences)}" if v.restricted_fences
             else "outside every site of the tenant")
    return device_alert(event_id=v.event_id, tenant=v.tenant, device_id=v.device_id, ts_ms=v.ts_ms,
                        received_ms=received_ms, kind="GEOFENCE_VIOLATION", severity="CRITICAL", lat=v.lat,
                        lon=v.lon, message=f"guard {where}", rule="geofence_violation", cause_event_id=cause_event_id)
