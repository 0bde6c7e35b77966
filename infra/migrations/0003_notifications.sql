-- guardstream notifier: escalation state per alert, and one row per notification.
--
-- notify_escalations holds where each alert stands in its rule's tiers (notifier/escalation.py),
-- so the timer of the next tier survives a restart: the notifier looks for due_at_ms <= now.
-- notifications is both the log of what was sent to whom and the idempotency key: the unique
-- (alert_id, channel, recipient, tier) row is written before the send and marked after it.

CREATE TABLE notify_escalations (
    alert_id        text PRIMARY KEY,
    tenant          text NOT NULL,
    rule            text,                 -- the routing rule's name; NULL while no alert was seen (action first)
    state           text NOT NULL CHECK (state IN ('NOTIFYING', 'EXHAUSTED', 'STOPPED')),
    tier            integer NOT NULL DEFAULT 0,   -- the last tier notified (1 = first); 0: none yet
    due_at_ms       bigint,               -- when the next tier is due, epoch ms; NULL: nothing due
    alert           jsonb,                -- the DeviceAlert, to write later tiers' messages
    stopped_by      text,                 -- the action that stopped it: ACKNOWLEDGE / RESOLVE / FALSE_ALARM
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX notify_escalations_due ON notify_escalations (due_at_ms) WHERE state = 'NOTIFYING';

CREATE TABLE notifications (
    id                bigserial PRIMARY KEY,
    alert_id          text NOT NULL,
    tenant            text NOT NULL,
    channel           text NOT NULL CHECK (channel IN ('email', 'webhook', 'sms', 'push')),
    recipient         text NOT NULL,      -- the recipient's name in the rules file
    address           text NOT NULL,      -- email address, phone number or webhook URL
    tier              integer NOT NULL,
    status            text NOT NULL CHECK (status IN ('pending', 'held', 'sending', 'retry', 'sent', 'dead',
                                                       'cancelled', 'skipped')),
    attempts          integer NOT NULL DEFAULT 0,
    not_before        timestamptz NOT NULL DEFAULT now(),
    held_reason       text,               -- rate_limit / quiet_hours: kept after the send, as the record
    held_at           timestamptz,
    claimed_at        timestamptz,        -- the start of the latest send attempt
    provider_response text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    sent_at           timestamptz,
    UNIQUE (alert_id, channel, recipient, tier)
);
CREATE INDEX notifications_due ON notifications (channel, not_before) WHERE status IN ('pending', 'held', 'retry');
CREATE INDEX notifications_rate ON notifications (tenant, channel, claimed_at) WHERE status IN ('sending', 'sent');
CREATE INDEX notifications_in_flight ON notifications (claimed_at) WHERE status = 'sending';

-- Dashboard browsers that subscribed to Web Push, by the recipient (a name in the rules file) whose
-- push notifications they show: the browser's PushSubscription (endpoint and keys). A push service
-- that answers 404 or 410 has dropped the subscription, and the notifier deletes it.
CREATE TABLE push_subscriptions (
    endpoint   text PRIMARY KEY,
    recipient  text NOT NULL,
    p256dh     text NOT NULL,
    auth       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX push_subscriptions_recipient ON push_subscriptions (recipient);
