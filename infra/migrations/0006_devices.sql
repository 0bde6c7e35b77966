-- The device registry: the compacted `devices` topic, one row per device id, kept by the sink.
-- The topic is the source of truth (every worker loads it); this table is its copy for
-- queries and reports. A record older than the row (a replay) never rolls it back; a
-- tombstone removes the row.
CREATE TABLE devices (
    device_id  text PRIMARY KEY,
    tenant     text NOT NULL,
    kind       text NOT NULL CHECK (kind IN ('GUARD', 'SENSOR', 'DEVICE')),
    site_id    text,
    enabled    boolean NOT NULL DEFAULT true,
    updated_ms bigint NOT NULL
);
CREATE INDEX devices_tenant ON devices (tenant, device_id);
