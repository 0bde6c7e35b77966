"""Notification rules files: the shipped one loads, a bad one is one line naming the problem; messages."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from dataclasses import replace

import pytest

from guardstream.errors import InputError
from guardstream.notifier.decide import Alert
from guardstream.notifier.messages import (IDEMPOTENCY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, Notice,
                                           email_message, idempotency_key, push_topic, sms_text, webhook_body,
                                           webhook_headers)
from guardstream.notifier.rules import DEFAULT_RULES_PATH, RateLimit, load_rules, parse_rules

GOOD = """
[recipients.ops]
email = "ops@example.invalid"
[[rules]]
name = "all"
  [[rules.tiers]]
  recipients = ["ops"]
  channels = ["email"]
"""


def test_the_shipped_rules_load():
    rules = load_rules()
    assert rules.rules and rules.rate_limits["sms"] == RateLimit(10, 60_000) and "PANIC" in rules.life_safety
    assert load_rules(DEFAULT_RULES_PATH) == rules


@pytest.mark.parametrize("text, problem", [
    ("rules = [", "is not TOML"),
    ("colour = 'red'\n" + GOOD, "unknown key 'colour'"),
    (GOOD.replace('channels = ["email"]', 'channels = ["pigeon"]'), "'pigeon' is not one of email, webhook, sms"),
    (GOOD.replace('channels = ["email"]', 'channels = ["sms"]'), "recipient 'ops' has no phone for channel sms"),
    (GOOD.replace('recipients = ["ops"]', 'recipients = ["nobody"]'), "recipient 'nobody' is not in [recipients]"),
    (GOOD.replace('name = "all"', 'name = "all"\nkinds = ["PANICK"]'), "'PANICK' is not one of PANIC"),
    (GOOD + '  escalate_after_s = 60\n  [[rules.tiers]]\n  recipients = ["ops"]\n  channels = ["email"]\n'
     '  [[rules.tiers]]\n  recipients = ["ops"]\n  channels = ["email"]\n', "tier 2: needs escalate_after_s"),
    (GOOD.replace('email = "ops@example.invalid"', 'email = "ops@example.invalid"\nquiet_hours = "late"'),
     "quiet_hours 'late' is not HH:MM-HH:MM"),
    (GOOD.replace('email = "ops@example.invalid"', 'email = "ops"'), "email 'ops' is not an address"),
    (GOOD.replace('email = "ops@example.invalid"',
                  'email = "ops@example.invalid"\nquiet_hours = "22:00-06:00"\ntimezone = "Mars/Olympus"'),
     "timezone 'Mars/Olympus' is not a known time zone"),
    ("[rate_limits]\nsms = -1\n" + GOOD, "[rate_limits].sms: must be a whole number >= 0"),
    ("[rate_limits]\nsms = { count = 3, per_s = 0 }\n" + GOOD, "[rate_limits].sms: must be a whole number"),
    (GOOD + GOOD.split("[[rules]]")[1].join(["[[rules]]", ""]), "two rules share a name"),
])
def test_a_bad_rules_file_is_one_line_naming_the_problem(tmp_path, text, problem):
    path = tmp_path / "rules.toml"
    path.write_text(text)
    with pytest.raises(InputError) as caught:
        load_rules(path)
    assert caught.value.reason == "bad_notify_rules"
    assert problem in caught.value.detail and "\n" not in caught.value.detail


def test_a_rate_limit_is_per_minute_or_per_window():
    rules = parse_rules({"rate_limits": {"sms": 10, "email": {"count": 3, "per_s": 2.5}, "webhook": 0}})
    assert rules.rate_limits == {"sms": RateLimit(10, 60_000), "email": RateLimit(3, 2500), "webhook": RateLimit(0)}


def test_a_missing_rules_file_is_named(tmp_path):
    with pytest.raises(InputError, match="cannot be read"):
        load_rules(tmp_path / "nope.toml")


ALERT = Alert("al-7", "acme", "guard-7", "PANIC", "CRITICAL", 1_795_000_000_000, 52.52, 13.405, "help <now>", "hq")
NOTICE = Notice(ALERT, "email", "ops", "ops@example.invalid", 2, "https://dash.example.invalid/")


def test_the_email_carries_alert_guard_site_and_dashboard_link_as_text_and_html():
    message = email_message(NOTICE, "gs@example.invalid")
    text = message.get_body(("plain",)).get_content()
    page = message.get_body(("html",)).get_content()
    assert message["Subject"] == "CRITICAL PANIC: guard-7 at hq (escalation tier 2)"
    for part in (text, page):
        assert "guard-7" in part and "hq" in part and "https://dash.example.invalid/#alert=al-7" in part
    assert "help &lt;now&gt;" in page and "help <now>" in text
    assert message["Message-ID"] == email_message(NOTICE, "gs@example.invalid")["Message-ID"]  # stable per key


def test_the_webhook_signature_covers_timestamp_and_body():
    body = webhook_body(NOTICE)
    headers = webhook_headers(b"s3cret", 1_795_000_000, NOTICE, body)
    expected = hmac.new(b"s3cret", b"1795000000." + body, hashlib.sha256).hexdigest()
    assert headers[SIGNATURE_HEADER] == f"sha256={expected}" and headers[TIMESTAMP_HEADER] == "1795000000"
    assert headers[IDEMPOTENCY_HEADER] == idempotency_key("al-7", "email", "ops", 2) == NOTICE.key
    assert json.loads(body)["alert"]["site"] == "hq"


def test_the_idempotency_key_is_the_notification_s_identity_and_every_provider_takes_it():
    identities = [("al-7", "email", "ops", 1), ("al-7", "sms", "ops", 1), ("al-7", "email", "boss", 1),
                  ("al-7", "email", "ops", 2), ("al-8", "email", "ops", 1), ("al-7\nemail", "ops", "x", 1)]
    keys = [idempotency_key(*identity) for identity in identities]
    assert len(set(keys)) == len(keys)  # one per alert, channel, recipient and tier
    assert keys[0] == idempotency_key("al-7", "email", "ops", 1)  # and the same on every attempt
    assert all(re.fullmatch(r"[A-Za-z0-9_:-]{1,255}", key) for key in keys)
    message = email_message(NOTICE, "gs@example.invalid")
    assert message[IDEMPOTENCY_HEADER] == NOTICE.key and message["Message-ID"] == f"<{NOTICE.key}@guardstream>"
    push = replace(NOTICE, channel="push")
    assert push_topic(push) == push_topic(replace(push, dashboard_url="elsewhere")) != push_topic(NOTICE)
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,32}", push_topic(push))  # RFC 8030: at most 32 URL-safe characters


def test_an_sms_fits_two_segments():
    long = Notice(Alert("a", "t", "d", "SOS", "CRITICAL", 0, message="x" * 1000), "sms", "ops", "+1555", 1, "http://d/")
    assert len(sms_text(long)) == 320 and sms_text(NOTICE).endswith("#alert=al-7")
