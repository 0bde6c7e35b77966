"""MQTT control packets cut from a receive buffer, and PUBLISH packets read: pure.

Bytes in, values out: :func:`cut_packets` splits whatever one ``recv`` returned
into complete packets (first byte and body) and says where the incomplete rest
begins; :class:`PacketBuffer` keeps that rest until the next ``recv`` completes
it; :func:`read_publish` reads one PUBLISH body into its fields (MQTT 3.1.1 and
5, OASIS sections 2.2 and 3.3). The socket and the paho client around them are
in ``mqtt_reader.py``.
"""

from __future__ import annotations

from typing import NamedTuple

from guardstream.errors import InputError

# MQTT's remaining length takes at most four bytes of seven bits each (2.2.3)
MAX_LENGTH_BYTES = 4


class MalformedPacket(InputError):
    """The broker sent bytes that are not an MQTT packet; the connection cannot go on."""

    reason = "malformed_packet"


class Publish(NamedTuple):
    topic: bytes
    payload: bytes
    qos: int
    retain: bool
    dup: bool
    mid: int  # 0 at QoS 0, which has no packet identifier
    properties: bytes  # the MQTT 5 property block, without its length; b"" when none


class Cut(NamedTuple):
    packets: list[tuple[int, bytes]]  # (first byte: type and flags, body after the remaining length)
    used: int  # where the incomplete remainder begins
    needed: int  # how long buffer[used:] must grow to hold its first packet; 0 when not yet known
    malformed: str = ""  # why the bytes at ``used`` cannot be a packet; "" when they can


def read_length(buffer: bytes, at: int) -> tuple[int, int]:
    """(value, bytes taken) of the variable byte integer at ``buffer[at]``; (-1, 0) when it is cut off."""
    value = 0
    for shift in range(0, 7 * MAX_LENGTH_BYTES, 7):
        if at >= len(buffer):
            return -1, 0
        byte = buffer[at]
        value |= (byte & 0x7F) << shift
        at += 1
        if byte < 0x80:
            return value, shift // 7 + 1
    raise MalformedPacket(f"a variable byte integer longer than {MAX_LENGTH_BYTES} bytes")


def cut_packets(buffer: bytes) -> Cut:
    """The complete packets at the start of ``buffer``, and what is left of it.

    Bytes that cannot be a packet end the cut with ``malformed`` set; the whole
    packets before them are returned all the same, to be handled first.
    """
    packets = []
    at, end = 0, len(buffer)
    while at + 1 < end:
        try:
            length, taken = read_length(buffer, at + 1)
        except MalformedPacket as exc:
            return Cut(packets, at, 0, exc.detail)
        if taken == 0:
            return Cut(packets, at, 0)
        body = at + 1 + taken
        if body + length > end:
            return Cut(packets, at, 1 + taken + length)
        packets.append((buffer[at], buffer[body:body + length]))
        at = body + length
    return Cut(packets, at, 0)


class PacketBuffer:
    """The bytes of one connection in, as ``recv`` brought them; whole packets out.

    The incomplete rest of one ``recv`` waits for the next. A large packet arriving
    over many ``recv`` calls is joined once, when it can be whole, not at every call.
    """

    def __init__(self) -> None:
        self._chunks: list[bytes] = []  # received and not yet cut into packets
        self.buffered = 0  # bytes held
        self._needed = 0  # bytes the first incomplete packet needs in all; 0 when unknown

    def feed(self, data: bytes) -> tuple[list[tuple[int, bytes]], str]:
        """(the packets ``data`` completes, why the bytes after them cannot be a packet or "")."""
        if self._chunks:
            self._chunks.append(data)
            self.buffered += len(data)
            if self.buffered < self._needed:
                return [], ""
            data = b"".join(self._chunks)
        cut = cut_packets(data)
        rest = data[cut.used:]
        self._chunks, self.buffered, self._needed = ([rest], len(rest), cut.needed) if rest else ([], 0, 0)
        return cut.packets, cut.malformed


def read_publish(first: int, body: bytes, v5: bool) -> Publish:
    """The fields of a PUBLISH packet (``first`` is its first byte, ``body`` what follows the length)."""
    qos = (first >> 1) & 0x03
    if qos == 3:
        raise MalformedPacket("PUBLISH with QoS 3")
    if len(body) < 2:
        raise MalformedPacket("PUBLISH too short for its topic length")
    at = 2 + int.from_bytes(body[:2], "big")
    if at == 2 and not v5:
        raise MalformedPacket("PUBLISH without a topic (only MQTT 5 has topic aliases)")
    topic = body[2:at]
    mid = 0
    if qos:
        mid = int.from_bytes(body[at:at + 2], "big")
        at += 2
    properties = b""
    if v5:
        length, taken = read_length(body, at)
        if taken == 0:
            raise MalformedPacket("PUBLISH cut off in its property length")
        at += taken
        properties = body[at:at + length]
        at += length
    if at > len(body):
        raise MalformedPacket(f"PUBLISH of {len(body)} bytes declares {at} bytes before its payload")
    return Publish(topic, body[at:], qos, bool(first & 0x01), bool(first & 0x08), mid, properties)
