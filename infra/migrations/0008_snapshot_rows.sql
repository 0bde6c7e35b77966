-- guardstream: each guard's last fix also kept as the compact row the snapshot sends.
--
-- A snapshot of 10,000 guards sent each fix as a JSON object (about 285 bytes): the bytes
-- read from the table, sent and parsed by the client were mostly the repeated field names.
-- The snapshot now sends a section's field names once and each record as a JSON array of
-- its values in the GuardPosition schema's field order (gateway/snapshot.py, POSITION_FIELDS;
-- the format is in README.md). The array is rendered once, when the fix is written, so a
-- snapshot reads it as text; rendered at read time it cost more than the read itself.
-- Numbers are as to_json writes them, as in the record column: the same values, to the bit.

-- the GuardPosition record of a fix as a JSON array, in the schema's field order
CREATE FUNCTION guard_position_snapshot_row(p guard_positions) RETURNS text LANGUAGE sql STABLE AS $$
    SELECT '[' || concat_ws(',', to_json(p.event_id), to_json(p.tenant), to_json(p.device_id),
                            (extract(epoch FROM p.ts) * 1000)::bigint, (extract(epoch FROM p.received_at) * 1000)::bigint,
                            to_json(p.lat), to_json(p.lon), coalesce(to_json(p.accuracy_m)::text, 'null'),
                            coalesce(to_json(p.speed_mps)::text, 'null'), coalesce(to_json(p.heading_deg)::text, 'null'),
                            coalesce(to_json(p.altitude_m)::text, 'null'), to_json(p.fences),
                            coalesce(to_json(p.in_site)::text, 'null'), to_json(p.violation)) || ']'
$$;

ALTER TABLE guard_last_positions ADD COLUMN snapshot_row text;

CREATE OR REPLACE FUNCTION guard_last_position_rows(rows_in guard_positions[]) RETURNS SETOF guard_last_positions
LANGUAGE sql STABLE AS $$
    SELECT n.tenant, n.device_id, n.event_id, n.ts, n.received_at, n.lat, n.lon, n.accuracy_m, n.speed_mps,
           n.heading_deg, n.altitude_m, n.fences, n.in_site, n.violation,
           (SELECT row_to_json(r) FROM (SELECT n.event_id, n.tenant, n.device_id,
                   (extract(epoch FROM n.ts) * 1000)::bigint AS ts_ms,
                   (extract(epoch FROM n.received_at) * 1000)::bigint AS received_ms, n.lat, n.lon, n.accuracy_m,
                   n.speed_mps, n.heading_deg, n.altitude_m, n.fences, n.in_site, n.violation) r),
           guard_position_snapshot_row(n)
      FROM (SELECT DISTINCT ON (tenant, device_id) * FROM unnest(rows_in)
             ORDER BY tenant, device_id, ts DESC, event_id DESC) n
$$;

CREATE OR REPLACE FUNCTION guard_last_positions_keep() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO guard_last_positions AS g
    SELECT * FROM guard_last_position_rows(ARRAY(SELECT i::guard_positions FROM inserted i))
    ON CONFLICT (tenant, device_id) DO UPDATE
       SET (event_id, ts, received_at, lat, lon, accuracy_m, speed_mps, heading_deg, altitude_m, fences, in_site,
            violation, record, snapshot_row)
         = (EXCLUDED.event_id, EXCLUDED.ts, EXCLUDED.received_at, EXCLUDED.lat, EXCLUDED.lon, EXCLUDED.accuracy_m,
            EXCLUDED.speed_mps, EXCLUDED.heading_deg, EXCLUDED.altitude_m, EXCLUDED.fences, EXCLUDED.in_site,
            EXCLUDED.violation, EXCLUDED.record, EXCLUDED.snapshot_row)
     WHERE (g.ts, g.event_id) < (EXCLUDED.ts, EXCLUDED.event_id);
    RETURN NULL;
END $$;

UPDATE guard_last_positions g
   SET snapshot_row = guard_position_snapshot_row(ROW(g.event_id, g.tenant, g.device_id, g.ts, g.received_at, g.lat,
       g.lon, g.accuracy_m, g.speed_mps, g.heading_deg, g.altitude_m, g.fences, g.in_site, g.violation)::guard_positions);
ALTER TABLE guard_last_positions ALTER COLUMN snapshot_row SET NOT NULL;
