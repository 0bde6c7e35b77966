"""What the bridge does with one MQTT message: forward it raw, or refuse it.

Pure: an :class:`Incoming` message in, a :class:`Forward` (raw topic, key,
payload unchanged, headers) or a :class:`Divert` (why it was refused, for
``dlq.bridge``) out. The header names are documented in ``schemas/HEADERS.md``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from guardstream.connectors.mapping import Rule, match
from guardstream.errors import InputError
from guardstream.refusal import Refused

Headers = list[tuple[str, bytes]]


@dataclass(frozen=True)
class Incoming:
    topic: str | None  # None when the topic bytes were not UTF-8
    payload: bytes
    qos: int
    retain: bool
    received_ms: int
    content_type: str | None = None
    user_properties: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Forward:
    kafka_topic: str
    key: bytes
    value: bytes
    headers: Headers
    prefix: str  # metric label: the rule's first segment


@dataclass(frozen=True)
class Divert:
    """To ``dlq.bridge`` instead: why, with the headers the message would have carried and its metric label."""

    refused: Refused
    headers: Headers
    prefix: str = "unknown"


@dataclass(frozen=True)
class Skip:
    """Not forwarded, and not refused: a topic guardstream publishes itself (the command topic)."""

    prefix: str


def message_id(topic: str | None, payload: bytes) -> str:
    """Deterministic id: the broker redelivering a message gives it the same id.

    Two distinct messages with byte-identical topic and payload share an id;
    device payloads carry their own timestamp, so such a pair is a duplicate.
    """
    digest = hashlib.blake2b(digest_size=16)
    digest.update((topic or "").encode("utf-8", "surrogateescape"))
    digest.update(b"\x00")
    digest.update(payload)
    return digest.hexdigest()


def headers_for(message: Incoming, bridge_id: str, msg_id: str) -> Headers:
    headers: Headers = [
        ("mqtt.topic", (message.topic or "").encode()),
        ("mqtt.qos", str(message.qos).encode()),
        ("mqtt.retain", b"1" if message.retain else b"0"),
        ("received_ms", str(message.received_ms).encode()),
        ("bridge.id", bridge_id.encode()),
        ("msg.id", msg_id.encode()),
    ]
    if message.content_type:
        headers.append(("mqtt.content_type", message.content_type.encode()))
    headers.extend((f"mqtt.user.{name}", value.encode()) for name, value in message.user_properties)
    return headers


def decide(message: Incoming, rules: tuple[Rule, ...], bridge_id: str,
           max_payload_bytes: int) -> Forward | Divert | Skip:
    msg_id = message_id(message.topic, message.payload)
    headers = headers_for(message, bridge_id, msg_id)
    if message.topic is None:
        return Divert(Refused("bad_topic", "topic is not valid UTF-8"), headers)
    try:
        found = match(rules, message.topic)
    except InputError as exc:
        first = message.topic.split("/", 1)[0]
        # the metric label must not be whatever a publisher chose: known prefixes only
        prefix = first if first in {r.prefix for r in rules} else "other"
        return Divert(Refused.of(exc), headers, prefix)
    if found.own:
        return Skip(found.rule.prefix)
    if found.rule.is_catch_all:  # the stream worker decides what it is (unknown_kind if nothing)
        headers.append(("bridge.catch_all", found.rule.pattern.encode()))
    if len(message.payload) > max_payload_bytes:
        return Divert(Refused("oversize", f"payload of {len(message.payload)} bytes exceeds the limit of "
                              f"{max_payload_bytes}"), headers, found.rule.prefix)
    return Forward(found.rule.kafka_topic, found.key.encode(), message.payload, headers, found.rule.prefix)
