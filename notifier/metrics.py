"""The notifier's metrics, declared once and handed to the code that counts.

``kind`` is the channel (email, webhook, sms), as the shared label vocabulary has it
(``guardstream/observability.py``); ``reason`` a hold's or a dead letter's reason code.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram

from guardstream.observability import new_registry


@dataclass(frozen=True)
class NotifierMetrics:
    registry: CollectorRegistry
    sent: Counter
    failed: Counter
    held: Counter
    escalated: Counter
    skipped: Counter
    dead_letters: Counter
    records: Counter
    send_seconds: Histogram

    @classmethod
    def create(cls) -> NotifierMetrics:
        r = new_registry("notifier")
        return cls(
            registry=r,
            sent=Counter("guardstream_notifier_sent_total", "Notifications a provider accepted, by channel (kind).",
                         ["kind"], registry=r),
            failed=Counter("guardstream_notifier_failed_total",
                           "Send attempts that failed (retried or dead-lettered), by channel (kind).", ["kind"],
                           registry=r),
            held=Counter("guardstream_notifier_held_total",
                         "Notifications held back (rate_limit, quiet_hours), by channel (kind) and reason; "
                         "each is sent when the hold ends.", ["kind", "reason"], registry=r),
            escalated=Counter("guardstream_notifier_escalated_total",
                              "Notifications of tiers after the first (escalations), by channel (kind).", ["kind"],
                              registry=r),
            skipped=Counter("guardstream_notifier_skipped_total",
                            "Notifications the rules ask for on a channel the settings do not configure, by "
                            "channel (kind).", ["kind"], registry=r),
            dead_letters=Counter("guardstream_notifier_dead_letters_total",
                                 "Notifications or records sent to dlq.notify, by channel or topic (kind) and "
                                 "reason.", ["kind", "reason"], registry=r),
            records=Counter("guardstream_notifier_records_total",
                            "Alerts, actions and due timers handled (kind: alert, action, escalation_due), or why "
                            "one changed nothing (no_rule, seen, stopped_before, tenant_mismatch, not_an_alert, ...).",
                            ["kind"], registry=r),
            send_seconds=Histogram("guardstream_notifier_send_duration_seconds",
                                   "Time a provider took to take one notification, by channel (kind).", ["kind"],
                                   buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10), registry=r),
        )
