-- guardstream: each guard's last fix is no longer also rendered as a JSON object.
--
-- Since 0008 the snapshot reads snapshot_row, and nothing reads guard_last_positions.record
-- any more. The trigger still rendered it for every guard in every batch the sink moves in,
-- a sixth of PostgreSQL's CPU per fix (batches of 300 fixes from 2,000 guards: 61 -> 52 us of
-- the writing backend per fix). The columns the record held are all in the row.

ALTER TABLE guard_last_positions DROP COLUMN record;

CREATE OR REPLACE FUNCTION guard_last_position_rows(rows_in guard_positions[]) RETURNS SETOF guard_last_positions
LANGUAGE sql STABLE AS $$
    SELECT n.tenant, n.device_id, n.event_id, n.ts, n.received_at, n.lat, n.lon, n.accuracy_m, n.speed_mps,
           n.heading_deg, n.altitude_m, n.fences, n.in_site, n.violation, guard_position_snapshot_row(n)
      FROM (SELECT DISTINCT ON (tenant, device_id) * FROM unnest(rows_in)
             ORDER BY tenant, device_id, ts DESC, event_id DESC) n
$$;

CREATE OR REPLACE FUNCTION guard_last_positions_keep() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO guard_last_positions AS g
    SELECT * FROM guard_last_position_rows(ARRAY(SELECT i::guard_positions FROM inserted i))
    ON CONFLICT (tenant, device_id) DO UPDATE
       SET (event_id, ts, received_at, lat, lon, accuracy_m, speed_mps, heading_deg, altitude_m, fences, in_site,
            violation, snapshot_row)
         = (EXCLUDED.event_id, EXCLUDED.ts, EXCLUDED.received_at, EXCLUDED.lat, EXCLUDED.lon, EXCLUDED.accuracy_m,
            EXCLUDED.speed_mps, EXCLUDED.heading_deg, EXCLUDED.altitude_m, EXCLUDED.fences, EXCLUDED.in_site,
            EXCLUDED.violation, EXCLUDED.snapshot_row)
     WHERE (g.ts, g.event_id) < (EXCLUDED.ts, EXCLUDED.event_id);
    RETURN NULL;
END $$;
