"""The notifier's decisions, over plain data: an alert, an action or a timer, the alert's
escalation row and the clock in; what to store and whom to notify on which channel out.

:func:`decide` is the centre: the shell (``notifier/service.py``) reads a record or a due
timer, loads the alert's row, calls it and writes what it returned, in one transaction.
The send-time decisions are here too: :func:`rate_hold` (a channel's per-tenant limit),
:func:`after_failure` (retry with backoff, or a dead letter), :func:`quiet_until`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from guardstream.notifier.escalation import Effect, Event, State, step
from guardstream.notifier.rules import QuietHours, RateLimit, RuleSet

HELD_QUIET = "quiet_hours"
HELD_RATE = "rate_limit"
SKIPPED_UNCONFIGURED = "channel_not_configured"


@dataclass(frozen=True)
class Alert:
    """What a notification says about its alert (a guardstream.DeviceAlert, plus its site)."""

    event_id: str
    tenant: str
    device_id: str
    kind: str
    severity: str
    ts_ms: int
    lat: float | None = None
    lon: float | None = None
    message: str | None = None
    site: str | None = None

    @classmethod
    def of(cls, record: Mapping[str, Any], sites: Mapping[str, str]) -> Alert:
        return cls(record["event_id"], record["tenant"], record["device_id"], record["kind"], record["severity"],
                   record["ts_ms"], record.get("lat"), record.get("lon"), record.get("message"),
                   sites.get(record["device_id"]))

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Alert:
        return cls(**data)


@dataclass(frozen=True)
class Tracked:
    """An alert's escalation row (table notify_escalations)."""

    alert_id: str
    tenant: str
    state: State
    tier: int = 0
    rule: str | None = None
    due_at_ms: int | None = None
    alert: Alert | None = None
    stopped_by: str | None = None


# -- what happened ----------------------------------------------------------------------------

@dataclass(frozen=True)
class NewAlert:
    alert: Alert


@dataclass(frozen=True)
class Action:
    alert_id: str
    tenant: str
    action: str  # ACKNOWLEDGE, RESOLVE, FALSE_ALARM


@dataclass(frozen=True)
class Due:
    alert_id: str


# -- what to do -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Planned:
    """A notifications row to claim (insert unless its key exists)."""

    alert_id: str
    tenant: str
    channel: str
    recipient: str
    address: str
    tier: int
    status: str  # pending, held or skipped
    not_before_ms: int
    held_reason: str | None = None


@dataclass(frozen=True)
class Decision:
    tracked: Tracked | None  # the row to store; None: leave it as it is
    notify: tuple[Planned, ...] = ()
    cancel_unsent: bool = False
    escalated: bool = False  # a tier after the first was notified
    ignored: str | None = None  # why nothing happened, as a reason code


def decide(event: NewAlert | Action | Due, tracked: Tracked | None, rules: RuleSet, now_ms: int,
           configured: frozenset[str]) -> Decision:
    """The one decision for ``event`` about the alert whose row is ``tracked`` (None: never seen)."""
    if isinstance(event, Action):
        if tracked is not None and tracked.tenant != event.tenant:
            return Decision(None, ignored="tenant_mismatch")
        current = tracked or Tracked(event.alert_id, event.tenant, State.NEW)
        taken, _ = step(current.state, Event.STOP, current.tier, 0)
        if taken.next is current.state:
            return Decision(None)
        stopped = replace(current, state=taken.next, due_at_ms=None, stopped_by=event.action)
        return Decision(stopped, cancel_unsent=taken.effect is Effect.CANCEL_UNSENT)
    if isinstance(event, NewAlert):
        alert = event.alert
        if tracked is not None and tracked.tenant != alert.tenant:
            tracked = None  # an action of another tenant never stops this tenant's alert
        if tracked is not None and tracked.state is not State.NEW:
            return Decision(None, ignored="seen" if tracked.state is not State.STOPPED else "stopped_before")
        rule = rules.route(alert.tenant, alert.kind, alert.severity, alert.site)
        if rule is None:
            return Decision(None, ignored="no_rule")
        current = Tracked(alert.event_id, alert.tenant, State.NEW, 0, rule.name, None, alert)
        return _advance(current, Event.ALERT, rules, now_ms, configured)
    if tracked is None or tracked.alert is None:
        return Decision(None, ignored="unknown_alert")
    return _advance(tracked, Event.DUE, rules, now_ms, configured)


def _advance(current: Tracked, event: Event, rules: RuleSet, now_ms: int, configured: frozenset[str]) -> Decision:
    rule = next((r for r in rules.rules if r.name == current.rule), None)
    if rule is None:  # the rules file changed under a running escalation: it ends where it is
        return Decision(replace(current, state=State.EXHAUSTED, due_at_ms=None), ignored="rule_gone")
    taken, tier = step(current.state, event, current.tier, len(rule.tiers))
    if taken.effect is not Effect.NOTIFY_NEXT:
        return Decision(replace(current, state=taken.next) if taken.next is not current.state else None)
    spec = rule.tiers[tier - 1]
    alert = current.alert
    assert alert is not None
    due = now_ms + spec.escalate_after_ms if taken.next is State.NOTIFYING and spec.escalate_after_ms else None
    planned = []
    for name in spec.recipients:
        recipient = rules.recipients[name]
        quiet = None if alert.kind in rules.life_safety or recipient.quiet is None \
            else quiet_until(recipient.quiet, now_ms)
        for channel in spec.channels:
            address = recipient.address(channel) or ""
            if channel not in configured:
                status, held, at = "skipped", SKIPPED_UNCONFIGURED, now_ms
            elif quiet is not None:
                status, held, at = "held", HELD_QUIET, quiet
            else:
                status, held, at = "pending", None, now_ms
            planned.append(Planned(alert.event_id, alert.tenant, channel, name, address, tier, status, at, held))
    moved = replace(current, state=taken.next, tier=tier, due_at_ms=due)
    return Decision(moved, tuple(planned), escalated=tier > 1)


# -- at send time --------------------------------------------------------------------------------

def quiet_until(quiet: QuietHours, now_ms: int) -> int | None:
    """When ``quiet`` ends (epoch ms) if ``now_ms`` falls in it, else None."""
    zone = ZoneInfo(quiet.zone)
    now = datetime.fromtimestamp(now_ms / 1000, UTC).astimezone(zone)
    clock = now.time().replace(tzinfo=None)
    overnight = quiet.end < quiet.start
    inside = (quiet.start <= clock or clock < quiet.end) if overnight else (quiet.start <= clock < quiet.end)
    if not inside:
        return None
    end_day = now.date() + timedelta(days=1) if overnight and clock >= quiet.start else now.date()
    end = datetime.combine(end_day, quiet.end, tzinfo=zone)
    return int(end.timestamp() * 1000)


def rate_hold(claims_ms: Sequence[int], limit: RateLimit, now_ms: int) -> int | None:
    """When the next send may go (epoch ms), or None if it may go now: at most ``limit.count`` sends in
    any window. ``claims_ms``: the send times of this tenant and channel in the last window, any order."""
    if limit.count <= 0:
        return None
    recent = sorted(t for t in claims_ms if t > now_ms - limit.window_ms)
    if len(recent) < limit.count:
        return None
    return recent[-limit.count] + limit.window_ms


@dataclass(frozen=True)
class Retry:
    at_ms: int


@dataclass(frozen=True)
class GiveUp:
    reason: str


def after_failure(attempts: int, max_attempts: int, permanent: bool, now_ms: int, base_ms: int,
                  max_ms: int) -> Retry | GiveUp:
    """What follows a failed send, the ``attempts``-th: another try after a doubling wait, or a dead letter."""
    if permanent:
        return GiveUp("rejected_by_provider")
    if attempts >= max_attempts:
        return GiveUp("attempts_exhausted")
    return Retry(now_ms + min(max_ms, base_ms * 2 ** (attempts - 1)))
