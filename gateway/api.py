"""The history API on the gateway's port: JSON over GET, the WebSocket's tokens and tenant rules.

=======================================  ===================================================
``/api/positions?guard=&from=&to=``      a guard's fixes in time order, keyset pages
                                         (``limit``, ``cursor``); with ``simplify_m`` and/or
                                         ``max_points`` the whole track, Douglas–Peucker
``/api/alerts?status=&kind=&from=&to=``  alerts newest first with their action history and
                                         notifications, pages
``/api/alerts/{id}/notifications``       what the notifier sent about one alert, to whom, when
``/api/fences/{id}/occupants``           the guards whose last fix is inside the fence
``/api/near?lat=&lon=&radius_m=``        the guards whose last fix is within the radius
``/api/openapi.json``                    the OpenAPI description of these
=======================================  ===================================================

A token is checked as for the WebSocket (``auth.verify``); a token's tenants
filter every query in SQL (role noc sees every tenant). A bad parameter is a
400 with ``{"reason", "detail"}``; an unreachable database a 503.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, unquote

import msgspec
from websockets.http11 import Request, Response

from guardstream.errors import GuardstreamError, UnavailableError
from guardstream.gateway.auth import AuthRefused, Keys, Principal, token_from_request, verify
from guardstream.gateway.history import (MAX_TRACK_POINTS, BadParameter, alert_id, alert_query, encode_cursor,
                                         fence_id, near_query, no_parameters, simplify_track, track_query)
from guardstream.gateway.protocol import CLOSE_CODES
from guardstream.gateway.store import Store, strip_keys
from guardstream.timespec import iso

JSON = "application/json"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_encode = msgspec.json.Encoder().encode
Respond = Callable[..., Response]


class HistoryApi:
    def __init__(self, keys: Keys, store: Store | None, respond: Respond) -> None:
        self.keys, self.store, self.respond = keys, store, respond

    def handles(self, path: str) -> bool:
        return path.startswith("/api/") and path != "/api/fences"

    async def answer(self, request: Request, path: str, query: str) -> Response:
        if path == "/api/openapi.json":
            return self.respond(200, json.dumps(OPENAPI).encode(), JSON)
        try:
            principal = verify(token_from_request(request.headers.raw_items(), query), self.keys, time.time())
        except AuthRefused as exc:
            return self._error(401 if CLOSE_CODES.get(exc.reason) != 4403 else 403, exc.reason, exc.detail)
        if self.store is None:
            return self._error(503, "no_database", "the gateway has no database configured")
        params = parse_qs(query, keep_blank_values=True)
        visible = None if principal.noc else principal.tenants
        try:
            body = await self._route(path, params, visible, principal)
        except BadParameter as exc:
            return self._error(400, exc.reason, exc.detail)
        except UnavailableError as exc:
            return self._error(503, exc.reason, exc.detail, {"Retry-After": str(max(1, int(exc.retry_after)))})
        except GuardstreamError as exc:
            return self._error(503, exc.reason, exc.detail)
        if body is None:
            return self._error(404, "not_found", f"no such endpoint {path}: see /api/openapi.json")
        status, payload = body
        return self.respond(status, _encode(payload), JSON)

    def _error(self, status: int, reason: str, detail: str, extra: dict[str, str] | None = None) -> Response:
        return self.respond(status, json.dumps({"reason": reason, "detail": detail}).encode(), JSON, extra)

    async def _route(self, path: str, params: Any, visible: frozenset[str] | None,
                     principal: Principal) -> tuple[int, dict[str, Any]] | None:
        assert self.store is not None
        now_ms = time.time_ns() // 1_000_000
        if path == "/api/positions":
            return 200, await self._positions(track_query(params, now_ms), visible)
        if path == "/api/alerts":
            query = alert_query(params, now_ms)
            page = await self.store.alert_page(visible, query)
            return 200, {"alerts": strip_keys(page.rows), "next": _next(page.rows, page.more)}
        if path == "/api/near":
            query = near_query(params)
            return 200, {"lat": query.lat, "lon": query.lon, "radius_m": query.radius_m,
                         "guards": await self.store.near(visible, query)}
        if path.startswith("/api/alerts/") and path.endswith("/notifications"):
            no_parameters(params)
            alert = alert_id(unquote(path[len("/api/alerts/"):-len("/notifications")]))
            return 200, {"alert_id": alert, "notifications": await self.store.notifications(visible, alert)}
        head, _, tail = path[len("/api/fences/"):].partition("/")
        if path.startswith("/api/fences/") and tail == "occupants":
            no_parameters(params)
            fence, occupants = await self.store.occupants(visible, fence_id(unquote(head)))
            if fence is None:  # unknown and another tenant's fence look the same
                return 404, {"reason": "unknown_fence", "detail": f"no fence {unquote(head)!r} of your tenants"}
            return 200, {"fence": fence, "occupants": occupants}
        return None

    async def _positions(self, query: Any, visible: frozenset[str] | None) -> dict[str, Any]:
        assert self.store is not None
        head = {"guard": query.guard, "from": iso(_ms(query.start)), "to": iso(_ms(query.end))}
        if not query.simplified:
            page = await self.store.track_page(visible, query)
            return head | {"positions": strip_keys(page.rows), "next": _next(page.rows, page.more)}
        points = await self.store.track_points(visible, query, MAX_TRACK_POINTS)
        if len(points) > MAX_TRACK_POINTS:
            raise BadParameter(f"more than {MAX_TRACK_POINTS} fixes: narrow from/to", reason="too_many_points")
        kept, tolerance = simplify_track(points, query.simplify_m, query.max_points)
        return head | {"simplified": True, "source_points": len(points), "tolerance_m": round(tolerance, 3),
                       "points": [{"ts_ms": ts, "lat": lat, "lon": lon} for ts, lat, lon in kept]}


def _ms(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def _next(rows: list[dict[str, Any]], more: bool) -> str | None:
    return encode_cursor(rows[-1]["_ts"], rows[-1]["event_id"]) if more and rows else None


def _param(name: str, description: str, schema: dict[str, Any], required: bool = False,
           where: str = "query") -> dict[str, Any]:
    return {"name": name, "in": where, "required": required, "description": description, "schema": schema}


_TIME = {"type": "string", "description": "TIME: -15m, -2h, -1d, ISO-8601 or epoch milliseconds"}
_PAGE = [_param("limit", "rows per page", {"type": "integer", "minimum": 1}),
         _param("cursor", "the `next` of the previous page", {"type": "string"})]
_ERRORS = {"400": {"description": "a bad parameter: {reason, detail}"},
           "401": {"description": "no valid token"}, "503": {"description": "database unavailable"}}


def _get(summary: str, parameters: list[dict[str, Any]]) -> dict[str, Any]:
    return {"get": {"summary": summary, "parameters": parameters, "security": [{"bearer": []}],
                    "responses": {"200": {"description": "JSON", "content": {JSON: {}}}, **_ERRORS}}}


OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "guardstream history API", "version": "1"},
    "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}},
    "paths": {
        "/api/positions": _get("A guard's track: keyset pages, or whole and simplified (Douglas-Peucker)", [
            _param("guard", "device id of the guard", {"type": "string"}, required=True),
            _param("from", "start (default -1h)", _TIME), _param("to", "end, exclusive (default now)", _TIME),
            *_PAGE, _param("simplify_m", "Douglas-Peucker tolerance in metres", {"type": "number"}),
            _param("max_points", "at most this many points (the tolerance grows to fit)", {"type": "integer"})]),
        "/api/alerts": _get("Alerts of the token's tenants, newest first, with their action history and "
                            "notifications", [
            _param("status", "open, new, acknowledged, resolved (comma-separated)", {"type": "string"}),
            _param("kind", "alert kind, e.g. PANIC", {"type": "string"}),
            _param("from", "start (default -7d)", _TIME), _param("to", "end, exclusive (default now)", _TIME),
            *_PAGE]),
        "/api/alerts/{id}/notifications": _get(
            "What the notifier sent about the alert: channel, recipient, address (a webhook's scheme and host "
            "only), tier, status, attempts, held_reason, provider_response, planned_ms, held_ms, attempted_ms, "
            "sent_ms; an alert of another tenant has none", [
                _param("id", "the alert's event id", {"type": "string"}, required=True, where="path")]),
        "/api/fences/{id}/occupants": _get("Guards whose last fix is inside the fence", [
            _param("id", "fence id", {"type": "string"}, required=True, where="path")]),
        "/api/near": _get("Guards whose last fix is within radius_m of lat, lon", [
            _param("lat", "degrees", {"type": "number"}, required=True),
            _param("lon", "degrees", {"type": "number"}, required=True),
            _param("radius_m", "metres, up to 100000", {"type": "number"}, required=True),
            _param("limit", "at most this many guards, nearest first", {"type": "integer"})]),
    },
}
