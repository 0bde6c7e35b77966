-- Alert actions that reached the sink before their alert row.
-- Actions travel on alerts.actions and alerts on events.critical, read by two
-- independent consumers, so an acknowledgement can be written first. It waits
-- here and is applied (newest per alert) by the transaction that writes the alert.
CREATE TABLE alert_actions_pending (
    action_id      text PRIMARY KEY,
    alert_event_id text NOT NULL,
    tenant         text NOT NULL,
    status         text NOT NULL CHECK (status IN ('ACKNOWLEDGED', 'RESOLVED', 'FALSE_ALARM')),
    actor          text NOT NULL,
    ts_ms          bigint NOT NULL,       -- when the operator acted, epoch milliseconds UTC
    status_at      timestamptz NOT NULL,  -- the same instant as timestamptz
    note           text,
    parked_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX alert_actions_pending_alert ON alert_actions_pending (alert_event_id, ts_ms DESC);
