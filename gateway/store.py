"""The gateway's PostgreSQL side: the snapshot and the history queries, on psycopg's async connections.

Every query filters on the token's tenants in SQL (``visible``: None for role
noc, who sees every tenant), so a row of another tenant never leaves the
database. Connections are opened on first use and kept in a small pool; a
query that fails for want of a server raises :class:`UnavailableError`
(the WebSocket answers ``unavailable``, HTTP 503).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np
import psycopg
from psycopg.rows import dict_row, tuple_row

from guardstream.errors import GuardstreamError, UnavailableError
from guardstream.gateway.history import AlertQuery, NearQuery, TrackQuery, shown_address
from guardstream.gateway.snapshot import ACTION_FIELDS, ALERT_FIELDS, OPEN_STATUSES, Scope, Snapshot
from guardstream.records import ACTION_STATUS

POOL_SIZE = 4
SNAPSHOTS_KEPT = 16  # scopes whose last snapshot is kept for reuse (a few MB each at 10,000 guards)
SNAPSHOT_REUSE_S = 5.0  # and for how long: a bound, should anything but the sink ever write the tables
TP = tuple[str, int]
_json = msgspec.json.Encoder().encode
CONNECT_TIMEOUT_S = 5
_MS = "(extract(epoch FROM {0}) * 1000)::bigint"

_ALERT_COLUMNS = f"""event_id, tenant, device_id, {_MS.format("ts")} AS ts_ms,
    {_MS.format("received_at")} AS received_ms, kind, severity, lat, lon, message, rule, cause_event_id, status,
    status_by, status_ts_ms, status_note"""
_POSITION_COLUMNS = f"""event_id, tenant, device_id, {_MS.format("ts")} AS ts_ms,
    {_MS.format("received_at")} AS received_ms, lat, lon, accuracy_m, speed_mps, heading_deg, altitude_m, fences,
    in_site, violation"""
# the token's tenants, the outer filter of every query: %(noc)s true sees every tenant
_VISIBLE = "(%(noc)s OR tenant = ANY(%(visible)s))"



def _json_array(values: Sequence[str]) -> str:
    """SQL for a JSON array of ``values`` (expressions), without json_build_array's spaces."""
    return "'[' || concat_ws(',', " + ", ".join(f"coalesce(to_json({v})::text, 'null')" for v in values) + ") || ']'"


_ALERT_VALUES = {"ts_ms": _MS.format("ts"), "received_ms": _MS.format("received_at")}  # the others: columns
# A snapshot's sections: (tenant, the device when the rows are in scope through a device channel
# only, the rows as JSON arrays one a line), rendered and joined by the database (snapshot.Section).
_SNAPSHOT_ALERTS = f"""
SELECT tenant, CASE WHEN %(every)s OR tenant = ANY(%(alert_tenants)s) THEN NULL ELSE device_id END,
       string_agg({_json_array([_ALERT_VALUES.get(f, f) for f in ALERT_FIELDS])}, E'\\n' ORDER BY ts, event_id)
  FROM device_alerts
 WHERE status = ANY(%(open)s) AND {_VISIBLE}
   AND (%(every)s OR tenant = ANY(%(alert_tenants)s) OR device_id = ANY(%(device_ids)s))
 GROUP BY 1, 2"""
_SNAPSHOT_ACTIONS = f"""
SELECT action_id, tenant, alert_event_id, status, actor, ts_ms, note FROM alert_actions_pending
 WHERE {_VISIBLE} AND (%(every)s OR tenant = ANY(%(alert_tenants)s))
 ORDER BY ts_ms, action_id"""
# snapshot_row: the GuardPosition record as a JSON array, rendered at write (migration 0008)
_SNAPSHOT_POSITIONS = f"""
SELECT tenant, CASE WHEN tenant = ANY(%(position_tenants)s) THEN NULL ELSE device_id END,
       string_agg(snapshot_row, E'\\n')
  FROM guard_last_positions
 WHERE {_VISIBLE} AND (tenant = ANY(%(position_tenants)s) OR device_id = ANY(%(device_ids)s))
 GROUP BY 1, 2"""

_TRACK_PAGE = f"""
SELECT {_POSITION_COLUMNS}, ts AS _ts FROM guard_positions
 WHERE device_id = %(guard)s AND {_VISIBLE} AND ts >= %(start)s AND ts < %(end)s
   AND (%(after)s::timestamptz IS NULL OR (ts, event_id) > (%(after)s::timestamptz, %(after_id)s::text))
 ORDER BY ts, event_id LIMIT %(limit)s"""
# the points of a range as three packed arrays (timestamptz and float8 in their binary forms),
# one row: an index-only scan on guard_positions_track, and no row or Python object per fix.
# The three aggregates see the rows in one order, so the arrays line up; the order itself is
# put right in numpy (points_of), not trusted to the subquery.
_TRACK_POINTS = f"""
SELECT count(*), string_agg(timestamptz_send(ts), ''::bytea), string_agg(float8send(lat), ''::bytea),
       string_agg(float8send(lon), ''::bytea) FROM (
    SELECT ts, lat, lon FROM guard_positions
     WHERE device_id = %(guard)s AND {_VISIBLE} AND ts >= %(start)s AND ts < %(end)s
     ORDER BY ts, event_id LIMIT %(limit)s) t"""
_PG_EPOCH_MS = 946_684_800_000  # 2000-01-01, where PostgreSQL's binary timestamps count microseconds from
_ALERT_PAGE = f"""
SELECT {_ALERT_COLUMNS}, ts AS _ts FROM device_alerts
 WHERE {_VISIBLE} AND status = ANY(%(statuses)s) AND (%(kind)s::text IS NULL OR kind = %(kind)s)
   AND ts >= %(start)s AND ts < %(end)s
   AND (%(after)s::timestamptz IS NULL OR (ts, event_id) < (%(after)s::timestamptz, %(after_id)s::text))
 ORDER BY ts DESC, event_id DESC LIMIT %(limit)s"""
_ACTIONS_OF = f"""
SELECT action_id, alert_event_id, status, actor, ts_ms, note FROM alert_action_log
 WHERE alert_event_id = ANY(%(ids)s) AND {_VISIBLE} ORDER BY ts_ms, action_id"""
# what the notifier sent about each alert (table notifications, migration 0003), in the order it was planned
_NOTIFICATIONS_OF = f"""
SELECT alert_id, channel, recipient, address, tier, status, attempts, held_reason, provider_response,
       {_MS.format("created_at")} AS planned_ms, {_MS.format("held_at")} AS held_ms,
       {_MS.format("claimed_at")} AS attempted_ms, {_MS.format("sent_at")} AS sent_ms
  FROM notifications
 WHERE alert_id = ANY(%(ids)s) AND {_VISIBLE} ORDER BY alert_id, tier, created_at, channel, recipient"""
_FENCE = f"SELECT fence_id, tenant, name, kind FROM geofences WHERE fence_id = %(fence)s AND NOT deleted AND {_VISIBLE}"
_OCCUPANTS = f"""
SELECT {_POSITION_COLUMNS} FROM guard_last_positions
 WHERE tenant = %(tenant)s AND fences @> ARRAY[%(fence)s]::text[] ORDER BY device_id"""
# haversine, after a latitude band the (tenant, lat) index narrows to
_NEAR = f"""
SELECT * FROM (
    SELECT {_POSITION_COLUMNS}, 2 * 6371008.8 * asin(sqrt(
               power(sin(radians(lat - %(lat)s) / 2), 2)
             + cos(radians(%(lat)s)) * cos(radians(lat)) * power(sin(radians(lon - %(lon)s) / 2), 2))) AS distance_m
      FROM guard_last_positions
     WHERE {_VISIBLE} AND lat BETWEEN %(south)s AND %(north)s) near
 WHERE distance_m <= %(radius)s ORDER BY distance_m, tenant, device_id LIMIT %(limit)s"""


@dataclass(frozen=True)
class Page:
    rows: list[dict[str, Any]]
    more: bool  # a row past the page exists: the last row's key is the next cursor


class Store:
    def __init__(self, database_url: str, size: int = POOL_SIZE) -> None:
        self._url = database_url
        self._idle: list[psycopg.AsyncConnection] = []
        self._slots = asyncio.Semaphore(size)
        self._snapshots: OrderedDict[Scope, tuple[float, Snapshot]] = OrderedDict()  # when taken, what

    async def close(self) -> None:
        while self._idle:
            await self._idle.pop().close()

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[psycopg.AsyncConnection]:
        async with self._slots:
            conn = self._idle.pop() if self._idle else None
            try:
                if conn is None or conn.closed:
                    conn = await psycopg.AsyncConnection.connect(
                        self._url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S, row_factory=dict_row,
                        application_name="guardstream-gateway")
                yield conn
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                if conn is not None:
                    await conn.close()
                raise UnavailableError(f"PostgreSQL: {exc}".splitlines()[0], retry_after=1.0) from exc
            except psycopg.errors.UndefinedTable as exc:
                raise GuardstreamError(f"{exc.diag.message_primary}: run `guardstream db migrate`",
                                       reason="not_migrated") from exc
            else:
                if not conn.closed and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
                    self._idle.append(conn)

    async def _rows(self, query: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        async with self._connection() as conn:
            cur = await conn.execute(_shape(query, params), params)
            return await cur.fetchall()

    # -- snapshot ------------------------------------------------------------------------

    async def snapshot(self, scope: Scope) -> Snapshot:
        """The present state of ``scope``. The sink is the only writer of the tables a snapshot
        reads and moves ``sink_positions`` in the same transaction, so while those positions stand
        still the tables do too: a snapshot taken at the same positions is served again (a reload
        storm, a second screen) for at most ``SNAPSHOT_REUSE_S``, after one small read."""
        async with self._connection() as conn:
            now = time.monotonic()
            cached = self._snapshots.get(scope)
            if cached is not None and now - cached[0] <= SNAPSHOT_REUSE_S:
                if await _sink_positions(conn) == cached[1].reflected:
                    self._snapshots.move_to_end(scope)
                    return cached[1]
            snapshot = await _snapshot(conn, scope)
        self._snapshots[scope] = (now, snapshot)
        self._snapshots.move_to_end(scope)
        while len(self._snapshots) > SNAPSHOTS_KEPT:
            self._snapshots.popitem(last=False)
        return snapshot

    # -- history ---------------------------------------------------------------------------

    async def _guard_tenants(self, visible: frozenset[str] | None, guard: str) -> frozenset[str]:
        # the tenants a track is read in: with the tenant leading, the (tenant, device_id, ts) index serves it
        if visible is not None:
            return visible
        rows = await self._rows("SELECT DISTINCT tenant FROM guard_last_positions WHERE device_id = %(guard)s",
                                {"guard": guard})
        return frozenset(r["tenant"] for r in rows)

    async def track_page(self, visible: frozenset[str] | None, query: TrackQuery) -> Page:
        after = query.cursor
        visible = await self._guard_tenants(visible, query.guard)
        rows = await self._rows(_TRACK_PAGE, _visible(visible) | {
            "guard": query.guard, "start": query.start, "end": query.end, "limit": query.limit + 1,
            "after": after.ts if after else None, "after_id": after.event_id if after else None})
        return Page(rows[:query.limit], len(rows) > query.limit)

    async def track_points(self, visible: frozenset[str] | None, query: TrackQuery, cap: int) -> np.ndarray:
        """The whole range as rows of (ts_ms, lat, lon), in time order, at most ``cap`` + 1 of them."""
        visible = await self._guard_tenants(visible, query.guard)
        params = _visible(visible) | {"guard": query.guard, "start": query.start, "end": query.end, "limit": cap + 1}
        async with self._connection() as conn:
            async with conn.cursor(row_factory=tuple_row, binary=True) as cur:
                await cur.execute(_shape(_TRACK_POINTS, params), params)
                row = await cur.fetchone()
        return points_of(*row) if row is not None else points_of(0, None, None, None)

    async def alert_page(self, visible: frozenset[str] | None, query: AlertQuery) -> Page:
        after = query.cursor
        params = _visible(visible)
        async with self._connection() as conn:
            page_params = params | {
                "statuses": list(query.statuses), "kind": query.kind, "start": query.start, "end": query.end,
                "limit": query.limit + 1, "after": after.ts if after else None,
                "after_id": after.event_id if after else None}
            rows = await (await conn.execute(_shape(_ALERT_PAGE, page_params), page_params)).fetchall()
            page = rows[:query.limit]
            ids = params | {"ids": [r["event_id"] for r in page]}
            cur = await conn.execute(_shape(_ACTIONS_OF, ids), ids)
            actions: dict[str, list[dict[str, Any]]] = {}
            for action in await cur.fetchall():
                actions.setdefault(action.pop("alert_event_id"), []).append(action)
            sent = await self._notifications_of(conn, ids)
        for row in page:
            row["actions"] = actions.get(row["event_id"], [])
            row["notifications"] = sent.get(row["event_id"], [])
        return Page(page, len(rows) > query.limit)

    async def notifications(self, visible: frozenset[str] | None, alert_id: str) -> list[dict[str, Any]]:
        """What was sent to whom about one alert; [] for an alert of a tenant the token does not see."""
        async with self._connection() as conn:
            return (await self._notifications_of(conn, _visible(visible) | {"ids": [alert_id]})).get(alert_id, [])

    @staticmethod
    async def _notifications_of(conn: psycopg.AsyncConnection,
                                params: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
        cur = await conn.execute(_shape(_NOTIFICATIONS_OF, params), params)
        out: dict[str, list[dict[str, Any]]] = {}
        for row in await cur.fetchall():
            row["address"] = shown_address(row["channel"], row["address"])
            out.setdefault(row.pop("alert_id"), []).append(row)
        return out

    async def occupants(self, visible: frozenset[str] | None, fence_id: str) -> tuple[dict[str, Any] | None,
                                                                                     list[dict[str, Any]]]:
        """(the fence, the guards whose last fix is inside it); (None, []) for a fence the token does not see."""
        async with self._connection() as conn:
            params = _visible(visible) | {"fence": fence_id}
            fence = await (await conn.execute(_shape(_FENCE, params), params)).fetchone()
            if fence is None:
                return None, []
            cur = await conn.execute(_OCCUPANTS, {"tenant": fence["tenant"], "fence": fence_id})
            return fence, await cur.fetchall()

    async def near(self, visible: frozenset[str] | None, query: NearQuery) -> list[dict[str, Any]]:
        south, north = query.latitude_band()
        return await self._rows(_NEAR, _visible(visible) | {
            "lat": query.lat, "lon": query.lon, "radius": query.radius_m, "south": south, "north": north,
            "limit": query.limit})


_OPTIONAL = (  # (clause, the parameter that switches it off when true / None)
    (_VISIBLE, "noc", "tenant = ANY(%(visible)s)"),
    ("(%(every)s OR tenant = ANY(%(alert_tenants)s))", "every", "tenant = ANY(%(alert_tenants)s)"),
    ("(%(kind)s::text IS NULL OR kind = %(kind)s)", "kind", "kind = %(kind)s"),
    ("(%(after)s::timestamptz IS NULL OR (ts, event_id) > (%(after)s::timestamptz, %(after_id)s::text))", "after",
     "(ts, event_id) > (%(after)s::timestamptz, %(after_id)s::text)"),
    ("(%(after)s::timestamptz IS NULL OR (ts, event_id) < (%(after)s::timestamptz, %(after_id)s::text))", "after",
     "(ts, event_id) < (%(after)s::timestamptz, %(after_id)s::text)"),
)


def _shape(query: str, params: dict[str, Any]) -> str:
    """The query with each optional clause written out as what it is for these parameters, so the
    planner sees ``tenant = ANY(...)`` (an index condition) rather than ``$1 OR tenant = ANY(...)``,
    in a plan psycopg prepares and reuses."""
    for clause, switch, condition in _OPTIONAL:
        if clause in query:
            value = params.get(switch)
            off = value is True if switch in ("noc", "every") else value is None
            if not off and switch == "noc" and len(params["visible"]) == 1:
                # one tenant as an equality: an ANY(array) on the index's first column loses its order
                condition = "tenant = (%(visible)s::text[])[1]"
            query = query.replace(clause, "TRUE" if off else f"({condition})")
    return query


def _visible(visible: frozenset[str] | None) -> dict[str, Any]:
    return {"noc": visible is None, "visible": sorted(visible or ())}


_ACTION_OF_STATUS = {status: action for action, status in ACTION_STATUS.items()}


def _parked_action(row: dict[str, Any]) -> dict[str, Any]:
    # an AlertAction record as the feed carries it: the status back to the action that set it
    return {"action_id": row["action_id"], "tenant": row["tenant"], "alert_event_id": row["alert_event_id"],
            "action": _ACTION_OF_STATUS.get(row["status"], row["status"]), "actor": row["actor"], "ts_ms": row["ts_ms"],
            "note": row["note"]}


async def _sink_positions(conn: psycopg.AsyncConnection) -> dict[TP, int]:
    cur = await conn.execute("SELECT topic, partition, next_offset FROM sink_positions")
    return {(r["topic"], r["partition"]): r["next_offset"] for r in await cur.fetchall()}


async def _snapshot(conn: psycopg.AsyncConnection, scope: Scope) -> Snapshot:
    params = {"noc": scope.visible is None, "visible": sorted(scope.visible or ()),
              "every": scope.alert_tenants is None, "alert_tenants": sorted(scope.alert_tenants or ()),
              "position_tenants": sorted(scope.position_tenants), "device_ids": sorted(scope.devices),
              "open": list(OPEN_STATUSES)}
    # one MVCC snapshot for the positions and every table: the rows are exactly those below them
    async with conn.transaction():
        await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        reflected = await _sink_positions(conn)
        actions = await (await conn.execute(_shape(_SNAPSHOT_ACTIONS, params), params)).fetchall()
        async with conn.cursor(row_factory=tuple_row) as rows:
            alerts = await (await rows.execute(_shape(_SNAPSHOT_ALERTS, params), params)).fetchall()
            positions = await (await rows.execute(_shape(_SNAPSHOT_POSITIONS, params), params)).fetchall()
    parked = [(a["tenant"], None, _json([_parked_action(a)[f] for f in ACTION_FIELDS]).decode()) for a in actions]
    return Snapshot(reflected, alerts, parked, positions)


def points_of(count: int, ts: bytes | None, lat: bytes | None, lon: bytes | None) -> np.ndarray:
    """(count, 3) float64 rows of (ts_ms, lat, lon), sorted by time, from the packed columns of
    ``_TRACK_POINTS`` (big-endian int64 microseconds since 2000, float8, float8)."""
    if not count:
        return np.empty((0, 3))
    points = np.empty((count, 3))
    points[:, 0] = np.frombuffer(ts, ">i8") // 1000 + _PG_EPOCH_MS
    points[:, 1] = np.frombuffer(lat, ">f8")
    points[:, 2] = np.frombuffer(lon, ">f8")
    if count > 1 and not bool(np.all(points[1:, 0] >= points[:-1, 0])):
        points = points[np.argsort(points[:, 0], kind="stable")]
    return points


def strip_keys(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows without their private sort columns (``_ts``)."""
    return [{k: v for k, v in row.items() if not k.startswith("_")} for row in rows]
