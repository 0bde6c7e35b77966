"""Rows/s of the sink's batch writer against a row-by-row writer, in the same run.

* batch writer: the sink's :class:`BatchWriter` — COPY into a staging table, then
  ``INSERT ... SELECT ... ON CONFLICT DO NOTHING``, one transaction per batch;
* row-by-row: one ``INSERT`` and one commit per message, the way the old system
  stored each message.

Both write GuardPosition rows (the most frequent record) with random 32-hex
event ids, like the bridge's ``msg.id``, into a scratch database created on the
server of ``DATABASE_URL`` and dropped at the end. Mapping records to rows is
done before the clocks start, so only the writing is measured. The two writers
take turns for a few rounds and the median of each is reported, so a burst of
load from another process on the machine does not decide the ratio.

Run: python bench/sink_rows.py [BATCH_ROWS_PER_ROUND] [ROW_BY_ROW_ROWS_PER_ROUND] [ROUNDS] [BATCH_SIZE]
"""

from __future__ import annotations

import statistics
import sys
import time
import uuid
from urllib.parse import urlsplit, urlunsplit

import psycopg

from guardstream.catalog import TOPICS
from guardstream.infra.migrate import migrate
from guardstream.records import GUARD_POSITION
from guardstream.settings import Settings
from guardstream.sinks.rows import GUARD_POSITIONS, plan_write
from guardstream.sinks.writer import BatchWriter

T0 = 1_795_000_000_000


def planned(n: int) -> list:
    topic = TOPICS.events_high.name
    out = []
    for i in range(n):
        record = {"event_id": uuid.uuid4().hex, "tenant": "acme", "device_id": f"guard-{i % 500}", "ts_ms": T0 + i,
                  "received_ms": T0 + i + 40, "lat": 52.52 + i % 100 / 1e4, "lon": 13.40, "accuracy_m": 4.5,
                  "speed_mps": 1.2, "heading_deg": 87.0, "altitude_m": None, "fences": ["acme-hq"],
                  "in_site": True, "violation": False}
        out.append(((topic, i), plan_write(topic, 0, i, b"k", GUARD_POSITION, record)))
    return out


def batch_rate(url: str, items: list, batch_size: int) -> float:
    writer: BatchWriter = BatchWriter(url)
    writer.ping()  # connect and create the staging tables before the clock starts
    start = time.perf_counter()
    for at in range(0, len(items), batch_size):
        result = writer.write(items[at:at + batch_size])
        assert not result.rejected
    elapsed = time.perf_counter() - start
    writer.close()
    return len(items) / elapsed


def row_by_row_rate(url: str, items: list) -> float:
    columns = ", ".join(GUARD_POSITIONS.column_names)
    marks = ", ".join(["%s"] * len(GUARD_POSITIONS.columns))
    statement = f"INSERT INTO guard_positions ({columns}) VALUES ({marks})"
    with psycopg.connect(url) as conn:
        start = time.perf_counter()
        for _, write in items:
            conn.execute(statement, write.row)
            conn.commit()
        return len(items) / (time.perf_counter() - start)


def main() -> None:
    args = [int(a) for a in sys.argv[1:]]
    batch_rows, row_rows, rounds, batch_size = args + [50_000, 2_000, 3, 5_000][len(args):]
    server = urlsplit(Settings.from_env().database_url)
    admin_url = urlunsplit(server._replace(path="/postgres"))
    name = f"gs_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    batched: list[float] = []
    one_by_one: list[float] = []
    try:
        url = urlunsplit(server._replace(path=f"/{name}"))
        migrate(url)
        for _ in range(rounds):
            batched.append(batch_rate(url, planned(batch_rows), batch_size))
            one_by_one.append(row_by_row_rate(url, planned(row_rows)))
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    fast, slow = statistics.median(batched), statistics.median(one_by_one)
    print(f"batch writer (COPY + INSERT ON CONFLICT, {batch_size} rows/batch): {fast:>10,.0f} rows/s"
          f"  (median of {rounds} x {batch_rows:,} rows; {', '.join(f'{r:,.0f}' for r in batched)})")
    print(f"row-by-row (one INSERT and commit per message):        {slow:>10,.0f} rows/s"
          f"  (median of {rounds} x {row_rows:,} rows; {', '.join(f'{r:,.0f}' for r in one_by_one)})")
    print(f"ratio: {fast / slow:.1f}x (target >= 30x)")


if __name__ == "__main__":
    main()
