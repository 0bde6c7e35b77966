"""Versioned SQL migrations: ``infra/migrations/NNNN_name.sql``, applied in order.

Applied versions are recorded in ``schema_migrations`` with a checksum; a file
edited after it was applied stops the run (write a new migration instead). A
PostgreSQL advisory lock keeps two migrators from racing.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import psycopg

from guardstream.errors import GuardstreamError, UnavailableError

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_LOCK_ID = 0x6775617264  # "guard"


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    out = []
    for path in sorted(directory.glob("*.sql")):
        match = _NAME.match(path.name)
        if not match:
            raise GuardstreamError(f"{path.name}: migration files are named NNNN_name.sql", reason="bad_migration")
        out.append(Migration(int(match[1]), match[2], path.read_text()))
    versions = [m.version for m in out]
    if len(set(versions)) != len(versions):
        raise GuardstreamError("two migrations share a version number", reason="bad_migration")
    return out


def pending(migrations: list[Migration], applied: dict[int, str]) -> list[Migration]:
    """Migrations not applied yet; raises when an applied one was edited since."""
    for m in migrations:
        if m.version in applied and applied[m.version] != m.checksum:
            raise GuardstreamError(f"migration {m.version:04d}_{m.name} was edited after it was applied",
                                   reason="migration_changed")
    return [m for m in migrations if m.version not in applied]


def migrate(database_url: str, migrations: list[Migration] | None = None) -> list[Migration]:
    """Apply what is pending; returns what was applied (empty when up to date)."""
    migrations = load_migrations() if migrations is None else migrations
    try:
        conn = psycopg.connect(database_url, autocommit=True)
    except psycopg.OperationalError as exc:
        raise UnavailableError(f"PostgreSQL unreachable: {exc}") from exc
    with conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_ID,))
        conn.execute("""CREATE TABLE IF NOT EXISTS schema_migrations (
                            version integer PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,
                            applied_at timestamptz NOT NULL DEFAULT now())""")
        applied = dict(conn.execute("SELECT version, checksum FROM schema_migrations").fetchall())
        todo = pending(migrations, applied)
        for m in todo:
            with conn.transaction():
                conn.execute(m.sql)
                conn.execute("INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                             (m.version, m.name, m.checksum))
        conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_ID,))
    return todo
