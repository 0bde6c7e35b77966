"""Per-device geofence state machine; pure, no I/O.

For every (device, fence) pair the device is OUTSIDE, INSIDE, or LEAVING
(inside, but outside fixes have been seen and the exit waits for hysteresis).
Each usable fix is turned into one observation per fence and looked up in
``TRANSITIONS``; the table is the whole behaviour, and
``transition_table_markdown()`` prints it for the docs.

Hysteresis, with H = ``Params.exit_margin_m`` and N = ``Params.exit_fixes``:
a GPS fix jittering across a border must not make the guard leave and re-enter.
An exit needs one fix more than H metres outside (OUT_FAR), or N consecutive
outside fixes. The consecutive count is the membership's ``outside_count``:
table entries marked ``UntilN`` add one outside fix to it and take their
``reached`` step once it reaches N; every other entry resets it to 0.

Only INSIDE and LEAVING memberships are stored; a fence absent from
``DeviceState.fences`` is OUTSIDE. ``DeviceState`` round-trips through JSON
(``to_dict``/``from_dict``) because it lives in the worker-state changelog topic
(``state_store.py``), on either engine of the worker.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from types import MappingProxyType
from typing import Any, NamedTuple

import msgspec

from guardstream.errors import ConfigError, InputError

from .geofence import FenceIndex


class Membership(StrEnum):
    OUTSIDE = "OUTSIDE"
    INSIDE = "INSIDE"
    LEAVING = "LEAVING"


class Observation(StrEnum):
    IN = "IN"  # the fix lies inside the fence (border included)
    OUT_NEAR = "OUT_NEAR"  # outside, at most H metres from the border
    OUT_FAR = "OUT_FAR"  # outside by more than H metres
    FENCE_DELETED = "FENCE_DELETED"  # the fence is no longer in the index


class Action(StrEnum):
    ENTER = "ENTER"
    EXIT = "EXIT"


class Counter(StrEnum):
    RESET = "reset to 0"
    COUNT = "+1"


@dataclass(frozen=True)
class Step:
    next: Membership
    action: Action | None = None
    counter: Counter = Counter.RESET


@dataclass(frozen=True)
class UntilN:
    """Count one more outside fix: ``below`` while the count stays under N, ``reached`` at N."""

    below: Step
    reached: Step


_M, _O = Membership, Observation
_COUNT_TO_N = UntilN(below=Step(_M.LEAVING, None, Counter.COUNT), reached=Step(_M.OUTSIDE, Action.EXIT))

TRANSITIONS: Mapping[tuple[Membership, Observation], Step | UntilN] = MappingProxyType({
    # state        observation            step
    (_M.OUTSIDE, _O.IN): Step(_M.INSIDE, Action.ENTER),
    (_M.OUTSIDE, _O.OUT_NEAR): Step(_M.OUTSIDE),
    (_M.OUTSIDE, _O.OUT_FAR): Step(_M.OUTSIDE),
    (_M.OUTSIDE, _O.FENCE_DELETED): Step(_M.OUTSIDE),
    (_M.INSIDE, _O.IN): Step(_M.INSIDE),
    (_M.INSIDE, _O.OUT_NEAR): _COUNT_TO_N,
    (_M.INSIDE, _O.OUT_FAR): Step(_M.OUTSIDE, Action.EXIT),
    (_M.INSIDE, _O.FENCE_DELETED): Step(_M.OUTSIDE, Action.EXIT),
    (_M.LEAVING, _O.IN): Step(_M.INSIDE),  # back inside: the exit was jitter, no event
    (_M.LEAVING, _O.OUT_NEAR): _COUNT_TO_N,
    (_M.LEAVING, _O.OUT_FAR): Step(_M.OUTSIDE, Action.EXIT),
    (_M.LEAVING, _O.FENCE_DELETED): Step(_M.OUTSIDE, Action.EXIT),
})


def next_step(state: Membership, observation: Observation, outside_count: int,
              exit_fixes: int) -> tuple[Step, int]:
    """The table's step for this membership and observation, and the new outside count."""
    entry = TRANSITIONS[(state, observation)]
    counted = outside_count + 1
    if isinstance(entry, UntilN):
        entry = entry.reached if counted >= exit_fixes else entry.below
    return entry, (counted if entry.counter is Counter.COUNT else 0)


def transition_table_markdown() -> str:
    """The transition table as Markdown, followed by a Mermaid state diagram."""
    rows = ["| State | Observation | Condition | Next state | Action | outside_count |",
            "|---|---|---|---|---|---|"]
    edges = []
    for (state, observation), entry in TRANSITIONS.items():
        guarded = ([("outside_count + 1 < N", "below N", entry.below),
                    ("outside_count + 1 >= N", "Nth outside fix", entry.reached)]
                   if isinstance(entry, UntilN) else [("", "", entry)])
        for condition, short, step in guarded:
            rows.append(f"| {state} | {observation} | {condition} | {step.next} "
                        f"| {step.action or '-'} | {step.counter} |")
            if step.next is not state or step.action or step.counter is Counter.COUNT:
                label = observation + (f", {short}" if short else "")
                edges.append(f"    {state} --> {step.next}: {label}" + (f" / {step.action}" if step.action else ""))
    legend = ("H = Params.exit_margin_m, N = Params.exit_fixes. OUT_NEAR: outside by at most H metres; "
              "OUT_FAR: outside by more than H metres. A fence missing from DeviceState is OUTSIDE.")
    diagram = ["```mermaid", "stateDiagram-v2", "    [*] --> OUTSIDE", *edges, "```"]
    return "\n".join([*rows, "", legend, "", *diagram]) + "\n"


@dataclass(frozen=True)
class Params:
    exit_margin_m: float = 25.0  # H
    exit_fixes: int = 3  # N
    max_accuracy_m: float = 100.0  # A: a fix less accurate than this never changes state

    def __post_init__(self) -> None:
        if not self.exit_margin_m >= 0:
            raise ConfigError("exit_margin_m", f"must be >= 0, got {self.exit_margin_m!r}")
        if not self.exit_fixes >= 1:
            raise ConfigError("exit_fixes", f"must be >= 1, got {self.exit_fixes!r}")
        if not self.max_accuracy_m > 0:
            raise ConfigError("max_accuracy_m", f"must be > 0, got {self.max_accuracy_m!r}")


class Fix(msgspec.Struct, frozen=True, gc=False):
    """One GPS fix of a guard's device; validates its coordinates when built."""

    device_id: str
    tenant: str
    ts_ms: int
    lat: float
    lon: float
    accuracy_m: float | None = None
    event_id: str = ""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.lat) and math.isfinite(self.lon)
                and -90 <= self.lat <= 90 and -180 <= self.lon <= 180):
            raise InputError(f"fix {self.event_id}: lat {self.lat!r} / lon {self.lon!r} out of range",
                             reason="bad_coordinates")


@dataclass(frozen=True)
class FenceMembership:
    state: Membership  # INSIDE or LEAVING; OUTSIDE is never stored
    kind: str  # the fence's kind, kept so an exit can be reported after the fence is gone
    entered_ms: int
    outside_count: int = 0
    version_ms: int = 0  # the fence's updated_ms when entered


@dataclass(frozen=True)
class DeviceState:
    device_id: str
    tenant: str
    fences: Mapping[str, FenceMembership] = field(default_factory=dict)
    last_applied_ts_ms: int | None = None
    last_lat: float | None = None
    last_lon: float | None = None
    violation_open: bool = False

    def to_dict(self) -> dict[str, Any]:
        # spelled out rather than dataclasses.asdict: written to the changelog for every moved device
        return {"device_id": self.device_id, "tenant": self.tenant,
                "fences": {fid: {"state": str(m.state), "kind": m.kind, "entered_ms": m.entered_ms,
                                 "outside_count": m.outside_count, "version_ms": m.version_ms}
                           for fid, m in self.fences.items()},
                "last_applied_ts_ms": self.last_applied_ts_ms, "last_lat": self.last_lat,
                "last_lon": self.last_lon, "violation_open": self.violation_open}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DeviceState:
        fences = {fid: FenceMembership(**{**m, "state": Membership(m["state"])})
                  for fid, m in data.get("fences", {}).items()}
        return cls(**{**data, "fences": fences})


@dataclass(frozen=True)
class GeofenceTransition:
    device_id: str
    tenant: str
    fence_id: str
    fence_kind: str
    transition: Action
    ts_ms: int
    lat: float
    lon: float
    dwell_ms: int | None  # on EXIT: time since ENTER
    cause: str  # "fix", "fence_deleted" or "fence_changed"
    event_id: str  # deterministic, unique per source fix, fence and transition


@dataclass(frozen=True)
class ViolationStarted:
    device_id: str
    tenant: str
    ts_ms: int
    lat: float
    lon: float
    cause: str  # "outside_sites" or "restricted_zone"
    restricted_fences: tuple[str, ...]
    event_id: str


@dataclass(frozen=True)
class ViolationEnded:
    device_id: str
    tenant: str
    ts_ms: int
    lat: float
    lon: float
    event_id: str


Output = GeofenceTransition | ViolationStarted | ViolationEnded


class Enrichment(msgspec.Struct, frozen=True, gc=False):
    """What a GuardPosition carries after this fix (hysteresis applied)."""

    fences: tuple[str, ...]  # sorted ids of fences the device is INSIDE or LEAVING
    in_site: bool | None  # None when the tenant has no SITE fence
    violation: bool


class FixResult(NamedTuple):
    state: DeviceState
    outputs: list[Output]
    enrichment: Enrichment
    skipped: str | None = None  # "poor_accuracy" or "stale" when the fix changed nothing


class BatchResult(NamedTuple):
    states: dict[str, DeviceState]  # final state of every device seen in the batch
    results: list[FixResult]  # one per fix, in input order


DEFAULT_PARAMS = Params()


def apply_fix(state: DeviceState | None, fix: Fix, index: FenceIndex,
              params: Params = DEFAULT_PARAMS) -> FixResult:
    [inside] = index.containing([fix.tenant], [fix.lat], [fix.lon])
    return _apply(state, fix, inside, index, params)


def apply_batch(states: Mapping[str, DeviceState], fixes: list[Fix], index: FenceIndex,
                params: Params = DEFAULT_PARAMS) -> BatchResult:
    """Apply fixes in order with one containment query for the whole batch."""
    inside_sets = index.containing([f.tenant for f in fixes], [f.lat for f in fixes], [f.lon for f in fixes])
    latest: dict[str, DeviceState] = {}
    results = []
    for fix, inside in zip(fixes, inside_sets):
        prior = latest[fix.device_id] if fix.device_id in latest else states.get(fix.device_id)
        result = _apply(prior, fix, inside, index, params)
        latest[fix.device_id] = result.state
        results.append(result)
    return BatchResult(latest, results)


def fence_removed(state: DeviceState, fence_id: str, now_ms: int, *,
                  cause: str = "fence_deleted") -> tuple[DeviceState, list[Output]]:
    """Exit the device from a deleted (or, with cause="fence_changed", reshaped) fence now.

    Violations are judged again at the device's next fix.
    """
    prior = state.fences.get(fence_id)
    if prior is None:
        return state, []
    exit_event = GeofenceTransition(
        device_id=state.device_id, tenant=state.tenant, fence_id=fence_id, fence_kind=prior.kind,
        transition=Action.EXIT, ts_ms=now_ms, lat=state.last_lat, lon=state.last_lon,
        dwell_ms=max(0, now_ms - prior.entered_ms), cause=cause,
        # now_ms is processing time; the entry time makes the id repeatable on replay
        event_id=f"{cause}:{fence_id}:{state.device_id}:{prior.entered_ms}")
    remaining = {fid: m for fid, m in state.fences.items() if fid != fence_id}
    return replace(state, fences=remaining), [exit_event]


def _apply(state: DeviceState | None, fix: Fix, inside: frozenset[str], index: FenceIndex,
           params: Params) -> FixResult:
    state = state or DeviceState(device_id=fix.device_id, tenant=fix.tenant)
    skipped = _skip_reason(state, fix, params)
    if skipped:
        return FixResult(state, [], _enrichment(state, _in_site(state, index)), skipped)
    fences, transitions = _step_fences(state, fix, inside, index, params)
    # the constructor, not dataclasses.replace: this runs once per GPS fix
    moved = DeviceState(state.device_id, fix.tenant, fences, fix.ts_ms, fix.lat, fix.lon, state.violation_open)
    in_site = _in_site(moved, index)
    moved, violation_events = _judge_violation(moved, fix, in_site)
    return FixResult(moved, transitions + violation_events, _enrichment(moved, in_site))


def _skip_reason(state: DeviceState, fix: Fix, params: Params) -> str | None:
    if fix.accuracy_m is not None and not fix.accuracy_m <= params.max_accuracy_m:
        return "poor_accuracy"
    # Equal timestamps count as stale: a redelivered fix must not count twice towards N.
    if state.last_applied_ts_ms is not None and fix.ts_ms <= state.last_applied_ts_ms:
        return "stale"
    return None


def _step_fences(state: DeviceState, fix: Fix, inside: frozenset[str], index: FenceIndex,
                 params: Params) -> tuple[dict[str, FenceMembership], list[Output]]:
    # Only fences the device is in, or now inside, can change: OUTSIDE + OUT_* is a no-op.
    if not state.fences and not inside:
        return {}, []
    memberships: dict[str, FenceMembership] = {}
    exits: list[Output] = []
    enters: list[Output] = []
    for fence_id in sorted(state.fences.keys() | inside):
        prior = state.fences.get(fence_id)
        observation = _observe(fence_id, fix, inside, index, params)
        step, count = next_step(prior.state if prior else Membership.OUTSIDE, observation,
                                prior.outside_count if prior else 0, params.exit_fixes)
        fence = index.get(fence_id)
        if step.action is Action.EXIT:
            cause = _exit_cause(observation, fence_id, prior, index)
            exits.append(_transition(fix, fence_id, prior.kind, Action.EXIT, fix.ts_ms - prior.entered_ms, cause))
        elif step.action is Action.ENTER:
            enters.append(_transition(fix, fence_id, fence.kind, Action.ENTER, None, "fix"))
            memberships[fence_id] = FenceMembership(Membership.INSIDE, fence.kind, fix.ts_ms, 0, fence.updated_ms)
        elif step.next is not Membership.OUTSIDE:
            if prior.state is step.next and prior.outside_count == count and prior.kind == fence.kind:
                memberships[fence_id] = prior  # the common case, a guard staying inside: nothing changed
            else:
                # the constructor, not dataclasses.replace: this runs per fence per GPS fix
                memberships[fence_id] = FenceMembership(step.next, fence.kind, prior.entered_ms, count,
                                                        prior.version_ms)
    return memberships, exits + enters


def _observe(fence_id: str, fix: Fix, inside: frozenset[str], index: FenceIndex,
             params: Params) -> Observation:
    fence = index.get(fence_id)
    if fence is None or fence.tenant != fix.tenant:
        return Observation.FENCE_DELETED
    if fence_id in inside:
        return Observation.IN
    distance = index.distance_outside_m(fence_id, fix.lat, fix.lon)
    return Observation.OUT_FAR if distance > params.exit_margin_m else Observation.OUT_NEAR


def _exit_cause(observation: Observation, fence_id: str, prior: FenceMembership, index: FenceIndex) -> str:
    if observation is Observation.FENCE_DELETED:
        return "fence_deleted"
    # The fence was edited while the device was inside; the exit was judged against the new shape.
    if index.get(fence_id).updated_ms != prior.version_ms:
        return "fence_changed"
    return "fix"


def _transition(fix: Fix, fence_id: str, kind: str, action: Action, dwell_ms: int | None,
                cause: str) -> GeofenceTransition:
    return GeofenceTransition(
        device_id=fix.device_id, tenant=fix.tenant, fence_id=fence_id, fence_kind=kind,
        transition=action, ts_ms=fix.ts_ms, lat=fix.lat, lon=fix.lon, dwell_ms=dwell_ms,
        cause=cause, event_id=f"{fix.event_id}:{fence_id}:{action}")


def _in_site(state: DeviceState, index: FenceIndex) -> bool | None:
    if not index.has_sites(state.tenant):
        return None
    return any(m.kind == "SITE" for m in state.fences.values())


def _judge_violation(state: DeviceState, fix: Fix, in_site: bool | None) -> tuple[DeviceState, list[Output]]:
    """Open or close the violation episode; one ViolationStarted per episode.
    ``in_site`` is :func:`_in_site` of ``state``."""
    restricted = tuple(sorted(fid for fid, m in state.fences.items() if m.kind == "RESTRICTED")) \
        if state.fences else ()
    violating = in_site is False or bool(restricted)
    if violating == state.violation_open:
        return state, []
    where = dict(device_id=fix.device_id, tenant=fix.tenant, ts_ms=fix.ts_ms, lat=fix.lat, lon=fix.lon)
    if violating:
        cause = "restricted_zone" if restricted else "outside_sites"
        event: Output = ViolationStarted(**where, cause=cause, restricted_fences=restricted,
                                         event_id=f"{fix.event_id}:violation_started")
    else:
        event = ViolationEnded(**where, event_id=f"{fix.event_id}:violation_ended")
    return DeviceState(state.device_id, state.tenant, state.fences, state.last_applied_ts_ms, state.last_lat,
                       state.last_lon, violating), [event]


def _enrichment(state: DeviceState, in_site: bool | None) -> Enrichment:
    return Enrichment(tuple(sorted(state.fences)) if state.fences else (), in_site, state.violation_open)
