-- guardstream: a guard's track read in its own order, from the index alone.
--
-- The track queries (a page of fixes, the whole range for a simplified track) order by
-- (ts, event_id) within one guard. The index of 0001 ordered by ts only, so every read sorted
-- again on event_id, and a simplified 24-hour track visited 86,400 heap rows for three
-- columns. This one carries the whole order and, as INCLUDE columns, lat and lon: the points
-- of a simplified track are an index-only scan. It replaces the old index (a backward scan
-- serves its newest-first reads), so the sink maintains one index on guard_positions, as before.
CREATE INDEX guard_positions_track ON guard_positions (tenant, device_id, ts, event_id) INCLUDE (lat, lon);
DROP INDEX guard_positions_device_ts;
