"""MQTT packets built byte by byte from the standard (OASIS MQTT 5.0, sections 2 and 3.3),
for tests that feed a reader exactly the bytes they choose."""

from __future__ import annotations


def encode_length(value: int) -> bytes:
    """The variable byte integer of 2.2.3: seven bits a byte, least significant first."""
    assert 0 <= value <= 268_435_455
    out = bytearray()
    while True:
        value, digit = divmod(value, 128)
        out.append(digit | (0x80 if value else 0))
        if not value:
            return bytes(out)


def encode_packet(first: int, body: bytes) -> bytes:
    return bytes([first]) + encode_length(len(body)) + body


def publish_first_byte(qos: int, retain: bool = False, dup: bool = False) -> int:
    return 0x30 | (0x08 if dup else 0) | (qos << 1) | (0x01 if retain else 0)


def encode_publish_body(topic: bytes, payload: bytes, qos: int, mid: int, properties: bytes, v5: bool) -> bytes:
    """What follows a PUBLISH's remaining length; ``properties`` is the property block without its length."""
    body = len(topic).to_bytes(2, "big") + topic
    if qos:
        body += mid.to_bytes(2, "big")
    if v5:
        body += encode_length(len(properties)) + properties
    return body + payload
