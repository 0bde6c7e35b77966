import psycopg
import pytest

from guardstream.errors import GuardstreamError
from guardstream.infra.migrate import Migration, load_migrations, migrate, pending

TABLES = {"device_telemetry", "guard_positions", "sensor_readings", "system_health", "device_alerts",
          "geofence_events", "geofences", "dead_letters", "schema_migrations"}


def test_migrate_creates_every_table_once(database_url):
    applied = migrate(database_url)
    assert [m.version for m in applied] == [m.version for m in load_migrations()]
    assert migrate(database_url) == []
    with psycopg.connect(database_url) as conn:
        names = {r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")}
        assert TABLES <= names
        for table in TABLES - {"schema_migrations", "dead_letters", "geofences"}:
            columns = {r[0] for r in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = %s", (table,))}
            assert {"tenant", "event_id", "device_id", "ts"} <= columns, table


def test_a_failing_migration_leaves_nothing_half_done(database_url):
    bad = [Migration(1, "good", "CREATE TABLE a (x int);"), Migration(2, "bad", "CREATE TABLE b (x int); SELEC 1;")]
    with pytest.raises(psycopg.errors.SyntaxError):
        migrate(database_url, bad)
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT version FROM schema_migrations").fetchall() == [(1,)]
        assert conn.execute("SELECT to_regclass('b')").fetchone() == (None,)


def test_an_applied_migration_that_was_edited_stops_the_run():
    m = Migration(1, "x", "SELECT 1;")
    assert pending([m], {}) == [m]
    assert pending([m], {1: m.checksum}) == []
    with pytest.raises(GuardstreamError) as info:
        pending([m], {1: "another"})
    assert info.value.reason == "migration_changed"
