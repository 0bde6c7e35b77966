-- guardstream: the present state the gateway's snapshot and history API read.

-- Which Kafka position the tables reflect: for each topic-partition the sink reads, the
-- offset after the last record whose rows are written. The sink sets it in the transaction
-- that writes the rows (never lowering it), so one REPEATABLE READ snapshot of the tables
-- and of this table agrees exactly: every record below next_offset is in, none above.
CREATE TABLE sink_positions (
    topic       text NOT NULL,
    partition   integer NOT NULL,
    next_offset bigint NOT NULL CHECK (next_offset >= 0),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, partition)
);

-- The last-known position and state of each guard, kept by a trigger on guard_positions
-- (newest ts wins; a late fix never rolls it back). What the snapshot, "who is inside
-- fence X" and "who is near" read instead of a DISTINCT ON over every fix.
CREATE TABLE guard_last_positions (
    tenant      text NOT NULL,
    device_id   text NOT NULL,
    event_id    text NOT NULL,
    ts          timestamptz NOT NULL,
    received_at timestamptz NOT NULL,
    lat         double precision NOT NULL,
    lon         double precision NOT NULL,
    accuracy_m  double precision,
    speed_mps   double precision,
    heading_deg double precision,
    altitude_m  double precision,
    fences      text[] NOT NULL DEFAULT '{}',
    in_site     boolean,
    violation   boolean NOT NULL DEFAULT false,
    record      json NOT NULL,  -- the GuardPosition record as the feed carries it, rendered once at write
    PRIMARY KEY (tenant, device_id)
);
CREATE INDEX guard_last_positions_fences ON guard_last_positions USING gin (fences);
CREATE INDEX guard_last_positions_lat ON guard_last_positions (tenant, lat);

-- the newest fix of each guard among some guard_positions rows, with its record as JSON
CREATE FUNCTION guard_last_position_rows(rows_in guard_positions[]) RETURNS SETOF guard_last_positions
LANGUAGE sql STABLE AS $$
    SELECT n.tenant, n.device_id, n.event_id, n.ts, n.received_at, n.lat, n.lon, n.accuracy_m, n.speed_mps,
           n.heading_deg, n.altitude_m, n.fences, n.in_site, n.violation,
           (SELECT row_to_json(r) FROM (SELECT n.event_id, n.tenant, n.device_id,
                   (extract(epoch FROM n.ts) * 1000)::bigint AS ts_ms,
                   (extract(epoch FROM n.received_at) * 1000)::bigint AS received_ms, n.lat, n.lon, n.accuracy_m,
                   n.speed_mps, n.heading_deg, n.altitude_m, n.fences, n.in_site, n.violation) r)
      FROM (SELECT DISTINCT ON (tenant, device_id) * FROM unnest(rows_in)
             ORDER BY tenant, device_id, ts DESC, event_id DESC) n
$$;

CREATE FUNCTION guard_last_positions_keep() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO guard_last_positions AS g
    SELECT * FROM guard_last_position_rows(ARRAY(SELECT i::guard_positions FROM inserted i))
    ON CONFLICT (tenant, device_id) DO UPDATE
       SET (event_id, ts, received_at, lat, lon, accuracy_m, speed_mps, heading_deg, altitude_m, fences, in_site,
            violation, record)
         = (EXCLUDED.event_id, EXCLUDED.ts, EXCLUDED.received_at, EXCLUDED.lat, EXCLUDED.lon, EXCLUDED.accuracy_m,
            EXCLUDED.speed_mps, EXCLUDED.heading_deg, EXCLUDED.altitude_m, EXCLUDED.fences, EXCLUDED.in_site,
            EXCLUDED.violation, EXCLUDED.record)
     WHERE (g.ts, g.event_id) < (EXCLUDED.ts, EXCLUDED.event_id);
    RETURN NULL;
END $$;

-- statement level: one upsert per batch the sink moves in, over the rows it really inserted
CREATE TRIGGER guard_last_positions_keep AFTER INSERT ON guard_positions
    REFERENCING NEW TABLE AS inserted FOR EACH STATEMENT EXECUTE FUNCTION guard_last_positions_keep();

INSERT INTO guard_last_positions
SELECT * FROM guard_last_position_rows(ARRAY(SELECT p FROM guard_positions p));

-- Every operator action on an alert, in or out of order, once (action_id): the history the
-- API shows beside an alert. device_alerts keeps only the status the newest action set.
CREATE TABLE alert_action_log (
    action_id      text PRIMARY KEY,
    alert_event_id text NOT NULL,
    tenant         text NOT NULL,
    status         text NOT NULL,
    actor          text NOT NULL,
    ts_ms          bigint NOT NULL,
    status_at      timestamptz NOT NULL,
    note           text
);
CREATE INDEX alert_action_log_alert ON alert_action_log (alert_event_id, ts_ms);

-- keyset pages of a tenant's alerts, newest first, whatever their status
CREATE INDEX device_alerts_tenant_ts ON device_alerts (tenant, ts DESC, event_id DESC);

-- what was acted on before this table: the one action each alert's status still names
INSERT INTO alert_action_log
SELECT 'status-of-' || event_id, event_id, tenant, status, status_by, status_ts_ms, status_at, status_note
  FROM device_alerts
 WHERE status_by IS NOT NULL AND status_ts_ms IS NOT NULL AND status_at IS NOT NULL;
