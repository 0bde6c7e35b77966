"""``guardstream notifier`` as a real process: tansu, PostgreSQL, an SMTP server and an HTTP server.

The first test goes the whole way: a panic published on MQTT (mosquitto), through ``guardstream bridge``
and ``worker`` to events.critical, to the notifier and its receivers. The others write alerts straight
to events.critical.

Each test has its own database, consumer group (started at the topics' end) and tenant, and
its own receivers, so what the receivers hold is this test's alone.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from support.notify import SECRET, SMS_PATH, Alerts, HttpReceiver, MailBox, Notifier, rules_file, start_group_at_end
from support.processes import WORKER_ENGINES, collect, publisher

from guardstream.catalog import TOPICS
from guardstream.connectors.raw import message_id
from guardstream.infra.migrate import migrate
from guardstream.infra.stack import wait_until
from guardstream.notifier.messages import IDEMPOTENCY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER
from guardstream.records import DEAD_LETTER
from guardstream.schemas.codec import Codec
from guardstream.schemas.registry import FileRegistry
from guardstream.settings import Settings

pytestmark = pytest.mark.slow

HOOK = "/hook"
EVERY_CHANNEL = """
[[rules.tiers]]
recipients = ["ops"]
channels = ["email", "webhook", "sms"]
"""


@pytest.fixture
def receivers() -> Iterator[tuple[MailBox, HttpReceiver]]:
    mail, http = MailBox(), HttpReceiver()
    yield mail, http
    mail.stop()
    http.close()


@pytest.fixture
def notifier(applied, database_url, unique, tmp_path, receivers) -> Iterator[Notifier]:
    migrate(database_url)
    group = f"test-notify-{unique}"
    start_group_at_end(applied, group)
    mail, http = receivers
    rules = rules_file(tmp_path / "rules.toml", f"t{unique}", http.url + HOOK, EVERY_CHANNEL)
    process = Notifier(applied, database_url, group, rules, mail, http, tmp_path / "notifier.log")
    yield process
    process.stop()


def keys_of(notifier: Notifier) -> dict[str, list[str]]:
    """Idempotency keys received, per channel (a repeat shows as the same key twice)."""
    return {"email": [m[IDEMPOTENCY_HEADER] for m in notifier.mail.received()],
            "webhook": [r.headers[IDEMPOTENCY_HEADER] for r in notifier.http.received(HOOK)],
            "sms": [r.headers[IDEMPOTENCY_HEADER] for r in notifier.http.received(SMS_PATH)]}


def alerts_of(notifier: Notifier) -> dict[str, list[str]]:
    """Alert ids received, per channel, from what each message says."""
    return {"email": [m["X-Guardstream-Alert"] for m in notifier.mail.received()],
            "webhook": [r.json()["alert"]["event_id"] for r in notifier.http.received(HOOK)],
            "sms": [r.form()["Body"].rsplit("#alert=", 1)[1] for r in notifier.http.received(SMS_PATH)]}


def signed(request) -> bool:
    """The webhook's signature is the HMAC of its timestamp and body with the shared secret."""
    expected = hmac.new(SECRET.encode(), request.headers[TIMESTAMP_HEADER].encode() + b"." + request.body,
                        hashlib.sha256).hexdigest()
    return request.headers[SIGNATURE_HEADER] == f"sha256={expected}"


def publish_panic(mqtt, device: str, tenant: str, message: str) -> str:
    """A panic button pressed on ``device``; returns the alert's event id (the bridge's message id)."""
    topic = f"alert/panic/{device}"
    payload = json.dumps({"ts": time.time_ns() // 1_000_000, "latitude": 52.5201, "longitude": 13.4049,
                          "message": message, "tenant": tenant}).encode()
    mqtt.publish(topic, payload, qos=1).wait_for_publish(10)
    return message_id(topic, payload)


@pytest.mark.parametrize("engine", WORKER_ENGINES)
def test_a_panic_on_mqtt_reaches_email_webhook_and_sms_once_each(notifier, run_component, unique, engine):
    """mosquitto -> bridge -> worker -> events.critical -> notifier -> the SMTP server, the webhook receiver
    and the SMS provider: each gets the panic once, saying what, who, which tenant and where to look."""
    tenant = f"t{unique}"
    settings = notifier.settings.replace(database_url=notifier.database_url)
    run_component(["bridge"], settings, GUARDSTREAM_BRIDGE_ID=f"b-{unique}",
                  GUARDSTREAM_BRIDGE_SHARED_GROUP=f"g-{unique}")
    run_component(["worker"], settings, GUARDSTREAM_WORKER_ENGINE=engine)
    notifier.start()
    mqtt = publisher(settings, f"pub-{unique}")
    try:
        started = time.monotonic()
        alert_id = publish_panic(mqtt, "guard-1", tenant, "panic button")
        # a bound for a stuck pipeline, not a measurement: bench/notify_latency.py measures
        wait_until(lambda: notifier.count("status = 'sent'") == 3, 60, "the panic sent by email, webhook and SMS")
        print(f"panic on MQTT -> three notifications marked sent: {time.monotonic() - started:.2f} s ({engine})")
        # a second panic behind it: once it has arrived everywhere, a repeat of the first would have too
        later_id = publish_panic(mqtt, "guard-2", tenant, "second panic")
        wait_until(lambda: notifier.count("status = 'sent'") == 6, 60, "the second panic sent")
    finally:
        mqtt.loop_stop()
        mqtt.disconnect()

    link = f"https://dash.example.invalid/#alert={alert_id}"
    mails = [m for m in notifier.mail.received() if m["X-Guardstream-Alert"] == alert_id]
    hooks = [r for r in notifier.http.received(HOOK) if r.json()["alert"]["event_id"] == alert_id]
    texts = [r for r in notifier.http.received(SMS_PATH) if r.form()["Body"].endswith(link)]
    assert (len(mails), len(hooks), len(texts)) == (1, 1, 1)
    assert alerts_of(notifier) == {channel: [alert_id, later_id] for channel in ("email", "webhook", "sms")}

    [mail], [hook], [sms] = mails, hooks, texts
    assert mail["To"] == "ops@example.invalid"
    assert mail["Subject"] == "CRITICAL PANIC: guard-1 at north-gate"
    for part in (mail.get_body(("plain",)).get_content(), mail.get_body(("html",)).get_content()):
        assert all(fact in part for fact in ("PANIC", "guard-1", "north-gate", tenant, "panic button", link)), part
    assert "Tenant: " + tenant in mail.get_body(("plain",)).get_content()

    assert signed(hook)
    body = hook.json()
    assert body["type"] == "guardstream.alert" and body["dashboard_url"] == link
    assert {k: body["alert"][k] for k in ("kind", "severity", "device_id", "tenant", "site", "message")} == {
        "kind": "PANIC", "severity": "CRITICAL", "device_id": "guard-1", "tenant": tenant, "site": "north-gate",
        "message": "panic button"}
    assert (body["alert"]["lat"], body["alert"]["lon"]) == (52.5201, 13.4049)

    form = sms.form()
    assert form["To"] == "+15550100" and form["From"] == "+15559999"
    assert form["Body"].startswith("CRITICAL PANIC: guard-1 at north-gate. panic button")

    rows = notifier.rows("SELECT channel, recipient, tier, status, attempts, sent_at IS NOT NULL FROM notifications "
                         "WHERE alert_id = %s ORDER BY channel", alert_id)
    assert rows == [("email", "ops", 1, "sent", 1, True), ("sms", "ops", 1, "sent", 1, True),
                    ("webhook", "ops", 1, "sent", 1, True)]
    assert notifier.count() == 6


def test_a_panic_reaches_email_webhook_and_sms_once_each(notifier, unique):
    alerts = Alerts(notifier.settings, f"t{unique}")
    notifier.start()
    alerts.alert(f"al-{unique}")
    alerts.flush()
    wait_until(lambda: notifier.count("status = 'sent'") == 3, 30, "three notifications sent")

    [mail] = notifier.mail.received()
    assert mail["To"] == "ops@example.invalid" and mail["From"] == "gs@example.invalid"
    assert mail["Subject"] == "CRITICAL PANIC: guard-1 at north-gate"
    text, page = mail.get_body(("plain",)).get_content(), mail.get_body(("html",)).get_content()
    link = f"https://dash.example.invalid/#alert=al-{unique}"
    for part in (text, page):
        assert "guard-1" in part and "north-gate" in part and link in part and "panic button" in part

    [hook] = notifier.http.received(HOOK)
    expected = hmac.new(SECRET.encode(), hook.headers[TIMESTAMP_HEADER].encode() + b"." + hook.body,
                        hashlib.sha256).hexdigest()
    assert hook.headers[SIGNATURE_HEADER] == f"sha256={expected}"
    assert abs(int(hook.headers[TIMESTAMP_HEADER]) - time.time()) < 60
    assert hook.json()["alert"]["event_id"] == f"al-{unique}" and hook.json()["alert"]["site"] == "north-gate"

    [sms] = notifier.http.received(SMS_PATH)
    assert base64.b64decode(sms.headers["Authorization"].split()[1]) == b"AC-test:sms-token"
    form = sms.form()
    assert form["To"] == "+15550100" and form["From"] == "+15559999" and link in form["Body"]

    rows = notifier.rows("SELECT channel, recipient, tier, status, attempts, sent_at IS NOT NULL, provider_response "
                         "FROM notifications ORDER BY channel")
    assert [r[:6] for r in rows] == [("email", "ops", 1, "sent", 1, True), ("sms", "ops", 1, "sent", 1, True),
                                     ("webhook", "ops", 1, "sent", 1, True)]
    assert '"sid"' in rows[1][6]
    for channel in ("email", "webhook", "sms"):
        assert notifier.metric("guardstream_notifier_sent_total", kind=channel) == 1


def test_kill_9_mid_stream_notifies_each_alert_once_per_channel(notifier, unique):
    total = 500  # the figure
    alerts = Alerts(notifier.settings, f"t{unique}")
    notifier.start()
    for i in range(total):
        alerts.alert(f"al-{unique}-{i}", device=f"guard-{i % 20}")
    alerts.flush()
    wait_until(lambda: sum(len(k) for k in keys_of(notifier).values()) >= total // 2, 60, "the first notifications")
    notifier.kill()
    in_flight = notifier.count("status = 'sending'")
    received_at_kill = sum(len(k) for k in keys_of(notifier).values())
    notifier.start()
    wait_until(lambda: notifier.count("status = 'sent'") == 3 * total, 120, f"{3 * total} notifications sent")

    keys = keys_of(notifier)
    repeats = {channel: sum(n - 1 for n in Counter(k).values()) for channel, k in keys.items()}
    print(f"received at kill {received_at_kill}, in flight {in_flight}, repeats {repeats}")
    assert received_at_kill < 3 * total
    for channel, received in keys.items():
        assert len(set(received)) == total, channel  # nothing lost
    # Nothing doubled, except a send the kill interrupted after the provider took it and before the
    # row said so: the notifier cannot know it went, so it sends it again, with the same key.
    assert sum(repeats.values()) <= in_flight
    assert notifier.count() == 3 * total


DOWN_S = 30.0


def test_providers_down_for_30_s_are_retried_then_get_everything_once(notifier, unique):
    """The SMTP server's port is closed and the HTTP receiver answers 503 for 30 s; with the shipped retry
    settings (1 s doubling, 8 attempts) every notification is retried through it, then arrives exactly once."""
    total = 20
    shipped = {f.metadata["var"].env: f.default for f in dataclasses.fields(Settings) if "var" in f.metadata}
    for name in ("GUARDSTREAM_NOTIFY_RETRY_BASE_MS", "GUARDSTREAM_NOTIFY_RETRY_MAX_MS",
                 "GUARDSTREAM_NOTIFY_MAX_ATTEMPTS"):
        notifier.env[name] = str(shipped[name])
    alerts = Alerts(notifier.settings, f"t{unique}")
    notifier.mail.stop()
    notifier.start()
    back_at = time.monotonic() + DOWN_S
    notifier.http.refuse_until = back_at
    mail_back = threading.Timer(DOWN_S, notifier.mail.start)  # the provider's outage, not a wait of the test
    mail_back.start()
    try:
        for i in range(total):
            alerts.alert(f"al-{unique}-{i}")
        alerts.flush()
        wait_until(lambda: notifier.count("status = 'sent'") == 3 * total, DOWN_S + 60,
                   "all sent once the providers are back")
    finally:
        mail_back.cancel()
    assert all(r.at >= back_at for r in notifier.http.accepted)
    assert notifier.http.refused >= 2 * 2 * total  # webhook and SMS, each refused at least twice
    for channel, received in alerts_of(notifier).items():  # each alert exactly once per rule and channel
        assert Counter(received) == Counter({f"al-{unique}-{i}": 1 for i in range(total)}), channel
    for channel, keys in keys_of(notifier).items():
        assert len(keys) == len(set(keys)) == total, channel
    for channel in ("email", "webhook", "sms"):
        assert notifier.metric("guardstream_notifier_failed_total", kind=channel) >= 2 * total
    assert notifier.count("status = 'sent' AND attempts >= 3") == 3 * total
    assert notifier.count("status <> 'sent'") == 0 and notifier.count() == 3 * total


def test_a_send_a_kill_interrupts_is_repeated_with_the_same_key(notifier, unique):
    """The window left: each provider took its notification and the notifier died before it heard so.
    The restart sends each again, carrying the key the first carried, so a receiver keeping keys drops it."""
    notifier.env["GUARDSTREAM_NOTIFY_SEND_TIMEOUT_S"] = "3"  # longer than the kill takes to follow
    alerts = Alerts(notifier.settings, f"t{unique}")
    notifier.mail.release.clear()
    notifier.http.release.clear()
    notifier.start()
    alerts.alert(f"al-{unique}")
    alerts.flush()
    wait_until(lambda: all(len(keys) == 1 for keys in keys_of(notifier).values()), 30,
               "each provider holding its notification")
    notifier.kill()
    first = keys_of(notifier)
    assert notifier.count("status = 'sending'") == 3  # none was marked: the restart cannot know they went
    notifier.mail.release.set()
    notifier.http.release.set()
    notifier.start()
    wait_until(lambda: notifier.count("status = 'sent'") == 3, 60, "the interrupted sends made again")

    again = keys_of(notifier)
    for channel in ("email", "webhook", "sms"):
        assert again[channel] == first[channel] * 2, channel
    assert len({key for keys in again.values() for key in keys}) == 3  # one key per channel
    one, two = notifier.mail.received()
    assert one["Message-ID"] == two["Message-ID"] and one["Message-ID"] == f"<{first['email'][0]}@guardstream>"
    assert notifier.count("attempts = 2") == 3


def test_a_refusing_provider_and_exhausted_attempts_become_dead_letters(notifier, unique):
    alerts = Alerts(notifier.settings, f"t{unique}")
    notifier.http.status = 400  # the SMS provider and the webhook receiver refuse the request itself
    notifier.mail.stop()  # the SMTP server is away for longer than the attempts last
    notifier.env["GUARDSTREAM_NOTIFY_MAX_ATTEMPTS"] = "3"
    notifier.start()
    alerts.alert(f"al-{unique}")
    alerts.flush()
    wait_until(lambda: notifier.count("status = 'dead'") == 3, 30, "three dead notifications")
    rows = dict(notifier.rows("SELECT channel, attempts FROM notifications"))
    assert rows == {"webhook": 1, "sms": 1, "email": 3}
    codec = Codec(FileRegistry.load())
    letters = [codec.decode(m.value())[1] for m in collect(
        notifier.settings, TOPICS.dlq_notify.name, lambda m: m.key() == f"al-{unique}".encode(), 3, timeout_s=30)]
    assert sorted(letter["reason"] for letter in letters) == ["attempts_exhausted", "rejected_by_provider",
                                                              "rejected_by_provider"]
    assert all(letter["stage"] == "notify" for letter in letters)
    assert codec.decode(codec.encode(DEAD_LETTER, letters[0]))[0] == DEAD_LETTER


def test_sms_over_the_rate_limit_is_held_then_sent(notifier, unique):
    total, count, per_s = 7, 3, 2
    rules_file(notifier.rules, f"t{unique}", notifier.http.url + HOOK, EVERY_CHANNEL.replace('"email", "webhook", ', ""),
               extra=f"[rate_limits]\nsms = {{ count = {count}, per_s = {per_s} }}")
    alerts = Alerts(notifier.settings, f"t{unique}")
    notifier.start()
    for i in range(total):
        alerts.alert(f"al-{unique}-{i}")
    alerts.flush()
    wait_until(lambda: notifier.count("status = 'sent'") == total, 30, "every SMS sent")
    arrivals = sorted(r.at for r in notifier.http.received(SMS_PATH))
    assert len(arrivals) == total
    for t in arrivals:  # never more than `count` in any window
        assert sum(1 for a in arrivals if t - per_s < a <= t) <= count
    assert arrivals[-1] - arrivals[0] >= per_s * ((total - 1) // count) - 0.2
    # the record: which were held, and that they were sent after
    held = notifier.count("held_reason = 'rate_limit' AND status = 'sent' AND held_at <= sent_at")
    assert held == total - count
    assert notifier.metric("guardstream_notifier_held_total", kind="sms", reason="rate_limit") >= total - count


def test_notify_test_sends_through_every_channel_the_tenant_s_rules_use(notifier, unique):
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("GUARDSTREAM_")},
           **notifier.settings.as_env(), **notifier.environment()}
    result = subprocess.run([sys.executable, "-m", "guardstream.cli", "notify", "test", "--tenant", f"t{unique}"],
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    for channel in ("email", "webhook", "sms"):
        assert channel in result.stdout
    [mail] = notifier.mail.received()
    assert mail["Subject"].startswith("[TEST] CRITICAL PANIC")
    assert notifier.http.received(HOOK)[0].json()["type"] == "guardstream.test"
    assert "[TEST]" in notifier.http.received(SMS_PATH)[0].form()["Body"]

    notifier.http.status = 500
    failed = subprocess.run([sys.executable, "-m", "guardstream.cli", "notify", "test", "--tenant", f"t{unique}"],
                            env=env, capture_output=True, text=True, timeout=60)
    assert failed.returncode == 1 and "FAILED: HTTP 500" in failed.stdout
    nobody = subprocess.run([sys.executable, "-m", "guardstream.cli", "notify", "test", "--tenant", "nobody"],
                            env=env, capture_output=True, text=True, timeout=60)
    assert nobody.returncode == 1 and "no rule names a recipient for tenant 'nobody'" in nobody.stderr


def test_a_bad_rules_file_stops_the_notifier_with_one_line_naming_it(notifier, tmp_path):
    notifier.rules.write_text('[[rules]]\nname = "x"\n[[rules.tiers]]\nrecipients = ["ghost"]\nchannels = ["sms"]\n')
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("GUARDSTREAM_")},
           **notifier.settings.as_env(), **notifier.environment(), "GUARDSTREAM_METRICS_PORT": "0"}
    result = subprocess.run([sys.executable, "-m", "guardstream.cli", "notifier"], env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "guardstream: bad_notify_rules: notify rules rule 'x' tier 1: recipient 'ghost' is not in [recipients]")


def test_quiet_hours_hold_a_notification_but_not_a_life_safety_one(notifier, unique):
    now = datetime.now(UTC)
    quiet = f"{(now - timedelta(hours=1)):%H}:00-{(now + timedelta(hours=2)):%H}:00"  # now is inside
    notifier.rules.write_text(f"""
life_safety = ["PANIC"]
[recipients.ops]
email = "ops@example.invalid"
quiet_hours = "{quiet}"
[[rules]]
name = "quiet"
tenants = ["t{unique}"]
  [[rules.tiers]]
  recipients = ["ops"]
  channels = ["email"]
""")
    alerts = Alerts(notifier.settings, f"t{unique}")
    notifier.start()
    alerts.alert(f"sos-{unique}", kind="SOS")
    alerts.alert(f"panic-{unique}", kind="PANIC")
    alerts.flush()
    wait_until(lambda: notifier.count() == 2 and notifier.count("status = 'sent'") == 1, 30, "both planned")
    [mail] = notifier.mail.received()
    assert mail["X-Guardstream-Alert"] == f"panic-{unique}"
    [(status, reason, not_before)] = notifier.rows(
        "SELECT status, held_reason, not_before FROM notifications WHERE alert_id = %s", f"sos-{unique}")
    assert (status, reason) == ("held", "quiet_hours")
    assert not_before > now and not_before.minute == 0
    assert notifier.metric("guardstream_notifier_held_total", kind="email", reason="quiet_hours") == 1
