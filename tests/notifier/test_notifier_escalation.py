"""Escalation as a real process: no acknowledgement -> the next tier after its time; an acknowledgement
stops it; the timer and the acknowledgement both survive a kill -9 of the notifier."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from support.notify import Alerts, HttpReceiver, MailBox, Notifier, rules_file, start_group_at_end

from guardstream.infra.migrate import migrate
from guardstream.infra.stack import wait_until

pytestmark = pytest.mark.slow

ESCALATE_AFTER_S = 2
TIERS = f"""
[[rules.tiers]]
recipients = ["ops"]
channels = ["email"]
escalate_after_s = {ESCALATE_AFTER_S}

[[rules.tiers]]
recipients = ["boss"]
channels = ["email"]
"""


@pytest.fixture
def notifier(applied, database_url, unique, tmp_path) -> Iterator[Notifier]:
    migrate(database_url)
    group = f"test-escalate-{unique}"
    start_group_at_end(applied, group)
    mail, http = MailBox(), HttpReceiver()
    rules = rules_file(tmp_path / "rules.toml", f"t{unique}", http.url + "/hook", TIERS)
    process = Notifier(applied, database_url, group, rules, mail, http, tmp_path / "notifier.log")
    yield process
    process.stop()
    mail.stop()
    http.close()


def mail_to(notifier: Notifier, address: str, alert_id: str) -> list:
    return [m for m in notifier.mail.received() if m["To"] == address and m["X-Guardstream-Alert"] == alert_id]


def state_of(notifier: Notifier, alert_id: str) -> str | None:
    rows = notifier.rows("SELECT state FROM notify_escalations WHERE alert_id = %s", alert_id)
    return rows[0][0] if rows else None


def test_no_acknowledgement_escalates_after_the_rule_s_time_and_one_stops_it(notifier, unique):
    alerts = Alerts(notifier.settings, f"t{unique}")
    open_, acked = f"open-{unique}", f"acked-{unique}"
    notifier.start()
    alerts.alert(open_)
    alerts.alert(acked)
    alerts.flush()
    wait_until(lambda: mail_to(notifier, "ops@example.invalid", open_) and
               mail_to(notifier, "ops@example.invalid", acked), 30, "tier 1 of both alerts")
    alerts.action(acked, "ACKNOWLEDGE")
    alerts.flush()
    wait_until(lambda: state_of(notifier, acked) == "STOPPED", 30, "the acknowledgement read")
    wait_until(lambda: mail_to(notifier, "boss@example.invalid", open_), 30, "tier 2 of the open alert")

    [(first, second)] = notifier.rows(
        "SELECT min(created_at) FILTER (WHERE tier = 1), min(sent_at) FILTER (WHERE tier = 2) FROM notifications "
        "WHERE alert_id = %s", open_)
    assert (second - first).total_seconds() >= ESCALATE_AFTER_S  # tier 1 planned -> tier 2 sent
    [escalated] = mail_to(notifier, "boss@example.invalid", open_)
    assert "(escalation tier 2)" in escalated["Subject"]
    assert state_of(notifier, open_) == "EXHAUSTED"
    # the acknowledged alert was due as early as the open one, and stayed at tier 1
    assert mail_to(notifier, "boss@example.invalid", acked) == []
    assert notifier.rows("SELECT tier, status FROM notifications WHERE alert_id = %s", acked) == [(1, "sent")]
    assert notifier.rows("SELECT stopped_by FROM notify_escalations WHERE alert_id = %s", acked) == [("ACKNOWLEDGE",)]
    assert notifier.metric("guardstream_notifier_escalated_total", kind="email") == 1


def test_the_timer_and_an_acknowledgement_survive_a_kill(notifier, unique):
    alerts = Alerts(notifier.settings, f"t{unique}")
    open_, acked = f"open-{unique}", f"acked-{unique}"
    notifier.start()
    alerts.alert(open_)
    alerts.alert(acked)
    alerts.flush()
    wait_until(lambda: notifier.count("status = 'sent'") == 2, 30, "tier 1 of both alerts")
    notifier.kill()
    alerts.action(acked, "RESOLVE")  # given while the notifier is away
    alerts.flush()
    [(due_ms,)] = notifier.rows("SELECT max(due_at_ms) FROM notify_escalations")
    wait_until(lambda: time.time() * 1000 > due_ms + 500, ESCALATE_AFTER_S + 10, "both timers past due")
    notifier.start()
    wait_until(lambda: mail_to(notifier, "boss@example.invalid", open_), 30, "tier 2 of the open alert")
    wait_until(lambda: state_of(notifier, acked) == "STOPPED", 30, "the resolution read")
    assert mail_to(notifier, "boss@example.invalid", acked) == []
    assert notifier.count("alert_id = %s AND tier = 2", acked) == 0
    assert len(mail_to(notifier, "ops@example.invalid", open_)) == 1  # tier 1 not sent again after the restart
