"""What the bridge does with one MQTT message: forward it raw, or refuse it.

Pure: an :class:`Incoming` message in, a :class:`Forward` (raw topic, key,
payload unchanged, headers) or a :class:`Divert` (why it was refused, for
``dlq.bridge``) out. The header names are documented in ``schemas/HEADERS.md``.

MQTT 5 user properties become ``mqtt.user.NAME`` headers within :class:`PropertyLimits`
(a count and a total of header bytes): a publisher could otherwise attach a megabyte of
properties to a 61-byte message. The properties past either limit are dropped, in the
order they came, and counted (``dropped_properties``, for the bridge's metric).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import msgspec

from guardstream.connectors.mapping import Rule, match
from guardstream.errors import InputError
from guardstream.refusal import Refused

Headers = list[tuple[str, bytes]]


class Incoming(msgspec.Struct, frozen=True):
    topic: str | None  # None when the topic bytes were not UTF-8
    payload: bytes
    qos: int
    retain: bool
    received_ms: int
    content_type: str | None = None
    user_properties: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class PropertyLimits:
    """How many MQTT 5 user properties, and how many header bytes of them, a record carries at most."""

    count: int = 32
    bytes: int = 8192


class Forward(msgspec.Struct, frozen=True):
    kafka_topic: str
    key: bytes
    value: bytes
    headers: Headers
    prefix: str  # metric label: the rule's first segment
    dropped_properties: int = 0  # user properties past the limits


class Divert(msgspec.Struct, frozen=True):
    """To ``dlq.bridge`` instead: why, with the headers the message would have carried and its metric label."""

    refused: Refused
    headers: Headers
    prefix: str = "unknown"
    dropped_properties: int = 0


# Refusals of the topic itself: the rules are the bridge's whitelist, and these are what it keeps out.
TOPIC_REFUSALS = frozenset({"bad_topic", "bad_topic_id", "unmapped_topic"})


class Skip(msgspec.Struct, frozen=True):
    """Not forwarded, and not refused: a topic guardstream publishes itself (the command topic)."""

    prefix: str
    dropped_properties: int = 0


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


def user_property_headers(properties: tuple[tuple[str, str], ...], limits: PropertyLimits) -> tuple[Headers, int]:
    """(``mqtt.user.NAME`` headers within ``limits``, how many properties were dropped)."""
    kept: Headers = []
    size = 0
    for name, value in properties:
        header = (f"mqtt.user.{name}", value.encode())
        size += len(header[0].encode()) + len(header[1])
        if len(kept) == limits.count or size > limits.bytes:
            return kept, len(properties) - len(kept)
        kept.append(header)
    return kept, 0


def headers_for(message: Incoming, bridge_id: str, msg_id: str,
                limits: PropertyLimits = PropertyLimits()) -> tuple[Headers, int]:
    """(the record's headers, user properties dropped past ``limits``)."""
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
    if not message.user_properties:
        return headers, 0
    properties, dropped = user_property_headers(message.user_properties, limits)
    return headers + properties, dropped


def decide(message: Incoming, rules: tuple[Rule, ...], bridge_id: str, max_payload_bytes: int,
           limits: PropertyLimits = PropertyLimits(), msg_id: str | None = None) -> Forward | Divert | Skip:
    msg_id = msg_id or message_id(message.topic, message.payload)
    headers, dropped = headers_for(message, bridge_id, msg_id, limits)
    if message.topic is None:
        return Divert(Refused("bad_topic", "topic is not valid UTF-8"), headers, dropped_properties=dropped)
    try:
        found = match(rules, message.topic)
    except InputError as exc:
        first = message.topic.split("/", 1)[0]
        # the metric label must not be whatever a publisher chose: known prefixes only
        prefix = first if first in {r.prefix for r in rules} else "other"
        return Divert(Refused.of(exc), headers, prefix, dropped)
    if found.own:
        return Skip(found.rule.prefix)
    if found.rule.is_catch_all:  # the stream worker decides what it is (unknown_kind if nothing)
        headers.append(("bridge.catch_all", found.rule.pattern.encode()))
    if len(message.payload) > max_payload_bytes:
        return Divert(Refused("oversize", f"payload of {len(message.payload)} bytes exceeds the limit of "
                              f"{max_payload_bytes}"), headers, found.rule.prefix, dropped)
    return Forward(found.rule.kafka_topic, found.key.encode(), message.payload, headers, found.rule.prefix, dropped)


def poison(message: Incoming, bridge_id: str, msg_id: str, kills: int, limits: PropertyLimits = PropertyLimits(),
           prefixes: frozenset[str] = frozenset()) -> Divert:
    """A message that stopped the lane ``kills`` times: to ``dlq.bridge`` without being handled again."""
    headers, dropped = headers_for(message, bridge_id, msg_id, limits)
    first = (message.topic or "").split("/", 1)[0]
    return Divert(Refused("poison", f"handling this message stopped the bridge {kills} times"), headers,
                  first if first in prefixes else "other", dropped)
