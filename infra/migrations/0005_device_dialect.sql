-- Fields of the older fleet's payload dialect and of the alert contract (docs/payloads.md).
-- signal_pct: signal quality in percent as such devices report it, never converted to dBm.
ALTER TABLE device_telemetry ADD COLUMN signal_pct double precision CHECK (signal_pct BETWEEN 0 AND 100);
-- ts_source: 'device' when ts is the device's own time, 'received' when the device sent no
-- usable time and ts is the bridge's receipt time (an alert is never refused for its clock).
-- claimed_kind / claimed_severity: what the payload said when the topic's kind or the
-- kind's lowest severity won over it.
ALTER TABLE device_alerts
    ADD COLUMN ts_source text NOT NULL DEFAULT 'device' CHECK (ts_source IN ('device', 'received')),
    ADD COLUMN claimed_kind text,
    ADD COLUMN claimed_severity text;
ALTER TABLE system_health
    ADD COLUMN ts_source text NOT NULL DEFAULT 'device' CHECK (ts_source IN ('device', 'received'));
