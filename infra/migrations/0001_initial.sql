-- guardstream: the tables the PostgreSQL sink writes.
-- Every event table is keyed by event_id (the bridge's deterministic msg.id), so a
-- batch written twice inserts nothing the second time (ON CONFLICT DO NOTHING).
-- Times are timestamptz (UTC); the *_ms columns keep the exact epoch milliseconds.

CREATE TABLE device_telemetry (
    event_id      text PRIMARY KEY,
    tenant        text NOT NULL,
    device_id     text NOT NULL,
    ts            timestamptz NOT NULL,
    received_at   timestamptz NOT NULL,
    battery_pct   double precision CHECK (battery_pct BETWEEN 0 AND 100),
    charging      boolean,
    signal_dbm    integer,
    temperature_c double precision,
    firmware      text
);
CREATE INDEX device_telemetry_device_ts ON device_telemetry (tenant, device_id, ts DESC);

CREATE TABLE guard_positions (
    event_id    text PRIMARY KEY,
    tenant      text NOT NULL,
    device_id   text NOT NULL,
    ts          timestamptz NOT NULL,
    received_at timestamptz NOT NULL,
    lat         double precision NOT NULL CHECK (lat BETWEEN -90 AND 90),
    lon         double precision NOT NULL CHECK (lon BETWEEN -180 AND 180),
    accuracy_m  double precision,
    speed_mps   double precision,
    heading_deg double precision,
    altitude_m  double precision,
    fences      text[] NOT NULL DEFAULT '{}',
    in_site     boolean,
    violation   boolean NOT NULL DEFAULT false
);
CREATE INDEX guard_positions_device_ts ON guard_positions (tenant, device_id, ts DESC);

CREATE TABLE sensor_readings (
    event_id    text PRIMARY KEY,
    tenant      text NOT NULL,
    device_id   text NOT NULL,
    ts          timestamptz NOT NULL,
    received_at timestamptz NOT NULL,
    kind        text NOT NULL,
    site_id     text,
    value       double precision,
    unit        text,
    state       text
);
CREATE INDEX sensor_readings_device_ts ON sensor_readings (tenant, device_id, ts DESC);

CREATE TABLE system_health (
    event_id    text PRIMARY KEY,
    tenant      text NOT NULL,
    device_id   text NOT NULL,
    ts          timestamptz NOT NULL,
    received_at timestamptz NOT NULL,
    status      text NOT NULL,
    detail      text,
    metrics     jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX system_health_device_ts ON system_health (tenant, device_id, ts DESC);

CREATE TABLE device_alerts (
    event_id       text PRIMARY KEY,
    tenant         text NOT NULL,
    device_id      text NOT NULL,
    ts             timestamptz NOT NULL,
    received_at    timestamptz NOT NULL,
    kind           text NOT NULL,
    severity       text NOT NULL,
    lat            double precision,
    lon            double precision,
    message        text,
    rule           text,
    cause_event_id text,
    status         text NOT NULL DEFAULT 'NEW'
                   CHECK (status IN ('NEW', 'ACKNOWLEDGED', 'RESOLVED', 'FALSE_ALARM')),
    status_by      text,
    status_at      timestamptz,
    status_ts_ms   bigint,        -- time of the action that set status; older actions never roll it back
    status_note    text
);
CREATE INDEX device_alerts_device_ts ON device_alerts (tenant, device_id, ts DESC);
CREATE INDEX device_alerts_open ON device_alerts (tenant, ts DESC) WHERE status IN ('NEW', 'ACKNOWLEDGED');

CREATE TABLE geofence_events (
    event_id    text PRIMARY KEY,
    tenant      text NOT NULL,
    device_id   text NOT NULL,
    ts          timestamptz NOT NULL,
    received_at timestamptz NOT NULL,
    fence_id    text NOT NULL,
    fence_kind  text NOT NULL,
    transition  text NOT NULL,
    lat         double precision NOT NULL,
    lon         double precision NOT NULL,
    dwell_ms    bigint,
    cause       text
);
CREATE INDEX geofence_events_device_ts ON geofence_events (tenant, device_id, ts DESC);
CREATE INDEX geofence_events_fence_ts ON geofence_events (tenant, fence_id, ts DESC);

CREATE TABLE geofences (
    fence_id   text PRIMARY KEY,
    tenant     text NOT NULL,
    name       text NOT NULL,
    kind       text NOT NULL,
    geometry   jsonb NOT NULL,
    radius_m   double precision,
    updated_ms bigint NOT NULL,
    deleted    boolean NOT NULL DEFAULT false
);
CREATE INDEX geofences_tenant ON geofences (tenant);

-- Every dead letter, for inspection; keyed by its own place in the DLQ topic.
CREATE TABLE dead_letters (
    dlq_topic        text NOT NULL,
    dlq_partition    integer NOT NULL,
    dlq_offset       bigint NOT NULL,
    stage            text NOT NULL,
    reason           text NOT NULL,
    detail           text NOT NULL,
    source_topic     text,
    source_partition integer,
    source_offset    bigint,
    key              bytea,
    payload          bytea NOT NULL,
    ts               timestamptz NOT NULL,
    PRIMARY KEY (dlq_topic, dlq_partition, dlq_offset)
);
CREATE INDEX dead_letters_reason ON dead_letters (stage, reason, ts DESC);
