"""The gateway's WebSocket protocol: small JSON messages both ways. Pure.

Client -> server messages parse into :data:`ClientOp` values (or
:class:`ProtocolError` with a reason code); server -> client messages are
rendered here, once per event and channel, and shared by every client that
gets them. The close codes of every refusal live in :data:`CLOSE_CODES` and
the README's "WebSocket protocol" section lists them.
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from dataclasses import dataclass
from typing import Any

import msgspec

from guardstream import records
from guardstream.errors import InputError
from guardstream.gateway.auth import Principal
from guardstream.gateway.channels import parse_channel
from guardstream.records import ACTION_STATUS

TP = tuple[str, int]  # (topic, partition)
MAX_CHANNELS = 200
MAX_NOTE = 1000
ACTIONS = tuple(ACTION_STATUS)

# Why a connection is closed: reason -> WebSocket close code.
CLOSE_CODES: Mapping[str, int] = {
    "missing_token": 4401,
    "malformed_token": 4401,
    "bad_algorithm": 4401,
    "bad_signature": 4401,
    "wrong_audience": 4401,
    "wrong_issuer": 4401,
    "missing_claim": 4401,
    "bad_claims": 4401,
    "not_yet_valid": 4401,
    "issued_in_future": 4401,
    "lifetime_too_long": 4401,
    "token_expired": 4408,
    "forbidden_origin": 4403,
    "forbidden_channel": 4403,
    "rate_limited": 4429,
    "slow_consumer": 1013,
    "message_too_big": 1009,
    "replay_failed": 1011,
    "shutting_down": 1001,
}
# Errors that answer one message and leave the connection open: reason -> code in the error message.
ERROR_CODES: Mapping[str, int] = {
    "bad_json": 4400,
    "bad_message": 4400,
    "unknown_op": 4400,
    "bad_channel": 4400,
    "bad_resume": 4400,
    "bad_snapshot": 4400,
    "bad_action": 4400,
    "forbidden_action": 4403,
    "unknown_alert": 4404,
    "unavailable": 4503,
}


class ProtocolError(InputError):
    reason = "bad_message"


@dataclass(frozen=True)
class Subscribe:
    channels: tuple[str, ...]
    resume: Mapping[TP, int] | None = None  # last offset seen per topic-partition
    snapshot: bool = False  # the channels' present state first (snapshot.py), then live from its offsets


@dataclass(frozen=True)
class Unsubscribe:
    channels: tuple[str, ...]


@dataclass(frozen=True)
class Ack:
    alert_event_id: str
    action: str
    note: str | None = None


@dataclass(frozen=True)
class Ping:
    pass


ClientOp = Subscribe | Unsubscribe | Ack | Ping


def parse_client_message(text: str | bytes, topics: Set[str]) -> ClientOp:
    """One client message; ``topics`` are those a resume may name."""
    try:
        message = msgspec.json.decode(text)
    except msgspec.DecodeError as exc:
        raise ProtocolError(f"not JSON: {exc}", reason="bad_json") from exc
    if not isinstance(message, dict):
        raise ProtocolError("a message is a JSON object", reason="bad_message")
    op = message.get("op")
    if op == "ping":
        return Ping()
    if op in ("subscribe", "unsubscribe"):
        channels = _channels(message.get("channels"))
        if op == "unsubscribe":
            return Unsubscribe(channels)
        resume, snapshot = message.get("resume"), message.get("snapshot", False)
        if not isinstance(snapshot, bool):
            raise ProtocolError("snapshot: true or false", reason="bad_snapshot")
        if snapshot and resume is not None:
            raise ProtocolError("snapshot and resume exclude each other: a snapshot states its own offsets",
                                reason="bad_snapshot")
        return Subscribe(channels, None if resume is None else parse_resume(resume, topics), snapshot)
    if op == "ack":
        return _ack(message)
    raise ProtocolError(f"unknown op {op!r}: subscribe, unsubscribe, ack or ping", reason="unknown_op")


def _channels(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or len(value) > MAX_CHANNELS:
        raise ProtocolError(f"channels: a list of 1 to {MAX_CHANNELS} channel names", reason="bad_message")
    for name in value:
        try:
            parse_channel(name)
        except InputError as exc:
            raise ProtocolError(exc.detail, reason="bad_channel") from exc
    return tuple(dict.fromkeys(value))


def parse_resume(value: object, topics: Set[str]) -> dict[TP, int]:
    """``{"<topic>:<partition>": offset, ...}`` -> {(topic, partition): offset}."""
    if not isinstance(value, dict):
        raise ProtocolError("resume: an object of \"topic:partition\": last offset seen", reason="bad_resume")
    out: dict[TP, int] = {}
    for key, offset in value.items():
        topic, _, partition = str(key).rpartition(":")
        if topic not in topics or not partition.isdigit() or not _offset(offset):
            raise ProtocolError(f"resume: {key!r}: {offset!r} is not \"topic:partition\": offset",
                                reason="bad_resume")
        out[(topic, int(partition))] = offset
    return out


def _offset(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= -1


def _ack(message: Mapping[str, Any]) -> Ack:
    alert, action, note = message.get("alert_event_id"), message.get("action"), message.get("note")
    if not isinstance(alert, str) or not 0 < len(alert) <= 256:
        raise ProtocolError("ack: alert_event_id must be a non-empty string", reason="bad_action")
    if action not in ACTIONS:
        raise ProtocolError(f"ack: action must be one of {', '.join(ACTIONS)}", reason="bad_action")
    if note is not None and (not isinstance(note, str) or len(note) > MAX_NOTE):
        raise ProtocolError(f"ack: note must be text of at most {MAX_NOTE} characters", reason="bad_action")
    return Ack(alert, action, note)


def alert_action(principal: Principal, ack: Ack, tenant: str, action_id: str, now_ms: int) -> records.AlertAction:
    """The guardstream.AlertAction record an acknowledgement writes."""
    return records.alert_action(action_id=action_id, tenant=tenant, alert_event_id=ack.alert_event_id,
                                action=ack.action, actor=principal.subject, ts_ms=now_ms, note=ack.note)


# -- server -> client ------------------------------------------------------------------

_encode = msgspec.json.Encoder().encode


def render(message: Mapping[str, Any]) -> str:
    return _encode(message).decode()


def tp_key(tp: TP) -> str:
    return f"{tp[0]}:{tp[1]}"


def event_message(channel: str, topic: str, partition: int, offset: int, schema: str,
                  data: Mapping[str, Any]) -> str:
    return render({"type": "event", "channel": channel, "topic": topic, "partition": partition, "offset": offset,
                   "schema": schema, "data": data})


def alert_status_message(channel: str, topic: str, partition: int, offset: int, action: Mapping[str, Any]) -> str:
    return render({"type": "alert_status", "channel": channel, "topic": topic, "partition": partition,
                   "offset": offset, "tenant": action["tenant"], "alert_event_id": action["alert_event_id"],
                   "status": ACTION_STATUS.get(action["action"], action["action"]), "action": action["action"],
                   "action_id": action["action_id"], "actor": action["actor"], "ts_ms": action["ts_ms"],
                   "note": action.get("note")})


def hello_message(principal: Principal) -> str:
    return render({"type": "hello", "sub": principal.subject, "tenants": sorted(principal.tenants),
                   "roles": sorted(principal.roles), "expires_at": int(principal.expires_at)})


def subscribed_message(channels: Set[str], positions: Mapping[TP, int]) -> str:
    """``positions``: per topic-partition, the offset of the last event before the subscription took effect."""
    return render({"type": "subscribed", "channels": sorted(channels),
                   "positions": {tp_key(tp): offset for tp, offset in sorted(positions.items())}})


def unsubscribed_message(channels: Set[str]) -> str:
    return render({"type": "unsubscribed", "channels": sorted(channels)})


def live_message(replayed: int, gaps: Mapping[TP, tuple[int, int]]) -> str:
    return render({"type": "live", "replayed": replayed,
                   "gaps": {tp_key(tp): list(span) for tp, span in sorted(gaps.items())}})


def acked_message(action: Mapping[str, Any]) -> str:
    return render({"type": "acked", "alert_event_id": action["alert_event_id"], "action": action["action"],
                   "action_id": action["action_id"]})


def error_message(reason: str, detail: str) -> str:
    return render({"type": "error", "code": ERROR_CODES.get(reason, 4400), "reason": reason, "detail": detail})


PONG = render({"type": "pong"})
