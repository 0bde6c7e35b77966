"""Plain HTTP on the gateway's port: the dashboard page, its fences, health.

``websockets`` hands every request to ``process_request`` first; a request
that is not a WebSocket upgrade is answered here:

=====================  ===========================================================
``/``                  the dashboard (``static/index.html``); the token is ``?token=``
``/static/<file>``     the page's script and style sheet
``/api/fences``        the fences of the token's tenants, GeoJSON geometry parsed
                       (``?token=`` or ``Authorization: Bearer``); read from the
                       compacted geofences topic (:func:`read_fences`), cached for
                       :data:`FENCES_TTL_S`
``/api/...``           the history API (``api.py``): tracks, alerts and their notifications, fence occupants,
                       guards near a point; ``/api/openapi.json`` describes it
``/healthz``           200 while the process runs
``/readyz``            200 when the push consumer runs, 503 otherwise
=====================  ===========================================================

Everything the page needs comes from here: it loads nothing from elsewhere.
"""

from __future__ import annotations

import asyncio
import http
import json
import time
from collections.abc import Callable
from importlib import resources
from typing import Any

from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from guardstream.catalog import TOPICS
from guardstream.errors import UnavailableError
from guardstream.gateway.api import HistoryApi
from guardstream.gateway.auth import AuthRefused, Keys, token_from_request, verify
from guardstream.gateway.protocol import CLOSE_CODES
from guardstream.gateway.store import Store
from guardstream.schemas.codec import Codec
from guardstream.settings import Settings
from guardstream.topic_end import latest_values

FENCES_TTL_S = 5.0
FENCES_READ_TIMEOUT_S = 10.0
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}
# the page and its parts come from this origin only; the WebSocket goes back to it
PAGE_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
               "connect-src 'self' ws: wss:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


def load_static() -> dict[str, tuple[bytes, str]]:
    """{file name: (body, content type)} of the page's files, read once."""
    folder = resources.files("guardstream.gateway").joinpath("static")
    out = {}
    for entry in folder.iterdir():
        suffix = "." + entry.name.rpartition(".")[2]
        if entry.is_file() and suffix in CONTENT_TYPES:
            out[entry.name] = (entry.read_bytes(), CONTENT_TYPES[suffix])
    return out


def response(status: int, body: bytes, content_type: str = "text/plain; charset=utf-8",
             extra: dict[str, str] | None = None) -> Response:
    headers = Headers({"Content-Type": content_type, "Content-Length": str(len(body)),
                       "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff", **(extra or {})})
    return Response(status, http.HTTPStatus(status).phrase, headers, body)


def read_fences(settings: Settings, codec: Codec) -> dict[str, dict[str, Any]]:
    """Every live fence by id: the latest record of each key of the compacted geofences
    topic, a deleted fence's tombstone left out; :class:`UnavailableError` when the topic
    is not read to its end within :data:`FENCES_READ_TIMEOUT_S`."""
    values = latest_values(settings, TOPICS.geofences.name, FENCES_READ_TIMEOUT_S, "guardstream-gateway-fences")
    return {key.decode(): codec.decode(value)[1] for key, value in values.items()}


class FenceCache:
    """The current fences, read from Kafka at most once per :data:`FENCES_TTL_S`."""

    def __init__(self, load: Callable[[], dict[str, dict[str, Any]]]) -> None:
        self._load = load
        self._lock = asyncio.Lock()
        self._fences: dict[str, dict[str, Any]] = {}
        self._at = -FENCES_TTL_S

    async def current(self) -> dict[str, dict[str, Any]]:
        async with self._lock:
            if time.monotonic() - self._at >= FENCES_TTL_S:
                self._fences = await asyncio.to_thread(self._load)
                self._at = time.monotonic()
            return self._fences


def fence_view(fence: dict[str, Any]) -> dict[str, Any]:
    return {"fence_id": fence["fence_id"], "tenant": fence["tenant"], "name": fence["name"], "kind": fence["kind"],
            "geometry": json.loads(fence["geometry"]), "radius_m": fence.get("radius_m")}


class Routes:
    def __init__(self, keys: Keys, fences: FenceCache, ready: Callable[[], tuple[bool, str]],
                 store: Store | None = None) -> None:
        self.keys, self.fences, self.ready = keys, fences, ready
        self.static = load_static()
        self.api = HistoryApi(keys, store, response)

    async def answer(self, request: Request) -> Response:
        path, _, query = request.path.partition("?")
        if path in ("/", "/index.html"):
            return self._file("index.html")
        if path.startswith("/static/"):
            return self._file(path[len("/static/"):])
        if path == "/healthz":
            return response(200, b"ok\n")
        if path == "/readyz":
            ok, why = self.ready()
            return response(200 if ok else 503, (("ready" if ok else f"not ready: {why}") + "\n").encode())
        if path == "/api/fences":
            return await self._fences(request, query)
        if self.api.handles(path):
            return await self.api.answer(request, path, query)
        return response(404, b"not found: try /, /api/fences, /healthz, /readyz or a WebSocket on /ws\n")

    def _file(self, name: str) -> Response:
        found = self.static.get(name)
        if found is None:
            return response(404, b"not found\n")
        body, content_type = found
        return response(200, body, content_type, {"Content-Security-Policy": PAGE_POLICY,
                                                  "Referrer-Policy": "no-referrer"})

    async def _fences(self, request: Request, query: str) -> Response:
        try:
            principal = verify(token_from_request(request.headers.raw_items(), query), self.keys, time.time())
        except AuthRefused as exc:
            status = 401 if CLOSE_CODES.get(exc.reason) != 4403 else 403
            return response(status, json.dumps({"reason": exc.reason, "detail": exc.detail}).encode(),
                            "application/json")
        try:
            fences = await self.fences.current()
        except UnavailableError as exc:
            return response(503, json.dumps({"reason": exc.reason, "detail": exc.detail}).encode(),
                            "application/json", {"Retry-After": str(int(exc.retry_after))})
        mine = [fence_view(f) for f in sorted(fences.values(), key=lambda f: (f["tenant"], f["fence_id"]))
                if principal.sees(f["tenant"])]
        return response(200, json.dumps({"fences": mine}).encode(), "application/json")
