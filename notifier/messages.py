"""What a notification says, per channel; pure: an alert and a notification in, text and bytes out.

Every message of a notification carries its idempotency key (:func:`idempotency_key`), the same
on every attempt and after a restart: the webhook's and the SMS request's ``Idempotency-Key``
header, the email's Message-ID and ``Idempotency-Key`` header, the Web Push ``Topic``. A
receiver that keeps the keys it has seen drops a repeated send.

The webhook body is JSON signed with HMAC-SHA256 over ``"<timestamp>.<body>"``: a receiver
recomputes it with the shared secret and refuses a timestamp older than a few minutes, so a
captured request cannot be replayed later (the scheme Stripe and Slack use).
"""

from __future__ import annotations

import hashlib
import hmac
import html
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from urllib.parse import quote

from guardstream.notifier.decide import Alert

SIGNATURE_HEADER = "X-Guardstream-Signature"
TIMESTAMP_HEADER = "X-Guardstream-Timestamp"
IDEMPOTENCY_HEADER = "Idempotency-Key"
SMS_MAX_CHARS = 320  # two SMS segments


@dataclass(frozen=True)
class Notice:
    """One notification to write: its alert, whom, which tier, and the dashboard's address."""

    alert: Alert
    channel: str
    recipient: str
    address: str
    tier: int
    dashboard_url: str
    test: bool = False

    @property
    def key(self) -> str:
        """The notification's idempotency key, the same on every attempt."""
        return idempotency_key(self.alert.event_id, self.channel, self.recipient, self.tier)

    @property
    def link(self) -> str:
        return f"{self.dashboard_url.rstrip('/')}/#alert={quote(self.alert.event_id)}"

    @property
    def headline(self) -> str:
        prefix = "[TEST] " if self.test else ""
        escalated = f" (escalation tier {self.tier})" if self.tier > 1 else ""
        where = f" at {self.alert.site}" if self.alert.site else ""
        return f"{prefix}{self.alert.severity} {self.alert.kind}: {self.alert.device_id}{where}{escalated}"


def idempotency_key(alert_id: str, channel: str, recipient: str, tier: int) -> str:
    """``gs-`` and 40 hex digits of SHA-256 over the notification's identity (the unique key of the
    ``notifications`` table): derived, so every attempt of every process sends the same; within what
    providers that take a key accept (``[A-Za-z0-9_:-]``, at most 255); no name or address in clear."""
    identity = "\n".join((alert_id, channel, recipient, str(tier))).encode()
    return "gs-" + hashlib.sha256(identity).hexdigest()[:40]


def _when(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _facts(notice: Notice) -> list[tuple[str, str]]:
    a = notice.alert
    facts = [("Alert", f"{a.severity} {a.kind}"), ("Guard / device", a.device_id), ("Site", a.site or "unknown"),
             ("Tenant", a.tenant), ("Time", _when(a.ts_ms))]
    if a.lat is not None and a.lon is not None:
        facts.append(("Position", f"{a.lat:.5f}, {a.lon:.5f}"))
    if a.message:
        facts.append(("Message", a.message))
    facts.append(("Alert id", a.event_id))
    return facts


def email_message(notice: Notice, sender: str) -> EmailMessage:
    """Plain text and HTML alternatives; the Message-ID is the idempotency key's, so a repeat is the same
    message to a mail store that drops duplicates by Message-ID."""
    message = EmailMessage()
    message["Subject"] = notice.headline
    message["From"] = sender
    message["To"] = notice.address
    message["Message-ID"] = f"<{notice.key}@guardstream>"
    message["X-Guardstream-Alert"] = notice.alert.event_id
    message[IDEMPOTENCY_HEADER] = notice.key
    facts = _facts(notice)
    text = "\n".join([notice.headline, "", *(f"{k}: {v}" for k, v in facts), "",
                      f"Open the alert on the dashboard: {notice.link}", ""])
    message.set_content(text)
    rows = "".join(f"<tr><th align='left'>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in facts)
    message.add_alternative(
        f"<html><body><h2>{html.escape(notice.headline)}</h2><table>{rows}</table>"
        f"<p><a href=\"{html.escape(notice.link)}\">Open the alert on the dashboard</a></p></body></html>",
        subtype="html")
    return message


def sms_text(notice: Notice) -> str:
    text = f"{notice.headline}. {notice.alert.message or ''} {notice.link}".replace("  ", " ")
    return text if len(text) <= SMS_MAX_CHARS else text[:SMS_MAX_CHARS - 1] + "…"


def webhook_body(notice: Notice) -> bytes:
    a = notice.alert
    return json.dumps({
        "type": "guardstream.test" if notice.test else "guardstream.alert",
        "idempotency_key": notice.key, "tier": notice.tier, "recipient": notice.recipient,
        "summary": notice.headline, "dashboard_url": notice.link,
        "alert": {"event_id": a.event_id, "tenant": a.tenant, "device_id": a.device_id, "kind": a.kind,
                  "severity": a.severity, "ts_ms": a.ts_ms, "lat": a.lat, "lon": a.lon, "message": a.message,
                  "site": a.site},
    }, separators=(",", ":"), sort_keys=True).encode()


def push_payload(notice: Notice) -> str:
    """What a dashboard's service worker shows: ``title``, ``body``, ``url`` and a ``tag`` (the same tag
    replaces an earlier notification in the browser)."""
    a = notice.alert
    return json.dumps({"title": notice.headline, "body": a.message or f"{a.kind} from {a.device_id}",
                       "url": notice.link, "tag": notice.key, "alert_id": a.event_id, "tier": notice.tier},
                      separators=(",", ":"))


def push_topic(notice: Notice) -> str:
    """The Web Push ``Topic`` header (at most 32 URL-safe characters): a push service keeps only the
    newest undelivered message of a topic, so a repeated send replaces rather than adds."""
    return hashlib.sha256(notice.key.encode()).hexdigest()[:32]


def signature(secret: bytes, timestamp: int, body: bytes) -> str:
    """``sha256=<hex>`` of HMAC-SHA256 over ``b"<timestamp>." + body``."""
    return "sha256=" + hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()


def webhook_headers(secret: bytes, timestamp: int, notice: Notice, body: bytes) -> dict[str, str]:
    return {"Content-Type": "application/json", TIMESTAMP_HEADER: str(timestamp),
            SIGNATURE_HEADER: signature(secret, timestamp, body), IDEMPOTENCY_HEADER: notice.key}
