"""The notifier's PostgreSQL tables (``infra/migrations/0003_notifications.sql``): escalation rows
and the notifications log, which is also the idempotency key.

A notification row is inserted (``ON CONFLICT DO NOTHING`` on alert, channel, recipient, tier)
in the transaction that moves its alert's escalation row, before the Kafka offset is
committed; a sender claims it (``sending``, committed) before it calls the provider and marks
it ``sent`` after. A replay of the topic finds the rows there and inserts nothing; a claim
that never finished (the process died during the send) is sent again once it is stale.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from guardstream.errors import UnavailableError
from guardstream.notifier.decide import Alert, Decision, Tracked
from guardstream.notifier.escalation import State

UNSENT = ("pending", "held", "retry")


def connect(url: str) -> psycopg.Connection[dict[str, Any]]:
    try:
        return psycopg.connect(url, row_factory=dict_row, connect_timeout=5, autocommit=True)
    except psycopg.OperationalError as exc:
        raise UnavailableError(f"PostgreSQL: {exc}", reason="database_unavailable") from exc


@contextmanager
def transaction(conn: psycopg.Connection[Any]) -> Iterator[psycopg.Connection[Any]]:
    """One transaction; a lost connection is :class:`UnavailableError` (nothing of it was committed)."""
    try:
        with conn.transaction():
            yield conn
    except psycopg.OperationalError as exc:
        raise UnavailableError(f"PostgreSQL: {exc}", reason="database_unavailable") from exc


@contextmanager
def database_errors() -> Iterator[None]:
    """A lost connection inside as :class:`UnavailableError`, for statements run on their own (autocommit)."""
    try:
        yield
    except psycopg.OperationalError as exc:
        raise UnavailableError(f"PostgreSQL: {exc}", reason="database_unavailable") from exc


def _tracked(row: dict[str, Any]) -> Tracked:
    alert = Alert.from_json(row["alert"]) if row["alert"] else None
    return Tracked(row["alert_id"], row["tenant"], State(row["state"]), row["tier"], row["rule"], row["due_at_ms"],
                   alert, row["stopped_by"])


def load_tracked(conn: psycopg.Connection[Any], alert_id: str) -> Tracked | None:
    row = conn.execute("SELECT * FROM notify_escalations WHERE alert_id = %s FOR UPDATE", (alert_id,)).fetchone()
    return _tracked(row) if row else None


def due_escalations(conn: psycopg.Connection[Any], now_ms: int, limit: int = 100) -> list[Tracked]:
    rows = conn.execute("SELECT * FROM notify_escalations WHERE state = 'NOTIFYING' AND due_at_ms <= %s "
                        "ORDER BY due_at_ms LIMIT %s FOR UPDATE SKIP LOCKED", (now_ms, limit)).fetchall()
    return [_tracked(row) for row in rows]


def save(conn: psycopg.Connection[Any], decision: Decision) -> int:
    """Write ``decision``; returns how many notification rows it inserted (a replay inserts none)."""
    t = decision.tracked
    if t is not None:
        conn.execute(
            "INSERT INTO notify_escalations (alert_id, tenant, rule, state, tier, due_at_ms, alert, stopped_by) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (alert_id) DO UPDATE SET tenant = EXCLUDED.tenant, "
            "rule = EXCLUDED.rule, state = EXCLUDED.state, tier = EXCLUDED.tier, due_at_ms = EXCLUDED.due_at_ms, "
            "alert = EXCLUDED.alert, stopped_by = EXCLUDED.stopped_by, updated_at = now()",
            (t.alert_id, t.tenant, t.rule, str(t.state), t.tier, t.due_at_ms,
             Jsonb(t.alert.to_json()) if t.alert else None, t.stopped_by))
    inserted = 0
    for p in decision.notify:
        cursor = conn.execute(
            "INSERT INTO notifications (alert_id, tenant, channel, recipient, address, tier, status, not_before, "
            "held_reason, held_at) VALUES (%s, %s, %s, %s, %s, %s, %s, to_timestamp(%s / 1000.0), %s, "
            "CASE WHEN %s = 'held' THEN now() END) ON CONFLICT (alert_id, channel, recipient, tier) DO NOTHING",
            (p.alert_id, p.tenant, p.channel, p.recipient, p.address, p.tier, p.status, p.not_before_ms,
             p.held_reason, p.status))
        inserted += cursor.rowcount
    if decision.cancel_unsent and t is not None:
        conn.execute("UPDATE notifications SET status = 'cancelled', provider_response = %s "
                     "WHERE alert_id = %s AND status = ANY(%s)", (f"stopped by {t.stopped_by}", t.alert_id,
                                                                  list(UNSENT)))
    return inserted


# -- senders ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Claimable:
    id: int
    alert_id: str
    tenant: str
    channel: str
    recipient: str
    address: str
    tier: int
    attempts: int
    alert: Alert


_CLAIMABLE = "n.id, n.alert_id, n.tenant, n.channel, n.recipient, n.address, n.tier, n.attempts, e.alert"


def _claimable(row: dict[str, Any]) -> Claimable:
    return Claimable(row["id"], row["alert_id"], row["tenant"], row["channel"], row["recipient"], row["address"],
                     row["tier"], row["attempts"], Alert.from_json(row["alert"]))


def next_due(conn: psycopg.Connection[Any], channel: str) -> Claimable | None:
    """The channel's next notification due now, locked for this transaction (others skip it)."""
    row = conn.execute(
        f"SELECT {_CLAIMABLE} FROM notifications n JOIN notify_escalations e ON e.alert_id = n.alert_id "
        "WHERE n.channel = %s AND n.status = ANY(%s) AND n.not_before <= now() "
        "ORDER BY n.not_before, n.id LIMIT 1 FOR UPDATE OF n SKIP LOCKED", (channel, list(UNSENT))).fetchone()
    return _claimable(row) if row else None


def claim_next_due(conn: psycopg.Connection[Any], channel: str) -> Claimable | None:
    """Claim the channel's next due notification (``sending``, attempt counted) in one statement, one round
    trip: for a channel without a rate limit, nothing needs deciding between the look and the claim."""
    row = conn.execute(
        "WITH next AS (SELECT id FROM notifications WHERE channel = %s AND status = ANY(%s) AND not_before <= now() "
        "ORDER BY not_before, id LIMIT 1 FOR UPDATE SKIP LOCKED) "
        "UPDATE notifications n SET status = 'sending', attempts = n.attempts + 1, claimed_at = clock_timestamp() "
        f"FROM next, notify_escalations e WHERE n.id = next.id AND e.alert_id = n.alert_id RETURNING {_CLAIMABLE}",
        (channel, list(UNSENT))).fetchone()
    return _claimable(row) if row else None


def recent_claims_ms(conn: psycopg.Connection[Any], tenant: str, channel: str, window_ms: int) -> list[int]:
    rows = conn.execute(
        "SELECT (extract(epoch FROM claimed_at) * 1000)::bigint AS ms FROM notifications "
        "WHERE tenant = %s AND channel = %s AND status IN ('sending', 'sent') "
        "AND claimed_at > now() - make_interval(secs => %s)", (tenant, channel, window_ms / 1000)).fetchall()
    return [row["ms"] for row in rows]


def now_ms(conn: psycopg.Connection[Any]) -> int:
    """The database's clock: every time in these tables is the database's, so rate windows agree."""
    return conn.execute("SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint AS ms").fetchone()["ms"]


def hold(conn: psycopg.Connection[Any], row_id: int, reason: str, until_ms: int) -> None:
    conn.execute("UPDATE notifications SET status = 'held', held_reason = %s, held_at = coalesce(held_at, now()), "
                 "not_before = to_timestamp(%s / 1000.0) WHERE id = %s", (reason, until_ms, row_id))


def claim(conn: psycopg.Connection[Any], row_id: int) -> int:
    """Mark the row as being sent; returns its attempt number."""
    row = conn.execute("UPDATE notifications SET status = 'sending', attempts = attempts + 1, "
                       "claimed_at = clock_timestamp() WHERE id = %s RETURNING attempts", (row_id,)).fetchone()
    return row["attempts"]


def mark_sent(conn: psycopg.Connection[Any], row_id: int, response: str) -> None:
    conn.execute("UPDATE notifications SET status = 'sent', sent_at = clock_timestamp(), provider_response = %s "
                 "WHERE id = %s", (response, row_id))


def mark_retry(conn: psycopg.Connection[Any], row_id: int, response: str, at_ms: int) -> None:
    conn.execute("UPDATE notifications SET status = 'retry', provider_response = %s, "
                 "not_before = to_timestamp(%s / 1000.0) WHERE id = %s", (response, at_ms, row_id))


def mark_dead(conn: psycopg.Connection[Any], row_id: int, response: str) -> None:
    conn.execute("UPDATE notifications SET status = 'dead', provider_response = %s WHERE id = %s",
                 (response, row_id))


def release_stale(conn: psycopg.Connection[Any], channel: str, older_than_s: float) -> int:
    """Sends begun longer ago than ``older_than_s`` that never finished (their process died): due again."""
    cursor = conn.execute(
        "UPDATE notifications SET status = 'retry', not_before = now(), "
        "provider_response = 'send interrupted (the notifier stopped during it); sent again' "
        "WHERE channel = %s AND status = 'sending' AND claimed_at < now() - make_interval(secs => %s)",
        (channel, older_than_s))
    return cursor.rowcount


# -- Web Push subscriptions ---------------------------------------------------------------------------

@dataclass(frozen=True)
class PushBook:
    """The browsers each recipient subscribed (table push_subscriptions); a connection per call, so
    every sender thread may use it."""

    database_url: str

    def subscriptions(self, recipient: str) -> list[dict[str, Any]]:
        """Each as the browser's PushSubscription JSON: ``{"endpoint": ..., "keys": {"p256dh": ..., "auth": ...}}``."""
        with connect(self.database_url) as conn, database_errors():
            rows = conn.execute("SELECT endpoint, p256dh, auth FROM push_subscriptions WHERE recipient = %s "
                                "ORDER BY created_at", (recipient,)).fetchall()
        return [{"endpoint": r["endpoint"], "keys": {"p256dh": r["p256dh"], "auth": r["auth"]}} for r in rows]

    def forget(self, endpoint: str) -> None:
        with connect(self.database_url) as conn, database_errors():
            conn.execute("DELETE FROM push_subscriptions WHERE endpoint = %s", (endpoint,))

    def subscribe(self, recipient: str, subscription: dict[str, Any]) -> None:
        with connect(self.database_url) as conn, database_errors():
            conn.execute("INSERT INTO push_subscriptions (endpoint, recipient, p256dh, auth) VALUES (%s, %s, %s, %s) "
                         "ON CONFLICT (endpoint) DO UPDATE SET recipient = EXCLUDED.recipient, "
                         "p256dh = EXCLUDED.p256dh, auth = EXCLUDED.auth",
                         (subscription["endpoint"], recipient, subscription["keys"]["p256dh"],
                          subscription["keys"]["auth"]))
