"""MQTT packets cut from receive buffers and PUBLISH bodies read: ``connectors/mqtt_wire.py``.

Case tables pin the encodings of the standard (OASIS MQTT 3.1.1 and 5.0, sections
2.2.3 and 3.3): the variable byte integer at each of its size boundaries, a buffer
cut at every byte of a packet, PUBLISH bodies of each QoS, flag and protocol
version, and the malformed bodies a broker could send. Hypothesis then checks the
two round trips the bridge relies on: any stream of packets, delivered in pieces
split anywhere, comes back exactly (and ``needed`` always names the size of the
packet still arriving); and ``read_publish`` reads back whatever a PUBLISH encoder
wrote. The encoders below are written from the standard, independently of the
module, and are themselves checked against the tables.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st
from paho.mqtt import _packet as paho_packet
from paho.mqtt.client import MQTTv5, MQTTv311
from support.mqtt_packets import encode_length, encode_packet, encode_publish_body, publish_first_byte

from guardstream.connectors.mqtt_wire import (Cut, MalformedPacket, PacketBuffer, Publish, cut_packets, read_length,
                                               read_publish)
from guardstream.errors import InputError

# -- read_length --------------------------------------------------------------------------------

# (encoded, value): the boundaries of each size, from the table in 2.2.3
LENGTHS = [
    (b"\x00", 0),
    (b"\x01", 1),
    (b"\x7f", 127),
    (b"\x80\x01", 128),
    (b"\xff\x7f", 16_383),
    (b"\x80\x80\x01", 16_384),
    (b"\xff\xff\x7f", 2_097_151),
    (b"\x80\x80\x80\x01", 2_097_152),
    (b"\xff\xff\xff\x7f", 268_435_455),
]


@pytest.mark.parametrize(("encoded", "value"), LENGTHS, ids=[str(v) for _, v in LENGTHS])
def test_read_length_reads_each_size_boundary(encoded, value):
    assert read_length(encoded, 0) == (value, len(encoded))


@pytest.mark.parametrize(("encoded", "value"), LENGTHS, ids=[str(v) for _, v in LENGTHS])
def test_read_length_starts_at_the_offset_and_stops_after_the_last_byte(encoded, value):
    assert read_length(b"\x30\xff" + encoded + b"\xff\xff", 2) == (value, len(encoded))


@pytest.mark.parametrize(("encoded", "value"), LENGTHS, ids=[str(v) for _, v in LENGTHS])
def test_the_test_encoder_agrees_with_the_table(encoded, value):
    assert encode_length(value) == encoded


@pytest.mark.parametrize(("buffer", "at"), [
    (b"", 0),
    (b"\x30", 1),  # the offset at the end of the buffer
    (b"\x30", 5),  # past it
    (b"\x80", 0),
    (b"\xff\xff", 0),
    (b"\xff\xff\xff", 0),
    (b"\x30\x80\x80", 1),
], ids=["empty", "at-end", "past-end", "1-of-2", "2-of-3", "3-of-4", "offset-2-of-3"])
def test_read_length_of_a_cut_off_integer_is_minus_one_and_zero_bytes(buffer, at):
    assert read_length(buffer, at) == (-1, 0)


@pytest.mark.parametrize("buffer", [
    b"\xff\xff\xff\xff\x7f",
    b"\x80\x80\x80\x80\x01",
    b"\x80\x80\x80\x80",  # the fourth byte already promises a fifth: malformed before it arrives
], ids=["5-bytes-max", "5-bytes-min", "4-continuations"])
def test_read_length_refuses_a_fifth_byte(buffer):
    with pytest.raises(MalformedPacket) as caught:
        read_length(buffer, 0)
    assert isinstance(caught.value, InputError) and caught.value.reason == "malformed_packet"


@given(st.integers(0, 268_435_455), st.binary(max_size=3))
def test_read_length_inverts_the_encoder(value, after):
    encoded = encode_length(value)
    assert read_length(b"\x30" + encoded + after, 1) == (value, len(encoded))


# -- cut_packets: case tables -------------------------------------------------------------------

PINGRESP = b"\xd0\x00"
CONNACK = b"\x20\x02\x00\x00"
SUBACK = b"\x90\x03\x00\x01\x01"
SMALL_PUBLISH = encode_packet(0x30, encode_publish_body(b"a/b", b"hello", 0, 0, b"", False))
# a body of 130 bytes: its length takes two bytes, so a cut can fall inside the length too
PUBLISH_130 = encode_packet(0x32, encode_publish_body(b"device/d1/telemetry", bytes(range(107)), 1, 7, b"", False))


def test_cut_packets_of_an_empty_buffer_is_nothing():
    assert cut_packets(b"") == Cut([], 0, 0)


@pytest.mark.parametrize("first", [0x30, 0xd0, 0x00, 0xff])
def test_cut_packets_of_a_single_byte_waits_with_needed_unknown(first):
    assert cut_packets(bytes([first])) == Cut([], 0, 0)


@pytest.mark.parametrize("packet", [PINGRESP, CONNACK, SUBACK, SMALL_PUBLISH, PUBLISH_130],
                         ids=["pingresp", "connack", "suback", "publish-small", "publish-130"])
def test_cut_packets_of_one_whole_packet(packet):
    length, taken = read_length(packet, 1)
    assert cut_packets(packet) == Cut([(packet[0], packet[1 + taken:])], len(packet), 0)


@pytest.mark.parametrize("split", range(len(PUBLISH_130) + 1))
def test_a_packet_split_at_any_byte_comes_back_whole(split):
    assert PUBLISH_130[1:3] == b"\x82\x01"  # 130: a two-byte length
    head, tail = PUBLISH_130[:split], PUBLISH_130[split:]
    first = cut_packets(head)
    length_known = split >= 3  # first byte and both length bytes received
    if split == len(PUBLISH_130):
        assert first == Cut([(0x32, PUBLISH_130[3:])], split, 0)
        return
    assert first == Cut([], 0, len(PUBLISH_130) if length_known else 0)
    assert cut_packets(head[first.used:] + tail) == Cut([(0x32, PUBLISH_130[3:])], len(PUBLISH_130), 0)


@pytest.mark.parametrize("split", range(len(SMALL_PUBLISH) + 1))
def test_a_packet_split_at_any_byte_after_a_whole_one_keeps_the_whole_one(split):
    buffer = CONNACK + SMALL_PUBLISH[:split]
    cut = cut_packets(buffer)
    if split == len(SMALL_PUBLISH):
        assert cut == Cut([(0x20, b"\x00\x00"), (0x30, SMALL_PUBLISH[2:])], len(buffer), 0)
    else:
        assert cut == Cut([(0x20, b"\x00\x00")], len(CONNACK), len(SMALL_PUBLISH) if split >= 2 else 0)


def test_packets_back_to_back_are_all_cut_in_order():
    stream = CONNACK + SUBACK + SMALL_PUBLISH + PINGRESP + PUBLISH_130 + PINGRESP
    assert cut_packets(stream) == Cut([
        (0x20, b"\x00\x00"), (0x90, b"\x00\x01\x01"), (0x30, SMALL_PUBLISH[2:]), (0xd0, b""),
        (0x32, PUBLISH_130[3:]), (0xd0, b""),
    ], len(stream), 0)


@pytest.mark.parametrize(("rest", "needed"), [
    (b"\x30", 0),  # first byte only: length unknown
    (b"\x30\x80", 0),  # length cut off after its first byte
    (b"\x30\x80\x80\x80", 0),  # ... after its third
    (b"\x30\x05ab", 7),  # 1 + 1 + 5
    (b"\x30\x80\x01", 131),  # 1 + 2 + 128
    (b"\x30\xff\x7f" + bytes(100), 16_386),  # 1 + 2 + 16,383
    (b"\x30\x80\x80\x01", 16_388),  # 1 + 3 + 16,384
    (b"\x30\x80\x80\x80\x01", 2_097_157),  # 1 + 4 + 2,097,152
    (b"\x30\xff\xff\xff\x7f", 268_435_460),  # the largest packet MQTT allows
], ids=["first-byte", "length-1-of-2", "length-3-of-4", "short", "128", "16383", "16384", "2097152", "max"])
def test_needed_is_the_whole_first_packet_when_its_length_is_known_else_zero(rest, needed):
    # after a whole packet, so that `needed` is seen to count from `used`, not from 0
    cut = cut_packets(PINGRESP + rest)
    assert cut == Cut([(0xd0, b"")], len(PINGRESP), needed)


def test_a_packet_with_a_four_byte_length_is_cut_when_whole():
    body = bytes(2_097_152)
    packet = encode_packet(0x30, body)
    assert packet[1:5] == b"\x80\x80\x80\x01"
    assert cut_packets(packet[:-1]) == Cut([], 0, len(packet))
    assert cut_packets(packet + PINGRESP) == Cut([(0x30, body), (0xd0, b"")], len(packet) + 2, 0)


def test_cut_packets_hands_on_the_whole_packets_before_a_five_byte_length():
    cut = cut_packets(PINGRESP + b"\x30\xff\xff\xff\xff\x7f")
    assert cut.packets == [(0xd0, b"")]
    assert cut.used == len(PINGRESP)
    assert "longer than 4 bytes" in cut.malformed


# -- cut_packets: any stream, in pieces split anywhere ------------------------------------------

bodies = st.one_of(
    st.binary(max_size=40),
    st.binary(min_size=120, max_size=140),  # across the 1- to 2-byte length boundary
    # across the 2- to 3-byte boundary, without drawing 16 KiB of random bytes
    st.builds(lambda size, fill: bytes([fill]) * size, st.integers(16_370, 16_400), st.integers(0, 255)),
)
packet_lists = st.lists(st.tuples(st.integers(0, 255), bodies), max_size=12)


@settings(max_examples=300, deadline=None)
@given(packets=packet_lists, data=st.data())
def test_a_stream_fed_in_pieces_split_anywhere_yields_exactly_its_packets(packets, data):
    encoded = [encode_packet(first, body) for first, body in packets]
    stream = b"".join(encoded)
    splits = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8), label="splits"))
    pieces = [stream[a:b] for a, b in zip([0, *splits], [*splits, len(stream)])]

    got: list[tuple[int, bytes]] = []
    rest = b""
    for piece in pieces:
        rest += piece
        cut = cut_packets(rest)
        got += cut.packets
        rest = rest[cut.used:]
        if rest:  # the next packet is incomplete: `needed` must be its size, or 0 while that is unknown
            next_packet = encoded[len(got)]
            assert next_packet.startswith(rest) and len(rest) < len(next_packet)
            length_known = read_length(rest, 1)[1] > 0
            assert cut.needed == (len(next_packet) if length_known else 0)
        else:
            assert cut.needed == 0
    assert got == packets
    assert rest == b""



@settings(max_examples=200, deadline=None)
@given(packets=packet_lists, data=st.data())
def test_a_packet_buffer_fed_pieces_split_anywhere_yields_exactly_its_packets_and_holds_only_the_rest(
        packets, data):
    stream = b"".join(encode_packet(first, body) for first, body in packets)
    splits = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8), label="splits"))
    buffer = PacketBuffer()
    got: list[tuple[int, bytes]] = []
    for a, b in zip([0, *splits], [*splits, len(stream)]):
        if a == b:
            continue  # recv never returns nothing on a live connection
        whole, malformed = buffer.feed(stream[a:b])
        assert malformed == ""
        got += whole
        assert buffer.buffered == b - sum(len(encode_packet(f, body)) for f, body in got)
    assert got == packets and buffer.buffered == 0


def test_a_packet_buffer_hands_on_whole_packets_before_bytes_that_cannot_be_one():
    buffer = PacketBuffer()
    assert buffer.feed(PINGRESP + b"\x30\xff") == ([(0xd0, b"")], "")
    whole, malformed = buffer.feed(b"\xff\xff\xff\x7f")
    assert whole == [] and "longer than 4 bytes" in malformed

# -- read_publish: case tables ------------------------------------------------------------------

CONTENT_TYPE = b"\x03\x00\x10application/json"  # property 3, a UTF-8 string
USER_PROPERTY = b"\x26\x00\x04site\x00\x05berl\xc3\xbc"  # property 38, a UTF-8 string pair
TOPIC_ALIAS = b"\x23\x00\x05"  # property 35, a two-byte integer
MANY_PROPERTIES = USER_PROPERTY * 20  # 260 bytes: the property length takes two bytes


@pytest.mark.parametrize(("first", "body", "v5", "expected"), [
    pytest.param(0x30, b"\x00\x03a/bhi", False, Publish(b"a/b", b"hi", 0, False, False, 0, b""), id="v3-qos0"),
    pytest.param(0x32, b"\x00\x03a/b\x12\x34hi", False, Publish(b"a/b", b"hi", 1, False, False, 0x1234, b""),
                 id="v3-qos1"),
    pytest.param(0x34, b"\x00\x03a/b\xff\xffhi", False, Publish(b"a/b", b"hi", 2, False, False, 65_535, b""),
                 id="v3-qos2"),
    pytest.param(0x31, b"\x00\x03a/bhi", False, Publish(b"a/b", b"hi", 0, True, False, 0, b""), id="v3-retain"),
    pytest.param(0x3a, b"\x00\x03a/b\x00\x01hi", False, Publish(b"a/b", b"hi", 1, False, True, 1, b""),
                 id="v3-dup"),
    pytest.param(0x3d, b"\x00\x03a/b\x00\x02hi", False, Publish(b"a/b", b"hi", 2, True, True, 2, b""),
                 id="v3-all-flags"),
    pytest.param(0x32, b"\x00\x03a/b\x00\x09", False, Publish(b"a/b", b"", 1, False, False, 9, b""),
                 id="v3-empty-payload"),
    pytest.param(0x30, b"\x00\x0dt\xc3\xa9l\xc3\xa9m\xc3\xa9trie" + b"\x00\x01",
                 False, Publish("télémétrie".encode(), b"\x00\x01", 0, False, False, 0, b""), id="v3-utf8-topic"),
    pytest.param(0x30, b"\x00\x03a/b\x00hi", True, Publish(b"a/b", b"hi", 0, False, False, 0, b""),
                 id="v5-qos0-no-properties"),
    pytest.param(0x32, b"\x00\x03a/b\x00\x07\x00hi", True, Publish(b"a/b", b"hi", 1, False, False, 7, b""),
                 id="v5-qos1-no-properties"),
    pytest.param(0x35, b"\x00\x03a/b\x00\x07\x00", True, Publish(b"a/b", b"", 2, True, False, 7, b""),
                 id="v5-qos2-retain-empty-payload"),
    pytest.param(0x32, b"\x00\x03a/b\x00\x07" + bytes([len(CONTENT_TYPE + USER_PROPERTY)]) + CONTENT_TYPE
                 + USER_PROPERTY + b"{}", True,
                 Publish(b"a/b", b"{}", 1, False, False, 7, CONTENT_TYPE + USER_PROPERTY), id="v5-properties-raw"),
    pytest.param(0x30, b"\x00\x03a/b" + encode_length(len(MANY_PROPERTIES)) + MANY_PROPERTIES + b"x", True,
                 Publish(b"a/b", b"x", 0, False, False, 0, MANY_PROPERTIES), id="v5-two-byte-property-length"),
    pytest.param(0x30, b"\x00\x00\x03" + TOPIC_ALIAS + b"hi", True,
                 Publish(b"", b"hi", 0, False, False, 0, TOPIC_ALIAS), id="v5-empty-topic-with-alias"),
    pytest.param(0x30, b"\x00\x03a/b\x00\x00hi", True, Publish(b"a/b", b"\x00hi", 0, False, False, 0, b""),
                 id="v5-payload-starting-with-zero"),
    pytest.param(0x30, b"\x00\x03a/b\x00\x00hi", False, Publish(b"a/b", b"\x00\x00hi", 0, False, False, 0, b""),
                 id="v3-reads-no-property-length"),
])
def test_read_publish(first, body, v5, expected):
    assert read_publish(first, body, v5) == expected


@pytest.mark.parametrize(("first", "body", "v5"), [
    pytest.param(0x36, b"\x00\x03a/b\x00\x01hi", False, id="qos3-v3"),
    pytest.param(0x36, b"\x00\x03a/b\x00\x01\x00hi", True, id="qos3-v5"),
    pytest.param(0x30, b"", False, id="empty-body"),
    pytest.param(0x30, b"\x00", False, id="half-a-topic-length"),
    pytest.param(0x30, b"\x00\x00hi", False, id="v3-empty-topic"),
    pytest.param(0x30, b"\x00\x05a/b", False, id="topic-longer-than-body"),
    pytest.param(0x32, b"\x00\x03a/b", False, id="qos1-without-packet-id"),
    pytest.param(0x34, b"\x00\x03a/b\x00", False, id="qos2-half-a-packet-id"),
    pytest.param(0x30, b"\x00\x03a/b", True, id="v5-without-property-length"),
    pytest.param(0x32, b"\x00\x03a/b\x00\x01", True, id="v5-qos1-without-property-length"),
    pytest.param(0x30, b"\x00\x03a/b\x80", True, id="v5-property-length-cut-off"),
    pytest.param(0x30, b"\x00\x03a/b\x05\x03\x00", True, id="v5-properties-longer-than-body"),
    pytest.param(0x30, b"\x00\x03a/b\xff\xff\xff\xff\x7f", True, id="v5-five-byte-property-length"),
])
def test_read_publish_refuses_a_malformed_body(first, body, v5):
    with pytest.raises(MalformedPacket):
        read_publish(first, body, v5)


# -- read_publish: the inverse of an encoder ----------------------------------------------------

publishes = st.fixed_dictionaries({
    "topic": st.binary(max_size=300),
    "payload": st.binary(max_size=300),
    "qos": st.integers(0, 2),
    "mid": st.integers(1, 65_535),
    "properties": st.binary(max_size=300),
    "retain": st.booleans(),
    "dup": st.booleans(),
    "v5": st.booleans(),
}).filter(lambda p: p["v5"] or p["topic"])  # only MQTT 5 may leave the topic to an alias


@given(publishes)
def test_read_publish_reads_back_what_the_encoder_wrote(p):
    properties = p["properties"] if p["v5"] else b""
    mid = p["mid"] if p["qos"] else 0
    body = encode_publish_body(p["topic"], p["payload"], p["qos"], mid, properties, p["v5"])
    first = publish_first_byte(p["qos"], p["retain"], p["dup"])
    assert read_publish(first, body, p["v5"]) == Publish(
        p["topic"], p["payload"], p["qos"], p["retain"], p["dup"], mid, properties)


@given(publishes, st.data())
def test_read_publish_of_a_truncated_body_refuses_the_header_or_shortens_the_payload(p, data):
    properties = p["properties"] if p["v5"] else b""
    mid = p["mid"] if p["qos"] else 0
    body = encode_publish_body(p["topic"], p["payload"], p["qos"], mid, properties, p["v5"])
    header = len(body) - len(p["payload"])
    keep = data.draw(st.integers(0, len(body)), label="keep")
    first = publish_first_byte(p["qos"], p["retain"], p["dup"])
    if keep < header:
        with pytest.raises(MalformedPacket):
            read_publish(first, body[:keep], p["v5"])
    else:
        assert read_publish(first, body[:keep], p["v5"]).payload == p["payload"][:keep - header]


@given(topic=st.binary(min_size=1, max_size=100), payload=st.binary(max_size=200), qos=st.integers(0, 2),
       mid=st.integers(1, 65_535), retain=st.booleans(), dup=st.booleans(), v5=st.booleans())
def test_read_publish_agrees_with_paho_on_packets_without_properties(topic, payload, qos, mid, retain, dup, v5):
    """Stock paho's reader, on what ``mqtt_reader.py`` takes off its hands."""
    mid = mid if qos else 0
    body = encode_publish_body(topic, payload, qos, mid, b"", v5)
    first = publish_first_byte(qos, retain, dup)
    ours = read_publish(first, body, v5)
    theirs = paho_packet.decode_publish(first, body, MQTTv5 if v5 else MQTTv311)
    assert (ours.topic, ours.payload, ours.qos, ours.retain, ours.dup, ours.mid) == (
        theirs.topic, theirs.payload, theirs.qos, theirs.retain, theirs.dup, theirs.mid)
