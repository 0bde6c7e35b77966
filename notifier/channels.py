"""The providers at the edge: SMTP for email, HTTP for webhooks and SMS, Web Push for browsers.

Each channel's sender takes a :class:`Notice`, hands it to its provider and returns what the
provider answered (stored in ``notifications.provider_response``). A failure is a
:class:`SendFailed`: ``permanent`` when the provider refused the request itself (an SMTP 5xx,
an HTTP 4xx other than 408 and 429), which no retry would change; otherwise it is retried.
"""

from __future__ import annotations

import smtplib
import ssl
import time
from collections.abc import Callable
from typing import Any, Protocol
from dataclasses import dataclass
from functools import cached_property
from urllib.parse import unquote, urlsplit

import httpx
from pywebpush import WebPushException, webpush

from guardstream.errors import UnavailableError
from guardstream.notifier.messages import (IDEMPOTENCY_HEADER, Notice, email_message, push_payload, push_topic, sms_text, webhook_body,
                                           webhook_headers)
from guardstream.notifier.store import PushBook
from guardstream.settings import Settings

RESPONSE_MAX_CHARS = 500


class SendFailed(UnavailableError):
    reason = "send_failed"

    def __init__(self, detail: str, *, permanent: bool) -> None:
        super().__init__(detail[:RESPONSE_MAX_CHARS])
        self.permanent = permanent


Sender = Callable[[Notice], str]


@dataclass(frozen=True)
class SmtpSender:
    url: str
    starttls: bool
    ca_file: str | None
    sender: str
    timeout_s: float

    @cached_property
    def tls(self) -> ssl.SSLContext:
        """Built once: loading the CA store takes tens of milliseconds, longer than a send."""
        return ssl.create_default_context(cafile=self.ca_file)

    def __call__(self, notice: Notice) -> str:
        parts = urlsplit(self.url)
        host, port = parts.hostname or "", parts.port
        try:
            if parts.scheme == "smtps":
                client: smtplib.SMTP = smtplib.SMTP_SSL(host, port or 465, timeout=self.timeout_s,
                                                            context=self.tls)
            else:
                client = smtplib.SMTP(host, port or 25, timeout=self.timeout_s)
            with client:
                if parts.scheme == "smtp" and self.starttls:
                    client.starttls(context=self.tls)
                if parts.username:
                    client.login(unquote(parts.username), unquote(parts.password or ""))
                refused = client.send_message(email_message(notice, self.sender))
        except smtplib.SMTPResponseException as exc:
            raise SendFailed(f"SMTP {exc.smtp_code}: {_text(exc.smtp_error)}", permanent=500 <= exc.smtp_code < 600) \
                from exc
        except smtplib.SMTPRecipientsRefused as exc:
            raise SendFailed(f"SMTP refused the recipient: {exc.recipients}", permanent=True) from exc
        except (smtplib.SMTPException, OSError) as exc:
            raise SendFailed(f"SMTP {host}:{port}: {exc}", permanent=False) from exc
        if refused:
            raise SendFailed(f"SMTP refused {refused}", permanent=True)
        return "250 accepted"


def _text(raw: bytes | str) -> str:
    return raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)


def _http_outcome(response: httpx.Response) -> str:
    body = response.text[:RESPONSE_MAX_CHARS]
    if response.is_success:
        return f"{response.status_code} {body}".strip()
    permanent = 400 <= response.status_code < 500 and response.status_code not in (408, 429)
    raise SendFailed(f"HTTP {response.status_code}: {body}", permanent=permanent)


@dataclass
class WebhookSender:
    secret: bytes
    client: httpx.Client

    def __call__(self, notice: Notice) -> str:
        body = webhook_body(notice)
        headers = webhook_headers(self.secret, int(time.time()), notice, body)
        try:
            response = self.client.post(notice.address, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise SendFailed(f"webhook {notice.address}: {type(exc).__name__}: {exc}", permanent=False) from exc
        return _http_outcome(response)


@dataclass
class SmsSender:
    url: str
    account: str
    token: str
    sender: str
    client: httpx.Client

    def __call__(self, notice: Notice) -> str:
        form = {"To": notice.address, "From": self.sender, "Body": sms_text(notice)}
        # The form-POST shape has no field for a key; the header is what providers that drop repeats read.
        try:
            response = self.client.post(self.url, data=form, auth=(self.account, self.token),
                                        headers={IDEMPOTENCY_HEADER: notice.key})
        except httpx.HTTPError as exc:
            raise SendFailed(f"SMS provider: {type(exc).__name__}: {exc}", permanent=False) from exc
        return _http_outcome(response)


class Subscriptions(Protocol):
    def subscriptions(self, recipient: str) -> list[dict[str, Any]]: ...

    def forget(self, endpoint: str) -> None: ...


@dataclass
class PushSender:
    """Web Push (RFC 8030/8291, VAPID RFC 8292) through pywebpush, to every browser the recipient subscribed."""

    vapid_key: str  # path of the PEM private key
    subject: str
    book: Subscriptions
    timeout_s: float

    def __call__(self, notice: Notice) -> str:
        browsers = self.book.subscriptions(notice.recipient)
        if not browsers:
            raise SendFailed(f"no browser of {notice.recipient} subscribed to push", permanent=True)
        pushed, gone, failed = 0, 0, []
        for subscription in browsers:
            try:
                webpush(subscription, push_payload(notice), vapid_private_key=self.vapid_key,
                        vapid_claims={"sub": self.subject}, timeout=self.timeout_s, ttl=3600,
                        headers={"Topic": push_topic(notice), "Urgency": "high"})
                pushed += 1
            except WebPushException as exc:
                status = exc.response.status_code if exc.response is not None else None
                if status in (404, 410):  # the push service dropped the subscription
                    self.book.forget(subscription["endpoint"])
                    gone += 1
                else:
                    failed.append(f"{status or 'no answer'}: {str(exc)[:120]}")
        if failed:  # a retry pushes to every browser again; the Topic makes the repeat replace the first
            raise SendFailed(f"push failed for {len(failed)} of {len(browsers)} browsers: {failed[0]}",
                             permanent=False)
        if not pushed:
            raise SendFailed(f"every browser of {notice.recipient} unsubscribed ({gone})", permanent=True)
        return f"pushed to {pushed} browser(s)" + (f", {gone} unsubscribed and forgotten" if gone else "")


def senders(settings: Settings, timeout_s: float) -> dict[str, Sender]:
    """The channels these settings configure, by name; a channel left out is not configured."""
    out: dict[str, Sender] = {}
    if settings.notify_smtp_url:
        out["email"] = SmtpSender(settings.notify_smtp_url, settings.notify_smtp_starttls,
                                  settings.notify_smtp_ca_file, settings.notify_email_from, timeout_s)
    if settings.notify_webhook_secret:
        out["webhook"] = WebhookSender(settings.notify_webhook_secret.reveal().encode(),
                                       httpx.Client(timeout=timeout_s))
    if settings.notify_sms_url and settings.notify_sms_account and settings.notify_sms_from:
        out["sms"] = SmsSender(settings.notify_sms_url, settings.notify_sms_account,
                               settings.notify_sms_token.reveal(), settings.notify_sms_from,
                               httpx.Client(timeout=timeout_s))
    if settings.notify_vapid_key:
        out["push"] = PushSender(str(settings.notify_vapid_key), settings.notify_vapid_subject,
                                 PushBook(settings.database_url), timeout_s)
    return out
