"""Web Push as a real process: pywebpush encrypts to a subscriber's key and signs with VAPID; a local
HTTP server plays the push service, and the test decrypts what it received as a browser would."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys

import http_ece
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from support.notify import Alerts, HttpReceiver, MailBox, Notifier, start_group_at_end
from py_vapid import Vapid

from guardstream.infra.migrate import migrate
from guardstream.infra.stack import wait_until
from guardstream.notifier.messages import push_topic

pytestmark = pytest.mark.slow


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def cli(notifier: Notifier, *args: str) -> subprocess.CompletedProcess:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("GUARDSTREAM_")},
           **notifier.settings.as_env(), **notifier.environment()}
    return subprocess.run([sys.executable, "-m", "guardstream.cli", *args], env=env, capture_output=True, text=True,
                          timeout=60)


def test_a_panic_is_pushed_encrypted_and_signed_and_a_dropped_subscription_is_forgotten(
        applied, database_url, unique, tmp_path):
    migrate(database_url)
    group = f"test-push-{unique}"
    start_group_at_end(applied, group)
    service, gone_service, mail = HttpReceiver(status=201), HttpReceiver(status=410), MailBox()
    vapid = Vapid()
    vapid.generate_keys()
    vapid.save_key(str(tmp_path / "vapid.pem"))
    rules = tmp_path / "rules.toml"
    rules.write_text(f"""
[recipients.ops]
push = true
[[rules]]
name = "push"
tenants = ["t{unique}"]
  [[rules.tiers]]
  recipients = ["ops"]
  channels = ["push"]
""")
    notifier = Notifier(applied, database_url, group, rules, mail, service, tmp_path / "notifier.log",
                        env={"GUARDSTREAM_NOTIFY_VAPID_KEY": str(tmp_path / "vapid.pem"),
                             "GUARDSTREAM_NOTIFY_VAPID_SUBJECT": "mailto:ops@example.invalid"})
    browser = ec.generate_private_key(ec.SECP256R1())
    auth = os.urandom(16)
    public = browser.public_key().public_bytes(serialization.Encoding.X962,
                                               serialization.PublicFormat.UncompressedPoint)
    try:
        for endpoint in (f"{service.url}/push/browser-1", f"{gone_service.url}/push/browser-2"):
            subscription = {"endpoint": endpoint, "keys": {"p256dh": b64(public), "auth": b64(auth)}}
            done = cli(notifier, "notify", "subscribe", "--recipient", "ops", "--subscription",
                       json.dumps(subscription))
            assert done.returncode == 0, done.stderr
        bad = cli(notifier, "notify", "subscribe", "--recipient", "ops", "--subscription", '{"endpoint": 1}')
        assert bad.returncode == 1 and "bad_subscription" in bad.stderr

        notifier.start()
        alerts = Alerts(applied, f"t{unique}")
        alerts.alert(f"al-{unique}")
        alerts.flush()
        wait_until(lambda: notifier.count("status = 'sent'") == 1, 30, "the push sent")

        [push] = service.received("/push/browser-1")
        headers = {k.lower(): v for k, v in push.headers.items()}
        assert headers["content-encoding"] == "aes128gcm" and headers["urgency"] == "high"
        payload = json.loads(http_ece.decrypt(push.body, private_key=browser, auth_secret=auth, version="aes128gcm"))
        assert payload["title"] == "CRITICAL PANIC: guard-1" and payload["alert_id"] == f"al-{unique}"
        assert payload["url"] == f"https://dash.example.invalid/#alert=al-{unique}"
        scheme, _, params = headers["authorization"].partition(" ")
        fields = dict(part.strip().split("=", 1) for part in params.split(","))
        claims = jwt.decode(fields["t"], vapid.public_key, algorithms=["ES256"], audience=service.url)
        assert scheme == "vapid" and claims["sub"] == "mailto:ops@example.invalid"
        assert headers["topic"] == push_topic_of(unique)

        assert gone_service.refused == 1  # answered 410: the browser unsubscribed
        assert notifier.rows("SELECT endpoint FROM push_subscriptions") == [(f"{service.url}/push/browser-1",)]
        [(response,)] = notifier.rows("SELECT provider_response FROM notifications")
        assert response == "pushed to 1 browser(s), 1 unsubscribed and forgotten"
        assert notifier.metric("guardstream_notifier_sent_total", kind="push") == 1
    finally:
        notifier.stop()
        service.close()
        gone_service.close()
        mail.stop()


def push_topic_of(unique: str) -> str:
    from guardstream.notifier.decide import Alert
    from guardstream.notifier.messages import Notice
    alert = Alert(f"al-{unique}", f"t{unique}", "guard-1", "PANIC", "CRITICAL", 0)
    return push_topic(Notice(alert, "push", "ops", "", 1, ""))
