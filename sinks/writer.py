"""The batch writer: one database transaction per batch, idempotent by construction.

Rows of each table are COPY'd into a temporary staging table and moved with
``INSERT ... SELECT ... ON CONFLICT DO NOTHING``, so writing a batch twice (a
replay after a crash between the database commit and the Kafka offset commit)
inserts nothing the second time. Geofences are upserted (last write per fence
wins; a tombstone sets ``deleted``), and so are devices (an older version never
replaces a newer one; a tombstone deletes the row); alert actions update the
alert only when they are newer than its current state.

When the database refuses a row (a CHECK constraint, a bad value), the
statement is retried in halves under savepoints until the refused records are
pinned down (:func:`~guardstream.sinks.batching.isolate_failures`); they come
back in :attr:`WriteResult.rejected` and everything else is committed. A lost
connection or an unreachable server is :class:`UnavailableError`: nothing of
the batch is committed and the caller retries it whole.

An alert action can arrive before its alert (they travel on different topics
and consumers): it is parked in ``alert_actions_pending`` in the same
transaction and applied by the transaction that writes the alert. Both take one
advisory lock first, so the two can never miss each other.
"""

from __future__ import annotations

import struct
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import psycopg
from psycopg import sql

from guardstream.errors import GuardstreamError, UnavailableError
from guardstream.refusal import Refused
from guardstream.sinks.batching import isolate_failures
from guardstream.sinks.rows import (DEVICE_ALERTS, DEVICES, GEOFENCES, TABLES, AlertStatusChange, DeviceTombstone,
                                    DeviceUpsert, GeofenceTombstone, GeofenceUpsert, InsertRow, Table, Write,
                                    latest_devices, latest_geofences)

R = TypeVar("R")  # what the caller uses to find a record again (its Kafka coordinates)

_ALERT_LOCK = 0x616C657274  # "alert": serialises parking and draining of early alert actions

# A refused row: the statement failed because of the data, not because of the server.
_ROW_ERRORS = (psycopg.errors.DataError, psycopg.errors.IntegrityError)


@dataclass(frozen=True)
class Rejected(Generic[R]):
    """A row the database refused: its reference, and why (the reason is the SQLSTATE's condition name)."""
    ref: R
    refused: Refused


@dataclass
class WriteResult(Generic[R]):
    written: Counter[str] = field(default_factory=Counter)  # table -> rows inserted or updated
    duplicates: Counter[str] = field(default_factory=Counter)  # table -> rows already there
    actions: Counter[str] = field(default_factory=Counter)  # outcome -> alert actions
    rejected: list[Rejected[R]] = field(default_factory=list)


def reason_of(exc: psycopg.Error) -> str:
    """A stable reason code for a refused row: the condition name of its SQLSTATE."""
    try:
        name = psycopg.errors.lookup(exc.sqlstate).__name__ if exc.sqlstate else None
    except KeyError:
        name = None  # a SQLSTATE newer than this psycopg
    if name is None:
        return f"sqlstate_{exc.sqlstate}" if exc.sqlstate else "bad_value"  # bad_value: refused client-side
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")


def _detail_of(exc: psycopg.Error) -> str:
    # the primary message names the table and constraint; the "failing row" detail is left out
    return exc.diag.message_primary or str(exc).splitlines()[0]


_TEXT_OID = 25
_INT32 = struct.Struct("!i")
_EMPTY_ARRAY = struct.pack("!iii", 0, 0, _TEXT_OID)  # no dimensions, no nulls, element type
_ARRAY_HEAD = struct.Struct("!iiiii")  # dimensions, has-nulls flag, element type, length, lower bound


def text_array_binary(values: Sequence[str | None]) -> bytes:
    """A one-dimensional ``text[]`` in PostgreSQL's binary format (``array_send``).

    psycopg dumps arrays in Python, per element and per row; it was a third of the
    batch writer's time (bench/sink_rows.py under cProfile). Encoded here, the value
    goes into COPY as ready bytes."""
    if not values:
        return _EMPTY_ARRAY
    parts = [_ARRAY_HEAD.pack(1, any(v is None for v in values), _TEXT_OID, len(values), 1)]
    for value in values:
        if value is None:
            parts.append(_INT32.pack(-1))
        else:
            encoded = value.encode()
            parts.append(_INT32.pack(len(encoded)))
            parts.append(encoded)
    return b"".join(parts)


def _copy_plan(table: Table) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """(types psycopg dumps the COPY row with, indexes of the text[] columns given as bytes)."""
    arrays = tuple(i for i, kind in enumerate(table.column_types) if kind == "text[]")
    # the server reads a binary COPY field as the column's own type: bytes pass through as they are
    types = tuple("bytea" if i in arrays else kind for i, kind in enumerate(table.column_types))
    return types, arrays


def _copy_row(row: tuple[Any, ...], arrays: tuple[int, ...]) -> tuple[Any, ...]:
    if not arrays:
        return row
    out = list(row)
    for i in arrays:
        if out[i] is not None:
            out[i] = text_array_binary(out[i])
    return tuple(out)


def _stage_name(table: Table) -> sql.Identifier:
    return sql.Identifier(f"sink_stage_{table.name}")


def _move_statement(table: Table) -> sql.Composed:
    cols = sql.SQL(", ").join(map(sql.Identifier, table.column_names))
    conflict = sql.SQL(", ").join(map(sql.Identifier, table.conflict))
    if table is GEOFENCES or table is DEVICES:
        updated = [c for c in table.column_names if c not in table.conflict]
        action = sql.SQL("DO UPDATE SET ({}) = ({})").format(
            sql.SQL(", ").join(map(sql.Identifier, updated)),
            sql.SQL(", ").join(sql.SQL("EXCLUDED.{}").format(sql.Identifier(c)) for c in updated))
        if table is DEVICES:  # a replayed older version never rolls a device back
            action = sql.SQL("{} WHERE {}.updated_ms <= EXCLUDED.updated_ms").format(action, sql.Identifier(table.name))
    else:
        action = sql.SQL("DO NOTHING")
    # DELETE ... RETURNING empties the staging table in the statement that moves its rows, so the
    # next attempt in the same transaction (a bisection) starts from an empty one
    return sql.SQL("WITH staged AS (DELETE FROM {stage} RETURNING {cols}) "
                   "INSERT INTO {table} ({cols}) SELECT {cols} FROM staged ON CONFLICT ({conflict}) {action}").format(
        stage=_stage_name(table), cols=cols, table=sql.Identifier(table.name), conflict=conflict, action=action)


_APPLY_ACTION = """
WITH applied AS (
    UPDATE device_alerts
       SET status = %(status)s, status_by = %(actor)s, status_at = %(status_at)s,
           status_ts_ms = %(ts_ms)s, status_note = %(note)s
     WHERE event_id = %(alert)s::text AND (status_ts_ms IS NULL OR status_ts_ms < %(ts_ms)s)
 RETURNING 1
), logged AS (
    INSERT INTO alert_action_log (action_id, alert_event_id, tenant, status, actor, ts_ms, status_at, note)
    VALUES (%(action_id)s::text, %(alert)s::text, %(tenant)s::text, %(status)s::text, %(actor)s::text,
            %(ts_ms)s::bigint, %(status_at)s::timestamptz, %(note)s::text)
    ON CONFLICT (action_id) DO NOTHING
), parked AS (
    INSERT INTO alert_actions_pending (action_id, alert_event_id, tenant, status, actor, ts_ms, status_at, note)
    SELECT %(action_id)s::text, %(alert)s::text, %(tenant)s::text, %(status)s::text, %(actor)s::text,
           %(ts_ms)s::bigint, %(status_at)s::timestamptz, %(note)s::text
     WHERE NOT EXISTS (SELECT 1 FROM device_alerts WHERE event_id = %(alert)s::text)
    ON CONFLICT (action_id) DO NOTHING
 RETURNING 1
)
SELECT (SELECT count(*) FROM applied), (SELECT count(*) FROM parked)
"""

# Early actions whose alert has now been written: the newest per alert wins, as it would have in order.
_DRAIN_PENDING = """
WITH latest AS (
    SELECT DISTINCT ON (p.alert_event_id) p.*
      FROM alert_actions_pending p JOIN device_alerts a ON a.event_id = p.alert_event_id
     ORDER BY p.alert_event_id, p.ts_ms DESC, p.action_id DESC
), applied AS (
    UPDATE device_alerts a
       SET status = l.status, status_by = l.actor, status_at = l.status_at, status_ts_ms = l.ts_ms,
           status_note = l.note
      FROM latest l
     WHERE a.event_id = l.alert_event_id AND (a.status_ts_ms IS NULL OR a.status_ts_ms < l.ts_ms)
 RETURNING 1
), dropped AS (
    DELETE FROM alert_actions_pending p USING device_alerts a WHERE a.event_id = p.alert_event_id
 RETURNING 1
)
SELECT (SELECT count(*) FROM applied), (SELECT count(*) FROM dropped)
"""


# The Kafka position the tables reflect: raised (never lowered) in the transaction that writes the rows.
_RAISE_POSITIONS = """
INSERT INTO sink_positions AS s (topic, partition, next_offset) VALUES (%s, %s, %s)
ON CONFLICT (topic, partition) DO UPDATE SET next_offset = EXCLUDED.next_offset, updated_at = now()
 WHERE s.next_offset < EXCLUDED.next_offset
"""


class BatchWriter(Generic[R]):
    """Writes batches of planned records to PostgreSQL; one connection, one thread."""

    def __init__(self, database_url: str, connect_timeout_s: int = 5) -> None:
        self._url = database_url
        self._connect_timeout_s = connect_timeout_s
        self._conn: psycopg.Connection | None = None
        self._moves = {table.name: _move_statement(table) for table in TABLES}

    # -- connection -------------------------------------------------------------------

    def _connection(self) -> psycopg.Connection:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        try:
            # keepalives: a server that vanishes mid-query is noticed, not waited on forever
            conn = psycopg.connect(self._url, connect_timeout=self._connect_timeout_s, keepalives=1,
                                   keepalives_idle=10, keepalives_interval=5, keepalives_count=3,
                                   application_name="guardstream-sink")
        except psycopg.OperationalError as exc:
            raise UnavailableError(f"PostgreSQL unreachable: {exc}".splitlines()[0]) from exc
        try:
            with conn.transaction():
                self._create_staging_tables(conn)
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            conn.close()
            raise UnavailableError(f"PostgreSQL unreachable: {exc}".splitlines()[0]) from exc
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return conn

    @staticmethod
    def _create_staging_tables(conn: psycopg.Connection) -> None:
        for table in TABLES:
            # ON COMMIT DELETE ROWS truncates the file at each commit: deleted staging rows would
            # otherwise pile up for good (temporary tables are never vacuumed)
            try:
                conn.execute(sql.SQL("CREATE TEMP TABLE IF NOT EXISTS {} (LIKE {} INCLUDING DEFAULTS) "
                                     "ON COMMIT DELETE ROWS").format(_stage_name(table), sql.Identifier(table.name)))
            except psycopg.errors.UndefinedTable as exc:
                raise GuardstreamError(f"table {table.name} is missing: run `guardstream db migrate`",
                                       reason="not_migrated") from exc
        try:
            conn.execute("SELECT 1 FROM sink_positions LIMIT 0")  # written in place, never staged
        except psycopg.errors.UndefinedTable as exc:
            raise GuardstreamError("table sink_positions is missing: run `guardstream db migrate`",
                                   reason="not_migrated") from exc

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def ping(self) -> None:
        """Raises :class:`UnavailableError` unless the database answers."""
        self._guarded(lambda conn: conn.execute("SELECT 1").fetchone())

    def _guarded(self, work: Callable[[psycopg.Connection], Any]) -> Any:
        conn = self._connection()
        try:
            with conn.transaction():
                return work(conn)
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            # lost connection, server shutting down, deadlock or serialisation failure: retry the batch whole
            self.close()
            raise UnavailableError(f"PostgreSQL write failed: {type(exc).__name__}: {exc}".splitlines()[0],
                                   retry_after=0.1) from exc

    # -- batches ----------------------------------------------------------------------

    def write(self, items: Sequence[tuple[R, Write]],
              positions: Mapping[tuple[str, int], int] | None = None) -> WriteResult[R]:
        """Write every item in one transaction; refused rows come back in ``rejected``.

        ``positions``: per (topic, partition), the offset after the batch's last record; stored
        in the same transaction, so a reader of the tables knows exactly which records they hold."""
        def work(conn: psycopg.Connection) -> WriteResult[R]:
            result = self._write(conn, items)
            if positions:
                _raise_positions(conn, positions)
            return result
        return self._guarded(work)

    def seed_positions(self, positions: Mapping[tuple[str, int], int]) -> None:
        """Raise the stored positions to ``positions`` (committed offsets: every record below is written)."""
        if positions:
            self._guarded(lambda conn: _raise_positions(conn, positions))

    def _write(self, conn: psycopg.Connection, items: Sequence[tuple[R, Write]]) -> WriteResult[R]:
        result: WriteResult[R] = WriteResult()
        rows: dict[str, list[tuple[R, tuple[Any, ...]]]] = {}
        fences: list[tuple[R, GeofenceUpsert | GeofenceTombstone]] = []
        devices: list[tuple[R, DeviceUpsert | DeviceTombstone]] = []
        actions: list[tuple[R, AlertStatusChange]] = []
        for ref, write in items:
            if isinstance(write, InsertRow):
                rows.setdefault(write.table.name, []).append((ref, write.row))
            elif isinstance(write, (GeofenceUpsert, GeofenceTombstone)):
                fences.append((ref, write))
            elif isinstance(write, (DeviceUpsert, DeviceTombstone)):
                devices.append((ref, write))
            elif isinstance(write, AlertStatusChange):
                actions.append((ref, write))
            else:
                raise TypeError(f"the writer cannot write {write!r}")  # refusals never reach it
        for table in TABLES:
            if table.name in rows:
                self._insert(conn, table, rows[table.name], result)
        if fences:
            self._geofences(conn, fences, result)
        if devices:
            self._devices(conn, devices, result)
        if result.written[DEVICE_ALERTS.name]:
            self._drain_pending_actions(conn, result)
        if actions:
            self._actions(conn, actions, result)
        return result

    def _attempt(self, conn: psycopg.Connection, work: Callable[[], None]) -> psycopg.Error | None:
        """Run ``work`` under a savepoint; the row error that undid it, or None."""
        try:
            with conn.transaction():
                work()
        except _ROW_ERRORS as exc:
            return exc
        return None

    def _reject(self, failures: list[tuple[tuple[R, Any], psycopg.Error]], result: WriteResult[R]) -> None:
        for (ref, _), exc in failures:
            result.rejected.append(Rejected(ref, Refused(reason_of(exc), _detail_of(exc))))

    def _insert(self, conn: psycopg.Connection, table: Table, rows: list[tuple[R, tuple[Any, ...]]],
                result: WriteResult[R]) -> None:
        # binary COPY: about 3.5x faster than text to encode and to parse (bench/sink_rows.py)
        copy_sql = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
            _stage_name(table), sql.SQL(", ").join(map(sql.Identifier, table.column_names)))

        types, arrays = _copy_plan(table)

        def attempt(chunk: Sequence[tuple[R, tuple[Any, ...]]]) -> psycopg.Error | None:
            def work() -> None:
                with conn.cursor() as cur:
                    with cur.copy(copy_sql) as copy:
                        copy.set_types(types)
                        for _, row in chunk:
                            copy.write_row(_copy_row(row, arrays))
                    cur.execute(self._moves[table.name])
                    result.written[table.name] += cur.rowcount
                    result.duplicates[table.name] += len(chunk) - cur.rowcount
            return self._attempt(conn, work)

        self._reject(isolate_failures(rows, attempt), result)

    def _geofences(self, conn: psycopg.Connection, fences: list[tuple[R, GeofenceUpsert | GeofenceTombstone]],
                   result: WriteResult[R]) -> None:
        latest = latest_geofences(fences)
        upserts = [(ref, w.row) for ref, w in latest if isinstance(w, GeofenceUpsert)]
        deleted = [w.fence_id for _, w in latest if isinstance(w, GeofenceTombstone)]
        if upserts:
            self._insert(conn, GEOFENCES, upserts, result)  # an upsert counts every row as written
        if deleted:
            # a tombstone for a fence never written has nothing to mark
            cur = conn.execute("UPDATE geofences SET deleted = true WHERE fence_id = ANY(%s) AND NOT deleted",
                               (deleted,))
            result.written[GEOFENCES.name] += cur.rowcount

    def _devices(self, conn: psycopg.Connection, devices: list[tuple[R, DeviceUpsert | DeviceTombstone]],
                 result: WriteResult[R]) -> None:
        latest = latest_devices(devices)
        upserts = [(ref, w.row) for ref, w in latest if isinstance(w, DeviceUpsert)]
        forgotten = [w.device_id for _, w in latest if isinstance(w, DeviceTombstone)]
        if upserts:
            self._insert(conn, DEVICES, upserts, result)
        if forgotten:
            cur = conn.execute("DELETE FROM devices WHERE device_id = ANY(%s)", (forgotten,))
            result.written[DEVICES.name] += cur.rowcount

    def _drain_pending_actions(self, conn: psycopg.Connection, result: WriteResult[R]) -> None:
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_ALERT_LOCK,))
        applied, dropped = conn.execute(_DRAIN_PENDING).fetchone()
        if applied:
            result.actions["applied_pending"] += applied
        if dropped - applied:
            result.actions["stale"] += dropped - applied

    def _actions(self, conn: psycopg.Connection, actions: list[tuple[R, AlertStatusChange]],
                 result: WriteResult[R]) -> None:
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_ALERT_LOCK,))

        def attempt(chunk: Sequence[tuple[R, AlertStatusChange]]) -> psycopg.Error | None:
            outcomes: Counter[str] = Counter()

            def work() -> None:
                with conn.cursor() as cur:
                    cur.executemany(_APPLY_ACTION, [_action_params(a) for _, a in chunk], returning=True)
                    for answer in cur.results():
                        applied, parked = answer.fetchone()
                        outcomes["applied" if applied else "pending" if parked else "stale"] += 1
            failure = self._attempt(conn, work)
            if failure is None:
                result.actions.update(outcomes)
            return failure

        self._reject(isolate_failures(actions, attempt), result)


def _action_params(action: AlertStatusChange) -> dict[str, Any]:
    return {"status": action.status, "actor": action.actor, "status_at": action.status_at, "ts_ms": action.ts_ms,
            "note": action.note, "alert": action.alert_event_id, "action_id": action.action_id,
            "tenant": action.tenant}


def _raise_positions(conn: psycopg.Connection, positions: Mapping[tuple[str, int], int]) -> None:
    with conn.cursor() as cur:
        cur.executemany(_RAISE_POSITIONS, [(t, p, o) for (t, p), o in sorted(positions.items())])
