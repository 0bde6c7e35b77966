"""The notifier's shell: one planner thread and one sender thread per configured channel.

The **planner** reads ``events.critical`` and ``alerts.actions``, and the escalation timers
that are due; for each it loads the alert's row, calls :func:`decide` and writes the result
(escalation row, new notification rows, cancellations) in one transaction. Kafka offsets are
committed only after that transaction (and any dead letter) is durable, so a kill at any point
replays records whose rows either exist (nothing inserted twice) or do not (planned again).

A **sender** takes its channel's due rows one at a time: the rate limit may hold one (recorded,
sent when the hold ends); otherwise it is claimed (``sending``, committed), handed to the
provider, and marked ``sent``, or ``retry`` with a doubling wait, or after the last attempt
``dead`` with a dead letter on ``dlq.notify``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from guardstream.catalog import TOPICS
from guardstream.errors import InputError, SchemaError, UnavailableError
from guardstream.kafka import produce, take_batch
from guardstream.notifier import store
from guardstream.notifier.channels import SendFailed, Sender
from guardstream.notifier.decide import (HELD_RATE, Action, Alert, Decision, Due, GiveUp, NewAlert,
                                         after_failure, decide, rate_hold)
from guardstream.notifier.messages import Notice
from guardstream.notifier.metrics import NotifierMetrics
from guardstream.notifier.rules import RuleSet
from guardstream.records import ALERT_ACTION, DEAD_LETTER, DEVICE_ALERT
from guardstream.schemas.codec import Codec
from guardstream.schemas.dead_letters import Source, dead_letter
from guardstream.settings import Settings
from guardstream.topic_end import probe_end_offsets

log = logging.getLogger(__name__)

STAGE = "notify"
_BATCH = 200
_POLL_S = 0.1
_IDLE_S = 0.25  # a sender with nothing due looks again after this (or when the planner wakes it)
_STALE_CHECK_S = 5.0


@dataclass
class Shared:
    settings: Settings
    rules: RuleSet
    senders: Mapping[str, Sender]
    producer: Producer
    codec: Codec
    metrics: NotifierMetrics
    stop: threading.Event
    wake: dict[str, threading.Event] = field(default_factory=dict)
    database_answered: bool = False
    assigned: bool = False

    @property
    def dashboard_url(self) -> str:
        s = self.settings
        return s.notify_dashboard_url or f"http://{s.gateway_host}:{s.gateway_port}/"

    def send_dead_letter(self, reason: str, detail: str, source: Source, payload: bytes, kind: str) -> None:
        """Hand one letter to ``dlq.notify`` and wait for the broker's acknowledgement."""
        record, headers = dead_letter(STAGE, reason, detail, source, payload, int(time.time() * 1000))
        produce(self.producer, TOPICS.dlq_notify.name, self.codec.encode(DEAD_LETTER, record), source.key,
                headers=headers)
        if self.producer.flush(30):
            raise UnavailableError(f"{TOPICS.dlq_notify.name}: a dead letter was not acknowledged")
        self.metrics.dead_letters.labels(kind, reason).inc()
        log.warning("dead letter (%s): %s", reason, detail)


# -- the planner ----------------------------------------------------------------------------------

class Planner:
    def __init__(self, shared: Shared, consumer: Consumer) -> None:
        self.shared = shared
        self.consumer = consumer
        self.conn: Any = None
        self.partitions: list[TopicPartition] = []
        self.start_ends: dict[tuple[str, int], int] | None = None  # where the topics ended when we joined
        self.caught_up = False

    def run(self) -> None:
        self.conn = self._connect()
        if self.conn is None:
            self.consumer.close()
            return
        try:
            self.consumer.subscribe([TOPICS.events_critical.name, TOPICS.alerts_actions.name],
                                    on_assign=self._on_assign, on_revoke=self._on_revoke)
            while not self.shared.stop.is_set():
                self.step()
        finally:
            self.consumer.close()
            if self.conn is not None:
                self.conn.close()

    def _connect(self) -> Any:
        """A connection once PostgreSQL answers; None when told to stop first."""
        while not self.shared.stop.is_set():
            try:
                conn = store.connect(self.shared.settings.database_url)
                self.shared.database_answered = True
                return conn
            except UnavailableError as exc:
                log.warning("planner: %s", exc.detail)
                self.shared.stop.wait(1.0)
        return None

    def step(self) -> None:
        messages = take_batch(self.consumer, _BATCH, _POLL_S)
        if messages:
            self._plan(messages)
        if self.caught_up or self._caught_up():
            self._escalate_due()

    def _caught_up(self) -> bool:
        """Whether the records that were there when we joined are read. Until then no timer fires: an
        acknowledgement given while the notifier was away is read before the escalation it stops."""
        if not self.shared.assigned:
            return False
        if self.start_ends is None:
            self.start_ends = {tp: end for tp, (low, end) in probe_end_offsets(
                self.shared.settings, [(p.topic, p.partition) for p in self.partitions]).items() if end > low}
        positions = {(p.topic, p.partition): p.offset for p in self.consumer.position(self.partitions)}
        committed = {(p.topic, p.partition): p.offset for p in self.consumer.committed(self.partitions, timeout=5)}
        self.caught_up = all(max(positions.get(tp, -1), committed.get(tp, -1)) >= end
                             for tp, end in self.start_ends.items())
        return self.caught_up

    def _plan(self, messages: list[Message]) -> None:
        offsets: dict[tuple[str, int], int] = {}
        refused: list[tuple[Message, str, str]] = []
        with store.transaction(self.conn) as conn:
            now = store.now_ms(conn)
            for message in messages:
                if message.error() is not None:
                    self._consume_error(message.error())
                    continue
                offsets[(message.topic(), message.partition())] = message.offset() + 1
                event = self._event(message, refused)
                if event is not None:
                    self._apply(conn, event, now)
        for message, reason, detail in refused:
            source = Source(message.topic(), message.partition(), message.offset(), message.key())
            self.shared.send_dead_letter(reason, detail, source, message.value() or b"", message.topic())
        self._wake_senders()
        if offsets:
            try:
                self.consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                                     asynchronous=False)
            except KafkaException as exc:  # the rows are durable; a replay of these records inserts nothing
                log.warning("planner: offset commit failed, the batch will be read again: %s", exc)

    def _event(self, message: Message, refused: list[tuple[Message, str, str]]) -> NewAlert | Action | None:
        if message.value() is None:
            return None
        try:
            name, record = self.shared.codec.decode(message.value())
        except (InputError, SchemaError) as exc:
            refused.append((message, exc.reason, exc.detail))
            return None
        if name == DEVICE_ALERT:
            return NewAlert(Alert.of(record, self.shared.rules.sites))
        if name == ALERT_ACTION:
            return Action(record["alert_event_id"], record["tenant"], record["action"])
        self.shared.metrics.records.labels("not_an_alert").inc()  # geofence transitions also travel there
        return None

    def _apply(self, conn: Any, event: NewAlert | Action | Due, now: int) -> None:
        alert_id = event.alert.event_id if isinstance(event, NewAlert) else event.alert_id
        decision = decide(event, store.load_tracked(conn, alert_id), self.shared.rules, now,
                          frozenset(self.shared.senders))
        inserted = store.save(conn, decision)
        self._count(decision, inserted, "alert" if isinstance(event, NewAlert) else "action")

    def _count(self, decision: Decision, inserted: int, what: str) -> None:
        m = self.shared.metrics
        m.records.labels(decision.ignored or what).inc()
        if not inserted:
            return
        for p in decision.notify:
            if decision.escalated:
                m.escalated.labels(p.channel).inc()
            if p.status == "held":
                m.held.labels(p.channel, p.held_reason or "").inc()
            elif p.status == "skipped":
                m.skipped.labels(p.channel).inc()

    def _escalate_due(self) -> None:
        with store.transaction(self.conn) as conn:
            now = store.now_ms(conn)
            due = store.due_escalations(conn, now)
            for tracked in due:
                decision = decide(Due(tracked.alert_id), tracked, self.shared.rules, now,
                                  frozenset(self.shared.senders))
                self._count(decision, store.save(conn, decision), "escalation_due")
        if due:
            self._wake_senders()

    def _wake_senders(self) -> None:
        for event in self.shared.wake.values():
            event.set()

    def _consume_error(self, error: KafkaError) -> None:
        if error.fatal():
            raise UnavailableError(f"notifier consumer: fatal Kafka error: {error.str()}")
        log.warning("notifier consumer: %s", error.str())

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.partitions = list(partitions)
        self.start_ends, self.caught_up = None, False
        self.shared.assigned = True

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.shared.assigned = False


# -- a sender ---------------------------------------------------------------------------------------

class ChannelSender:
    def __init__(self, shared: Shared, channel: str) -> None:
        self.shared = shared
        self.channel = channel
        self.send = shared.senders[channel]
        self.wake = shared.wake.setdefault(channel, threading.Event())
        self._stale_checked = 0.0

    def run(self) -> None:
        conn = None
        while not self.shared.stop.is_set():
            try:
                conn = conn or store.connect(self.shared.settings.database_url)
                with store.database_errors():
                    stepped = self.step(conn)
                if not stepped:
                    self.wake.wait(_IDLE_S)
                    self.wake.clear()
            except UnavailableError as exc:
                log.warning("%s sender: %s", self.channel, exc.detail)
                if conn is not None:
                    conn.close()
                conn = None
                self.shared.stop.wait(1.0)
        if conn is not None:
            conn.close()

    def step(self, conn: Any) -> bool:
        """Send (or hold) one due notification; False when none is due."""
        if time.monotonic() - self._stale_checked > _STALE_CHECK_S:
            self._stale_checked = time.monotonic()
            if store.release_stale(conn, self.channel, 2 * self.shared.settings.notify_send_timeout_s + 1):
                log.warning("%s sender: sends interrupted by a stop are due again", self.channel)
        limit = self.shared.rules.rate_limits.get(self.channel)
        if limit is None or not limit.count:
            row = store.claim_next_due(conn, self.channel)
            if row is None:
                return False
            attempt = row.attempts
        else:
            with store.transaction(conn):
                row = store.next_due(conn, self.channel)
                if row is None:
                    return False
                claims = store.recent_claims_ms(conn, row.tenant, self.channel, limit.window_ms)
                until = rate_hold(claims, limit, store.now_ms(conn))
                if until is not None:
                    store.hold(conn, row.id, HELD_RATE, until)
                    self.shared.metrics.held.labels(self.channel, HELD_RATE).inc()
                    return True
                attempt = store.claim(conn, row.id)
        notice = Notice(row.alert, row.channel, row.recipient, row.address, row.tier, self.shared.dashboard_url)
        started = time.monotonic()
        try:
            response = self.send(notice)
        except SendFailed as exc:
            self._failed(conn, row, attempt, exc)
        else:
            self.shared.metrics.send_seconds.labels(self.channel).observe(time.monotonic() - started)
            store.mark_sent(conn, row.id, response[:500])
            self.shared.metrics.sent.labels(self.channel).inc()
        return True

    def _failed(self, conn: Any, row: store.Claimable, attempt: int, exc: SendFailed) -> None:
        s = self.shared.settings
        self.shared.metrics.failed.labels(self.channel).inc()
        outcome = after_failure(attempt, s.notify_max_attempts, exc.permanent, int(time.time() * 1000),
                                s.notify_retry_base_ms, s.notify_retry_max_ms)
        if isinstance(outcome, GiveUp):
            payload = json.dumps({"alert_id": row.alert_id, "channel": row.channel, "recipient": row.recipient,
                                  "tier": row.tier, "attempts": attempt, "alert": row.alert.to_json()}).encode()
            self.shared.send_dead_letter(outcome.reason, f"{row.channel} to {row.recipient} (tier {row.tier}) after "
                                         f"{attempt} attempts: {exc.detail}",
                                         Source(TOPICS.events_critical.name, key=row.alert_id.encode()), payload,
                                         self.channel)
            store.mark_dead(conn, row.id, exc.detail)
        else:
            log.info("%s to %s failed (attempt %d), retried: %s", row.channel, row.recipient, attempt, exc.detail)
            store.mark_retry(conn, row.id, exc.detail, outcome.at_ms)
