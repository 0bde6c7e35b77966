"""The notifier's pure core: routing, escalation steps, quiet hours, rate limits, retries — case tables."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from guardstream.notifier.decide import (HELD_QUIET, SKIPPED_UNCONFIGURED, Action, Alert, Due,
                                         GiveUp, NewAlert, Retry, Tracked, after_failure, decide, quiet_until,
                                         rate_hold)
from guardstream.notifier.escalation import TRANSITIONS, Event, State, step, transition_table_markdown
from guardstream.notifier.rules import QuietHours, RateLimit, parse_rules

RATE_WINDOW_MS = 60_000

ROOT = Path(__file__).resolve().parents[2]
ALL = frozenset({"email", "webhook", "sms"})
T0 = int(datetime(2026, 3, 2, 12, 0, tzinfo=UTC).timestamp() * 1000)  # a Monday, noon UTC

RULES = parse_rules({
    "life_safety": ["PANIC"],
    "rate_limits": {"sms": 2},
    "sites": {"guard-1": "hq"},
    "recipients": {
        "ops": {"email": "ops@example.invalid", "phone": "+15550100", "webhook": "http://127.0.0.1:1/hook"},
        "boss": {"email": "boss@example.invalid", "phone": "+15550101", "quiet_hours": "11:00-13:00"},
        "night": {"email": "night@example.invalid", "quiet_hours": "22:00-06:00", "timezone": "Europe/Berlin"},
    },
    "rules": [
        {"name": "hq-fire", "sites": ["hq"], "kinds": ["FIRE"],
         "tiers": [{"recipients": ["night"], "channels": ["email"]}]},
        {"name": "acme", "tenants": ["acme"], "severities": ["CRITICAL"],
         "tiers": [{"recipients": ["ops"], "channels": ["email", "sms"], "escalate_after_s": 60},
                   {"recipients": ["boss"], "channels": ["sms", "email"], "escalate_after_s": 120},
                   {"recipients": ["boss", "ops"], "channels": ["email"]}]},
    ],
})


def alert(kind: str = "SOS", tenant: str = "acme", device: str = "guard-9", severity: str = "CRITICAL",
          event_id: str = "a-1") -> Alert:
    return Alert.of({"event_id": event_id, "tenant": tenant, "device_id": device, "kind": kind,
                     "severity": severity, "ts_ms": T0}, RULES.sites)


def keys(decision) -> list[tuple[str, str, int, str]]:
    return [(p.channel, p.recipient, p.tier, p.status) for p in decision.notify]


# -- routing ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("event, rule", [
    (alert(), "acme"),
    (alert(tenant="other"), None),
    (alert(severity="HIGH"), None),
    (alert(kind="FIRE", device="guard-1", tenant="other"), "hq-fire"),  # the site rule comes first, any tenant
    (alert(kind="FIRE", device="guard-2"), "acme"),  # no site: the site rule does not match
])
def test_the_first_matching_rule_routes(event, rule):
    decision = decide(NewAlert(event), None, RULES, T0, ALL)
    if rule is None:
        assert decision.tracked is None and decision.ignored == "no_rule" and not decision.notify
    else:
        assert decision.tracked.rule == rule


def test_a_new_alert_notifies_the_first_tier_and_sets_the_timer():
    decision = decide(NewAlert(alert()), None, RULES, T0, ALL)
    assert keys(decision) == [("email", "ops", 1, "pending"), ("sms", "ops", 1, "pending")]
    assert decision.tracked.state is State.NOTIFYING and decision.tracked.tier == 1
    assert decision.tracked.due_at_ms == T0 + 60_000
    assert not decision.escalated


def test_due_notifies_the_next_tier_until_the_last():
    first = decide(NewAlert(alert()), None, RULES, T0, ALL).tracked
    second = decide(Due("a-1"), first, RULES, T0 + 60_000, ALL)
    assert second.escalated and second.tracked.tier == 2 and second.tracked.due_at_ms == T0 + 180_000
    assert [k[:3] for k in keys(second)] == [("sms", "boss", 2), ("email", "boss", 2)]
    third = decide(Due("a-1"), second.tracked, RULES, T0 + 180_000, ALL)
    assert third.tracked.state is State.EXHAUSTED and third.tracked.due_at_ms is None
    assert [k[:3] for k in keys(third)] == [("email", "boss", 3), ("email", "ops", 3)]
    assert decide(Due("a-1"), third.tracked, RULES, T0 + 999_000, ALL).notify == ()


@pytest.mark.parametrize("action", ["ACKNOWLEDGE", "RESOLVE", "FALSE_ALARM"])
def test_an_action_stops_the_escalation_and_cancels_what_is_unsent(action):
    first = decide(NewAlert(alert()), None, RULES, T0, ALL).tracked
    stopped = decide(Action("a-1", "acme", action), first, RULES, T0 + 1, ALL)
    assert stopped.tracked.state is State.STOPPED and stopped.cancel_unsent
    assert stopped.tracked.due_at_ms is None and stopped.tracked.stopped_by == action
    assert decide(Due("a-1"), stopped.tracked, RULES, T0 + 60_000, ALL).notify == ()


def test_an_action_before_its_alert_means_the_alert_notifies_nobody():
    early = decide(Action("a-1", "acme", "ACKNOWLEDGE"), None, RULES, T0, ALL)
    assert early.tracked.state is State.STOPPED and not early.cancel_unsent
    late = decide(NewAlert(alert()), early.tracked, RULES, T0 + 5, ALL)
    assert late.notify == () and late.ignored == "stopped_before"


def test_another_tenant_s_action_stops_nothing():
    first = decide(NewAlert(alert()), None, RULES, T0, ALL).tracked
    assert decide(Action("a-1", "intruder", "ACKNOWLEDGE"), first, RULES, T0, ALL).ignored == "tenant_mismatch"
    early = decide(Action("a-1", "intruder", "ACKNOWLEDGE"), None, RULES, T0, ALL).tracked
    assert keys(decide(NewAlert(alert()), early, RULES, T0, ALL))  # still notified


def test_a_replayed_alert_plans_nothing_new():
    first = decide(NewAlert(alert()), None, RULES, T0, ALL).tracked
    again = decide(NewAlert(alert()), first, RULES, T0 + 10, ALL)
    assert again.tracked is None and again.notify == () and again.ignored == "seen"


def test_an_unconfigured_channel_is_recorded_as_skipped():
    decision = decide(NewAlert(alert()), None, RULES, T0, frozenset({"email"}))
    assert keys(decision) == [("email", "ops", 1, "pending"), ("sms", "ops", 1, "skipped")]
    assert decision.notify[1].held_reason == SKIPPED_UNCONFIGURED


# -- quiet hours ------------------------------------------------------------------------------------

def test_quiet_hours_hold_until_they_end_except_for_life_safety():
    at_tier_2 = decide(NewAlert(alert()), None, RULES, T0, ALL).tracked
    held = decide(Due("a-1"), at_tier_2, RULES, T0, ALL)  # noon UTC: boss is quiet 11:00-13:00
    assert {p.status for p in held.notify} == {"held"} and {p.held_reason for p in held.notify} == {HELD_QUIET}
    assert {p.not_before_ms for p in held.notify} == {T0 + 3_600_000}
    panic = decide(NewAlert(alert(kind="PANIC", event_id="p")), None, RULES, T0, ALL).tracked
    loud = decide(Due("p"), panic, RULES, T0, ALL)
    assert {p.status for p in loud.notify} == {"pending"}


@pytest.mark.parametrize("quiet, zone, at, until", [
    ("22:00-06:00", "UTC", "2026-03-02T23:30", "2026-03-03T06:00"),
    ("22:00-06:00", "UTC", "2026-03-02T05:59", "2026-03-02T06:00"),
    ("22:00-06:00", "UTC", "2026-03-02T06:00", None),
    ("22:00-06:00", "UTC", "2026-03-02T21:59", None),
    ("09:00-17:00", "UTC", "2026-03-02T12:00", "2026-03-02T17:00"),
    ("09:00-17:00", "UTC", "2026-03-02T17:00", None),
    ("22:00-06:00", "Europe/Berlin", "2026-03-02T21:30", "2026-03-03T05:00"),  # 22:30 in Berlin (UTC+1)
])
def test_quiet_until(quiet, zone, at, until):
    def ms(text: str) -> int:
        return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)
    assert quiet_until(QuietHours.parse(quiet, zone, "t"), ms(at)) == (ms(until) if until else None)


# -- rate limits and retries -------------------------------------------------------------------------

@pytest.mark.parametrize("claims, limit, until", [
    ([], 10, None),
    ([T0 - 1000] * 9, 10, None),
    ([T0 - 50_000] + [T0 - 1000] * 9, 10, T0 + 10_000),
    ([T0 - 70_000] * 20, 10, None),  # outside the window
    ([T0 - 5] * 100, 0, None),  # 0: no limit
    ([T0 - 30_000, T0 - 20_000], 1, T0 + 40_000),
])
def test_rate_hold(claims, limit, until):
    assert rate_hold(claims, RateLimit(limit), T0) == until


@given(st.lists(st.integers(0, 10 * RATE_WINDOW_MS), max_size=60), st.integers(1, 12),
       st.sampled_from([1000, RATE_WINDOW_MS]))
def test_sending_at_each_allowed_time_never_exceeds_the_limit_in_any_window(arrivals, count, window_ms):
    limit, sent = RateLimit(count, window_ms), []
    for at in sorted(arrivals):
        while (until := rate_hold(sent, limit, at)) is not None:
            assert until > at
            at = until
        sent.append(at)
    for t in sent:
        assert sum(1 for s in sent if t - window_ms < s <= t) <= count


@pytest.mark.parametrize("attempts, permanent, outcome", [
    (1, False, Retry(T0 + 1000)),
    (2, False, Retry(T0 + 2000)),
    (4, False, Retry(T0 + 8000)),
    (7, False, Retry(T0 + 10_000)),  # capped
    (8, False, GiveUp("attempts_exhausted")),
    (1, True, GiveUp("rejected_by_provider")),
])
def test_after_failure(attempts, permanent, outcome):
    assert after_failure(attempts, 8, permanent, T0, 1000, 10_000) == outcome


# -- the transition table ----------------------------------------------------------------------------

def test_every_state_and_event_but_a_timer_without_one_has_an_entry():
    missing = {(s, e) for s in State for e in Event} - set(TRANSITIONS)
    assert missing == {(State.NEW, Event.DUE)}
    with pytest.raises(KeyError):
        step(State.NEW, Event.DUE, 0, 2)


def test_stopped_is_final():
    assert all(TRANSITIONS[(State.STOPPED, e)].next is State.STOPPED for e in Event)


def test_the_docs_page_is_the_table():
    assert (ROOT / "docs" / "notify-escalation.md").read_text() == transition_table_markdown()


def test_tracked_round_trips_through_its_alert_json():
    tracked = Tracked("a-1", "acme", State.NOTIFYING, 1, "acme", 5, alert())
    assert Alert.from_json(tracked.alert.to_json()) == tracked.alert
