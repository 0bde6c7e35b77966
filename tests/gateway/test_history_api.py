"""The history API against a real gateway and PostgreSQL: tenants, bad parameters, keyset pages."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from urllib.parse import urlencode

import psycopg
import pytest
from gateway_support import GatewayProcess, start_gateway, token
from support.http import http_get

from guardstream.catalog import TOPICS
from guardstream.infra.migrate import migrate
from guardstream.records import ALERT_ACTION, DEVICE_ALERT, GEOFENCE, GUARD_POSITION
from guardstream.settings import Settings
from guardstream.sinks.rows import plan_write
from guardstream.sinks.writer import BatchWriter

NOW = time.time_ns() // 1_000_000
LOW, CRITICAL, ACTIONS = TOPICS.events_low.name, TOPICS.events_critical.name, TOPICS.alerts_actions.name


def fix(tenant: str, guard: str, n: int, lat: float = 52.52, lon: float = 13.40, fences: tuple[str, ...] = (),
        ts_ms: int | None = None) -> dict:
    return {"event_id": f"{tenant}-{guard}-{n}-{uuid.uuid4().hex[:6]}", "tenant": tenant, "device_id": guard,
            "ts_ms": NOW - 3_000_000 + n * 1000 if ts_ms is None else ts_ms, "received_ms": NOW, "lat": lat,
            "lon": lon, "accuracy_m": None, "speed_mps": None, "heading_deg": None, "altitude_m": None,
            "fences": list(fences), "in_site": bool(fences), "violation": False}


def alert(tenant: str, n: int, kind: str = "PANIC") -> dict:
    return {"event_id": f"{tenant}-alert-{n}", "tenant": tenant, "device_id": f"{tenant}-g1", "ts_ms": NOW - n * 1000,
            "received_ms": NOW, "kind": kind, "severity": "CRITICAL", "lat": 52.5, "lon": 13.4, "message": None,
            "rule": None, "cause_event_id": None}


NOTIFICATION = """
INSERT INTO notifications (alert_id, tenant, channel, recipient, address, tier, status, attempts, held_reason,
                           held_at, claimed_at, sent_at, provider_response)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, CASE WHEN %s THEN now() - interval '50 s' END,
        CASE WHEN %s = 'sent' THEN now() - interval '40 s' END, CASE WHEN %s = 'sent' THEN now() - interval '39 s' END,
        %s)"""
# (alert, tenant, channel, recipient, address, tier, status, attempts, held_reason): as the notifier writes them;
# the last row is globex's, under the id of an acme alert: only the tenant tells them apart
NOTIFICATIONS = [(*row, row[8] is not None, row[6], row[6], "250 accepted" if row[6] == "sent" else None) for row in [
    ("acme-alert-1", "acme", "email", "ops", "ops@acme.example", 1, "sent", 1, None),
    ("acme-alert-1", "acme", "webhook", "ops", "https://hooks.example.com/services/T0/B0/s3cr3t?token=s3cr3t", 1,
     "sent", 2, None),
    ("acme-alert-1", "acme", "sms", "duty", "+15550101", 2, "held", 0, "rate_limit"),
    ("globex-alert-1", "globex", "email", "ops", "ops@globex.example", 1, "sent", 1, None),
    ("acme-alert-1", "globex", "sms", "globex-ops", "+15550199", 1, "dead", 5, None),
]]


def write(url: str, topic: str, schema: str, records: list[dict]) -> None:
    writer = BatchWriter(url)
    try:
        writer.write([((topic, i), plan_write(topic, 0, i, r.get("fence_id", "k").encode(), schema, r))
                      for i, r in enumerate(records)])
    finally:
        writer.close()


@pytest.fixture(scope="module")
def history_db(pg_admin_url: str) -> Iterator[str]:
    name = f"gs_history_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = pg_admin_url.rsplit("/", 1)[0] + f"/{name}"
    migrate(url)
    # two tenants with a guard of the same name at the same place, each inside its own fence
    for tenant in ("acme", "globex"):
        write(url, LOW, GUARD_POSITION, [fix(tenant, "shared-guard", n, fences=(f"{tenant}-hq",)) for n in range(30)])
        write(url, LOW, GUARD_POSITION, [fix(tenant, f"{tenant}-g1", 0, lat=52.5201, fences=(f"{tenant}-hq",))])
        write(url, TOPICS.geofences.name, GEOFENCE, [{
            "fence_id": f"{tenant}-hq", "tenant": tenant, "name": "HQ", "kind": "SITE", "radius_m": 100.0,
            "geometry": '{"type": "Point", "coordinates": [13.4, 52.52]}', "updated_ms": NOW}])
        write(url, CRITICAL, DEVICE_ALERT, [alert(tenant, n, "PANIC" if n % 2 else "FALL") for n in range(6)])
    write(url, ACTIONS, ALERT_ACTION, [
        {"action_id": "act-1", "tenant": "acme", "alert_event_id": "acme-alert-1", "action": "ACKNOWLEDGE",
         "actor": "op@acme", "ts_ms": NOW, "note": "on my way"},
        {"action_id": "act-2", "tenant": "acme", "alert_event_id": "acme-alert-2", "action": "RESOLVE",
         "actor": "op@acme", "ts_ms": NOW, "note": None}])
    with psycopg.connect(url) as conn:
        conn.cursor().executemany(NOTIFICATION, NOTIFICATIONS)
    yield url
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def api(applied: Settings, history_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    process = start_gateway(applied, tmp_path_factory.mktemp("history") / "gateway.log", DATABASE_URL=history_db)
    yield process
    process.stop()


ACME = token("ann", ("acme",), ("operator",))
GLOBEX = token("gus", ("globex",), ("operator",))
NOC = token("nora", (), ("noc",))


def get(api: GatewayProcess, path: str, bearer: str | None = ACME, **params: object) -> tuple[int, dict]:
    query = dict(params) | ({"token": bearer} if bearer else {})
    status, body = http_get(f"{api.http_url}{path}?{urlencode(query)}", timeout_s=10)
    return status, json.loads(body) if body else {}


def test_a_track_shows_only_the_tokens_tenant_even_for_a_guard_name_both_share(api):
    for bearer, tenant in ((ACME, "acme"), (GLOBEX, "globex")):
        status, body = get(api, "/api/positions", bearer, guard="shared-guard", **{"from": "-2h"})
        assert status == 200, body
        assert len(body["positions"]) == 30 and {p["tenant"] for p in body["positions"]} == {tenant}
    status, body = get(api, "/api/positions", ACME, guard="globex-g1", **{"from": "-2h"})
    assert (status, body["positions"]) == (200, [])
    status, body = get(api, "/api/positions", NOC, guard="shared-guard", **{"from": "-2h"})
    assert {p["tenant"] for p in body["positions"]} == {"acme", "globex"}


def test_alerts_show_only_the_tokens_tenant_with_their_actions(api):
    status, body = get(api, "/api/alerts", ACME)
    assert status == 200, body
    assert len(body["alerts"]) == 6 and {a["tenant"] for a in body["alerts"]} == {"acme"}
    acted = {a["event_id"]: a["actions"] for a in body["alerts"] if a["actions"]}
    assert acted["acme-alert-1"][0]["actor"] == "op@acme" and acted["acme-alert-1"][0]["status"] == "ACKNOWLEDGED"
    _, body = get(api, "/api/alerts", ACME, status="open", kind="PANIC")
    assert sorted(a["event_id"] for a in body["alerts"]) == ["acme-alert-1", "acme-alert-3", "acme-alert-5"]
    _, body = get(api, "/api/alerts", ACME, status="resolved")
    assert [a["event_id"] for a in body["alerts"]] == ["acme-alert-2"]
    _, body = get(api, "/api/alerts", GLOBEX)
    assert {a["tenant"] for a in body["alerts"]} == {"globex"} and all(not a["actions"] for a in body["alerts"])


def test_an_alerts_notifications_show_to_its_tenant_only(api):
    status, body = get(api, "/api/alerts/acme-alert-1/notifications", ACME)
    assert status == 200, body
    sent = {(n["channel"], n["recipient"], n["tier"]): n for n in body["notifications"]}
    assert list(sent) == [("email", "ops", 1), ("webhook", "ops", 1), ("sms", "duty", 2)]
    assert sent["email", "ops", 1]["address"] == "ops@acme.example" and sent["email", "ops", 1]["status"] == "sent"
    assert sent["email", "ops", 1]["sent_ms"] >= sent["email", "ops", 1]["attempted_ms"] > NOW - 120_000
    assert sent["email", "ops", 1]["provider_response"] == "250 accepted"
    assert sent["webhook", "ops", 1]["attempts"] == 2
    held = sent["sms", "duty", 2]
    assert (held["status"], held["held_reason"], held["sent_ms"]) == ("held", "rate_limit", None) and held["held_ms"]
    # a webhook URL often holds the receiver's secret: only its scheme and host leave
    assert sent["webhook", "ops", 1]["address"] == "https://hooks.example.com/…"
    assert "s3cr3t" not in json.dumps(body)

    # globex's token: its own row under that id, nothing of acme's; and nothing of acme's own alerts
    _, body = get(api, "/api/alerts/acme-alert-1/notifications", GLOBEX)
    assert [(n["recipient"], n["status"]) for n in body["notifications"]] == [("globex-ops", "dead")]
    _, body = get(api, "/api/alerts/globex-alert-1/notifications", ACME)
    assert body == {"alert_id": "globex-alert-1", "notifications": []}
    _, body = get(api, "/api/alerts/acme-alert-1/notifications", NOC)
    assert len(body["notifications"]) == 4

    # the alert list carries them too, under the same tenant filter
    _, body = get(api, "/api/alerts", ACME)
    listed = {a["event_id"]: a["notifications"] for a in body["alerts"]}
    assert [n["recipient"] for n in listed["acme-alert-1"]] == ["ops", "ops", "duty"]
    assert all(not listed[f"acme-alert-{n}"] for n in (0, 2, 3, 4, 5))
    _, body = get(api, "/api/alerts", GLOBEX)
    listed = {a["event_id"]: a["notifications"] for a in body["alerts"]}
    assert [n["address"] for n in listed["globex-alert-1"]] == ["ops@globex.example"]
    assert sum(len(n) for n in listed.values()) == 1


def test_fence_occupants_answer_for_the_tokens_fences_only(api):
    status, body = get(api, "/api/fences/acme-hq/occupants", ACME)
    assert status == 200, body
    assert sorted(g["device_id"] for g in body["occupants"]) == ["acme-g1", "shared-guard"]
    assert {g["tenant"] for g in body["occupants"]} == {"acme"}
    status, body = get(api, "/api/fences/globex-hq/occupants", ACME)
    assert (status, body["reason"]) == (404, "unknown_fence")
    status, body = get(api, "/api/fences/globex-hq/occupants", NOC)
    assert status == 200 and {g["tenant"] for g in body["occupants"]} == {"globex"}


def test_near_finds_the_tokens_guards_within_the_radius(api):
    status, body = get(api, "/api/near", ACME, lat=52.52, lon=13.40, radius_m=5)
    assert status == 200, body
    assert [(g["tenant"], g["device_id"]) for g in body["guards"]] == [("acme", "shared-guard")]
    _, body = get(api, "/api/near", ACME, lat=52.52, lon=13.40, radius_m=50)
    assert sorted(g["device_id"] for g in body["guards"]) == ["acme-g1", "shared-guard"]
    assert body["guards"][0]["distance_m"] < body["guards"][1]["distance_m"]
    _, body = get(api, "/api/near", NOC, lat=52.52, lon=13.40, radius_m=50)
    assert len(body["guards"]) == 4


@pytest.mark.parametrize(("path", "params", "reason"), [
    ("/api/positions", {}, "missing_guard"),
    ("/api/positions", {"guard": "g 1"}, "bad_guard"),
    ("/api/positions", {"guard": "g1", "from": "yesterday"}, "bad_time"),
    ("/api/positions", {"guard": "g1", "from": "-1h", "to": "-2h"}, "bad_time_range"),
    ("/api/positions", {"guard": "g1", "limit": "0"}, "bad_limit"),
    ("/api/positions", {"guard": "g1", "cursor": "not-a-cursor"}, "bad_cursor"),
    ("/api/positions", {"guard": "g1", "max_points": "1"}, "bad_max_points"),
    ("/api/positions", {"guard": "g1", "colour": "red"}, "unknown_parameter"),
    ("/api/alerts", {"status": "closed"}, "bad_status"),
    ("/api/alerts", {"kind": "panic; drop table"}, "bad_kind"),
    ("/api/near", {"lat": "95", "lon": "0", "radius_m": "5"}, "bad_lat"),
    ("/api/near", {"lat": "1", "lon": "0", "radius_m": "nan"}, "bad_radius_m"),
    ("/api/near", {"lat": "1", "lon": "0"}, "missing_radius_m"),
    ("/api/fences/acme-hq/occupants", {"x": "1"}, "unknown_parameter"),
    ("/api/alerts/acme%20alert/notifications", {}, "bad_alert"),
    ("/api/alerts/acme-alert-1/notifications", {"channel": "sms"}, "unknown_parameter"),
])
def test_a_bad_parameter_is_a_400_with_its_reason(api, path, params, reason):
    status, body = get(api, path, ACME, **params)
    assert (status, body["reason"]) == (400, reason), body


def test_no_token_is_a_401_and_the_description_is_open(api):
    status, body = get(api, "/api/alerts", None)
    assert (status, body["reason"]) == (401, "missing_token")
    status, body = get(api, "/api/openapi.json", None)
    assert status == 200 and set(body["paths"]) == {"/api/positions", "/api/alerts", "/api/alerts/{id}/notifications",
                                                    "/api/fences/{id}/occupants", "/api/near"}


def test_pages_return_every_row_once_while_rows_are_added(api, history_db):
    guard = f"pager-{uuid.uuid4().hex[:6]}"
    base = NOW - 600_000
    original = [fix("acme", guard, n, ts_ms=base + (n // 3) * 1000) for n in range(120)]  # ties on ts too
    write(history_db, LOW, GUARD_POSITION, original)
    seen: list[str] = []
    cursor = None
    for page in range(100):
        params = {"guard": guard, "from": str(base - 1000), "limit": 17} | ({"cursor": cursor} if cursor else {})
        status, body = get(api, "/api/positions", ACME, **params)
        assert status == 200, body
        seen += [p["event_id"] for p in body["positions"]]
        # rows land before and after the page just read, some on the very same instant
        write(history_db, LOW, GUARD_POSITION, [fix("acme", guard, 1000 + page, ts_ms=base + page * 700),
                                                 fix("acme", guard, 2000 + page, ts_ms=base + 500_000 + page)])
        cursor = body["next"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen))
    assert {r["event_id"] for r in original} <= set(seen)


def test_a_simplified_track_keeps_the_ends_and_the_cap(api, history_db):
    guard = f"walker-{uuid.uuid4().hex[:6]}"
    base = NOW - 1_200_000
    walk = [fix("acme", guard, n, lat=52.5 + n * 1e-5, lon=13.4 + (n % 10) * 1e-5, ts_ms=base + n * 1000)
            for n in range(1000)]
    write(history_db, LOW, GUARD_POSITION, walk)
    status, body = get(api, "/api/positions", ACME, guard=guard, max_points=50, **{"from": str(base)})
    assert status == 200, body
    assert body["simplified"] and body["source_points"] == 1000 and 2 <= len(body["points"]) <= 50
    assert body["points"][0]["ts_ms"] == base and body["points"][-1]["ts_ms"] == base + 999_000
