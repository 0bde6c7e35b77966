"""The devices table against a real PostgreSQL: the registry's latest version per device, never rolled back."""

from __future__ import annotations

import psycopg

from guardstream.catalog import TOPICS
from guardstream.infra.migrate import migrate
from guardstream.records import DEVICE, device
from guardstream.sinks.rows import DeviceTombstone, DeviceUpsert, latest_devices, plan_write
from guardstream.sinks.writer import BatchWriter

T0 = 1_795_000_000_000
TOPIC = TOPICS.devices.name


def _write(offset: int, device_id: str, **fields) -> tuple:
    record = None if fields.get("tombstone") else device(
        device_id=device_id, tenant=fields.get("tenant", "acme"), kind=fields.get("kind", "GUARD"),
        site_id=fields.get("site_id"), enabled=fields.get("enabled", True), updated_ms=fields.get("at", T0 + offset))
    return (TOPIC, offset), plan_write(TOPIC, 0, offset, device_id.encode(), DEVICE if record else None, record)


def _rows(url: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT device_id, tenant, kind, site_id, enabled FROM devices ORDER BY 1").fetchall()


def test_plan_write_makes_upserts_and_tombstones_of_registry_records():
    [(_, upsert), (_, tombstone)] = [_write(1, "g1", site_id="hq"), _write(2, "g1", tombstone=True)]
    assert upsert == DeviceUpsert("g1", ("g1", "acme", "GUARD", "hq", True, T0 + 1))
    assert tombstone == DeviceTombstone("g1")
    wrong = plan_write(TOPIC, 0, 3, b"g1", "guardstream.Geofence", {"fence_id": "x"})
    assert wrong.reason == "unexpected_record"


def test_latest_devices_keeps_the_last_write_per_device_in_order_of_last_writes():
    writes = [(1, DeviceUpsert("a", ())), (2, DeviceUpsert("b", ())), (3, DeviceTombstone("a"))]
    assert latest_devices(writes) == [(2, DeviceUpsert("b", ())), (3, DeviceTombstone("a"))]


def test_devices_upsert_disable_forget_and_a_replay_never_rolls_back(database_url):
    migrate(database_url)
    writer = BatchWriter(database_url)
    try:
        writer.write([_write(0, "g1", site_id="hq"), _write(1, "s1", tenant="globex", kind="SENSOR")])
        assert _rows(database_url) == [("g1", "acme", "GUARD", "hq", True), ("s1", "globex", "SENSOR", None, True)]
        # disabled twice in one batch, the last write wins; s1 is forgotten
        writer.write([_write(2, "g1", enabled=True), _write(3, "g1", enabled=False), _write(4, "s1", tombstone=True)])
        assert _rows(database_url) == [("g1", "acme", "GUARD", None, False)]
        # a replay of the first batch (older versions) leaves the newer row alone, and brings s1 back
        result = writer.write([_write(0, "g1", site_id="hq"), _write(1, "s1", tenant="globex", kind="SENSOR")])
        assert _rows(database_url) == [("g1", "acme", "GUARD", None, False), ("s1", "globex", "SENSOR", None, True)]
        assert result.duplicates["devices"] == 1
    finally:
        writer.close()
