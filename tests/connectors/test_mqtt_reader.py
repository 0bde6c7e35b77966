"""The bridge's read-ahead paho client (``connectors/mqtt_reader.py``) against stock paho.

On the session's real broker (the ``mqtt_url`` fixture):

* the same messages (QoS 0, 1 and 2; retained and live; MQTT 5 with and without
  content type and user properties; payloads of 0 bytes, a few bytes and 300 KB,
  which take many ``recv`` calls; non-ASCII topics) reach a stock
  ``paho.mqtt.client.Client`` and a ``ReadAheadClient`` with every field equal.
  The one allowed difference: a QoS 0/1 MQTT 5 message without properties has
  ``properties`` None on the read-ahead path where paho builds an empty
  ``Properties``. In MQTT 3.1.1 (no properties at all) there is no difference;
* 5,000 QoS 1 messages arrive in order, once each, and are acknowledged: a
  persistent session resumed afterwards gets none of them again;
* when the broker drops the connection with half a packet received (a second
  client taking over the client id), the reconnected client reads the new
  connection from its first byte.

On a socket pair, where the test decides where each ``recv`` ends: a stream of
packets cut into arbitrary pieces (down to single bytes) yields every message and
acknowledgement, a new socket discards the old one's bytes, and malformed packets
end the connection with a protocol error instead of raising.

Against the installed paho: it is a release the reader names in ``CHECKED_PAHO``,
the reader's docstring lists exactly the private members its source touches, and
each of them exists on paho's client.
"""

from __future__ import annotations

import ast
import dataclasses
import fcntl
import importlib.metadata
import inspect
import random
import re
import socket
import struct
import termios
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import paho.mqtt.client as mqtt
import pytest
from hypothesis import HealthCheck, given, settings as hypothesis_settings, strategies as st
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from support.mqtt_packets import encode_length, encode_packet, encode_publish_body, publish_first_byte

from guardstream.connectors.mqtt import connect, endpoint, new_client
from guardstream.connectors import mqtt_reader
from guardstream.connectors.mqtt_reader import CHECKED_PAHO, READ_SIZE, ReadAheadClient
from guardstream.settings import Settings

WAIT_S = 15.0


def wait_for(check: Callable[[], bool], what: str, timeout_s: float = WAIT_S) -> None:
    """Poll ``check`` until it holds; fail the test naming ``what`` at the deadline."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.01)  # the polling interval of a condition wait


@pytest.fixture(scope="module")
def mqtt_settings(mqtt_url: str) -> Settings:
    """Settings naming only the session's MQTT broker (these tests need no Kafka)."""
    return Settings.from_env({"MQTT_URL": mqtt_url})


# -- clients on the real broker -----------------------------------------------------------------


@dataclass(frozen=True)
class Seen:
    """What a subscriber can tell of a message, without the broker-chosen packet identifier."""
    topic: str
    payload: bytes
    qos: int
    retain: bool
    dup: bool
    has_mid: bool
    properties: dict | None  # None when the message came with no Properties object at all


def seen(message: mqtt.MQTTMessage) -> Seen:
    props = message.properties
    return Seen(message.topic, message.payload, message.qos, message.retain, message.dup, message.mid != 0,
                None if props is None else props.json())


class Subscriber:
    """A connected client (stock paho or read-ahead) that records what it receives."""

    def __init__(self, kind: type[mqtt.Client], settings: Settings, client_id: str, protocol: int,
                 topic_filter: str, qos: int) -> None:
        self.messages: list[Seen] = []
        self.connects = 0
        self.subscribed = 0
        self.client = kind(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol)
        self.client.on_message = lambda c, u, m: self.messages.append(seen(m))
        self.client.on_subscribe = lambda *args: self._count_subscribe()

        def on_connect(client, userdata, flags, reason, properties):
            self.connects += 1
            client.subscribe(topic_filter, qos)

        self.client.on_connect = on_connect
        ep = endpoint(settings)
        self.client.connect(ep.host, ep.port)
        self.client.loop_start()
        wait_for(lambda: self.subscribed >= 1, f"{kind.__name__} {client_id} subscribed")

    def _count_subscribe(self) -> None:
        self.subscribed += 1

    def topics(self) -> list[str]:
        return [m.topic for m in self.messages]

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def start_publisher(settings: Settings, client_id: str, protocol: int) -> mqtt.Client:
    ep = endpoint(settings)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol)
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect(ep.host, ep.port)
    client.loop_start()
    return client


def publish_and_wait(publisher: mqtt.Client, infos: list[mqtt.MQTTMessageInfo]) -> None:
    """Wait until each publish left the publisher (QoS 0) or the broker acknowledged it (QoS 1/2)."""
    for info in infos:
        info.wait_for_publish(WAIT_S)
        assert info.is_published(), f"publish {info.mid} not done"


# -- a: every field as stock paho gives it ------------------------------------------------------


@dataclass(frozen=True)
class Sent:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    properties: dict = field(default_factory=dict)  # ContentType and UserProperty, as Properties.json()

    def paho_properties(self) -> Properties | None:
        if not self.properties:
            return None
        props = Properties(PacketTypes.PUBLISH)
        for name, value in self.properties.items():
            setattr(props, name, value)
        return props


TOPIC_TAILS = ["plain", "température", "日本語/センサー", "guard-🛡"]
PROPERTY_SETS = [
    {},
    {"ContentType": "application/json"},
    {"ContentType": "text/plain; charset=utf-8", "UserProperty": [("device", "d-42"), ("site", "Zürich 駅")]},
]


def message_set(base: str, with_properties: bool) -> list[Sent]:
    """Each QoS, retained and live, each property set, each payload size, on its own topic."""
    sent = []
    for qos in (0, 1, 2):
        for retain in (False, True):
            for props in PROPERTY_SETS if with_properties else [{}]:
                for size in (0, 14, 300_000):
                    if retain and size == 0:
                        continue  # an empty retained message deletes the retained message: nothing to receive
                    i = len(sent)
                    payload = random.Random(i).randbytes(size)
                    sent.append(Sent(f"{base}/m/{i}/{TOPIC_TAILS[i % len(TOPIC_TAILS)]}", payload, qos, retain,
                                     props))
    return sent


def expected_seen(message: Sent, protocol: int) -> Seen:
    """What stock paho subscribed at QoS 2 (so that QoS is kept) should see of ``message``.

    Retained messages reach the subscribers when they subscribe, with the retain flag
    set; the others are published afterwards and arrive with it clear (3.3.1.3).
    """
    if protocol != mqtt.MQTTv5:
        properties = None  # paho has no Properties in 3.1.1
    elif message.properties:
        properties = message.properties
    else:
        properties = {}  # an empty Properties
    return Seen(message.topic, message.payload, message.qos, message.retain, False, message.qos > 0, properties)


class RecvCountingClient(ReadAheadClient):
    """The read-ahead client, recording the size of each ``recv`` it makes."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.reads: list[int] = []

    def _sock_recv(self, bufsize: int) -> bytes:
        data = super()._sock_recv(bufsize)
        self.reads.append(len(data))
        return data


def receive_on_both(settings: Settings, unique: str, protocol: int,
                    messages: list[Sent]) -> tuple[list[Seen], list[Seen], list[int]]:
    """Publish ``messages`` to a stock paho and a read-ahead subscriber: what each received,
    and the sizes of the read-ahead client's ``recv`` calls."""
    base = f"gs-reader/{unique}"
    end = f"{base}/m/end"
    publisher = start_publisher(settings, f"pub-{unique}", protocol)
    retained = [m for m in messages if m.retain]
    live = [m for m in messages if not m.retain]
    try:
        publish_and_wait(publisher, [
            publisher.publish(m.topic, m.payload, m.qos, retain=True, properties=m.paho_properties())
            for m in retained])
        stock = Subscriber(mqtt.Client, settings, f"stock-{unique}", protocol, f"{base}/m/#", 2)
        read_ahead = Subscriber(RecvCountingClient, settings, f"ahead-{unique}", protocol, f"{base}/m/#", 2)
        try:
            publish_and_wait(publisher, [
                publisher.publish(m.topic, m.payload, m.qos, properties=m.paho_properties()) for m in live])
            publish_and_wait(publisher, [publisher.publish(end, b"", 1)])  # after all others, at both
            wanted = {m.topic for m in messages} | {end}
            wait_for(lambda: wanted <= set(stock.topics()), "all messages at the stock paho subscriber")
            wait_for(lambda: wanted <= set(read_ahead.topics()), "all messages at the read-ahead subscriber")
        finally:
            stock.stop()
            read_ahead.stop()
        publish_and_wait(publisher, [publisher.publish(m.topic, b"", 1, retain=True) for m in retained])  # clean up
        return ([s for s in stock.messages if s.topic != end], [s for s in read_ahead.messages if s.topic != end],
                read_ahead.client.reads)
    finally:
        publisher.disconnect()
        publisher.loop_stop()


def assert_same_as_stock_paho(stock: list[Seen], read_ahead: list[Seen], messages: list[Sent], protocol: int) -> None:
    # each message exactly once, at both subscribers
    assert sorted(s.topic for s in stock) == sorted(m.topic for m in messages)
    assert sorted(s.topic for s in read_ahead) == sorted(m.topic for m in messages)
    stock_by_topic = {s.topic: s for s in stock}
    ahead_by_topic = {s.topic: s for s in read_ahead}
    for m in messages:
        theirs, ours = stock_by_topic[m.topic], ahead_by_topic[m.topic]
        assert theirs == expected_seen(m, protocol), m.topic
        # the one difference allowed: the fast path (QoS 0/1, MQTT 5, no properties in the
        # packet) builds no empty Properties; QoS 2 goes through paho and gets one
        if protocol == mqtt.MQTTv5 and m.qos < 2 and not m.properties:
            assert (theirs.properties, ours.properties) == ({}, None), m.topic
            assert dataclasses.replace(theirs, properties=None) == ours, m.topic
        else:
            assert theirs == ours, m.topic


@pytest.mark.parametrize(("protocol", "with_properties", "count", "large"), [
    pytest.param(mqtt.MQTTv5, True, 45, 15, id="mqtt5"),
    pytest.param(mqtt.MQTTv311, False, 15, 5, id="mqtt311"),
])
def test_messages_reach_the_read_ahead_client_as_they_reach_stock_paho(mqtt_settings, unique, protocol,
                                                                       with_properties, count, large):
    messages = message_set(f"gs-reader/{unique}", with_properties=with_properties)
    assert len(messages) == count
    stock, read_ahead, reads = receive_on_both(mqtt_settings, unique, protocol, messages)
    assert_same_as_stock_paho(stock, read_ahead, messages, protocol)
    # the 300 KB packets arrived in many recv calls, none larger than READ_SIZE
    assert max(reads) <= READ_SIZE and sum(reads) > large * 300_000


# -- c: order and acknowledgements --------------------------------------------------------------


def test_five_thousand_qos1_messages_arrive_in_order_once_each_and_are_acknowledged(mqtt_settings, unique):
    topic = f"gs-reader/{unique}/order"
    client_id = f"order-{unique}"
    count = 5000
    received: list[Seen] = []
    sessions: list[bool] = []
    subscribed = threading.Event()
    disconnected = threading.Event()

    def start(first: bool) -> mqtt.Client:
        client = new_client(mqtt_settings, client_id, persistent=True)  # clean start off, session expiry set
        assert isinstance(client, ReadAheadClient)

        def on_connect(c, userdata, flags, reason, properties):
            sessions.append(flags.session_present)
            if first:
                c.subscribe(topic, 1)

        client.on_connect = on_connect
        client.on_subscribe = lambda *args: subscribed.set()
        client.on_message = lambda c, u, m: received.append(seen(m))
        client.on_disconnect = lambda *args: disconnected.set()
        connect(client, mqtt_settings, persistent=True)
        client.loop_start()
        return client

    subscriber = start(first=True)
    publisher = start_publisher(mqtt_settings, f"pub-{unique}", mqtt.MQTTv5)
    try:
        assert subscribed.wait(WAIT_S), "not subscribed"
        publish_and_wait(publisher, [publisher.publish(topic, str(seq).encode(), 1) for seq in range(count)])
        wait_for(lambda: len(received) >= count, f"{count} messages")
        assert [int(s.payload) for s in received] == list(range(count))
        assert {(s.qos, s.dup, s.has_mid) for s in received} == {(1, False, True)}

        # Resume the session: a message the broker had not seen acknowledged would come again
        # (3.1.2.4 / 4.4), ahead of anything published after the reconnect. The network thread
        # stops only once DISCONNECT went out: the acknowledgements queued before it went first.
        subscriber.disconnect()
        assert disconnected.wait(WAIT_S), "not disconnected"
        subscriber.loop_stop()
        received.clear()
        subscriber = start(first=False)
        wait_for(lambda: len(sessions) == 2, "the session resumed")
        assert sessions == [False, True]
        publish_and_wait(publisher, [publisher.publish(topic, b"after", 1)])
        wait_for(lambda: len(received) >= 1, "the message published after the reconnect")
        assert [s.payload for s in received] == [b"after"]
    finally:
        end_session = Properties(PacketTypes.DISCONNECT)
        end_session.SessionExpiryInterval = 0
        subscriber.disconnect(properties=end_session)
        subscriber.loop_stop()
        publisher.disconnect()
        publisher.loop_stop()


# -- d: the broker drops the connection in the middle of a packet -------------------------------


def unread_bytes(sock: socket.socket) -> int:
    """Bytes waiting in the kernel's receive buffer of ``sock``."""
    return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0"))[0]


def test_after_the_broker_drops_a_half_read_packet_the_reconnected_client_reads_intact_messages(
        mqtt_settings, unique):
    topic = f"gs-reader/{unique}/takeover"
    client_id = f"takeover-{unique}"
    big = [bytes([i]) * 900_000 for i in range(12)]  # more than the kernel buffers hold between the two
    gate = b"gate"
    in_gate, open_gate = threading.Event(), threading.Event()
    received: list[bytes] = []
    buffered_at_drop: list[int] = []

    def on_message(client, userdata, message):
        if message.payload == gate:  # hold the network thread: the broker's bytes pile up unread
            in_gate.set()
            open_gate.wait(WAIT_S)
        else:
            received.append(message.payload)

    def on_disconnect(client, userdata, flags, reason, properties):
        buffered_at_drop.append(client._buffer.buffered)  # the read-ahead buffer of the dropped connection

    subscriber = Subscriber(ReadAheadClient, mqtt_settings, client_id, mqtt.MQTTv5, topic, 0)
    subscriber.client.on_message = on_message
    subscriber.client.on_disconnect = on_disconnect
    publisher = start_publisher(mqtt_settings, f"pub-{unique}", mqtt.MQTTv5)
    try:
        publish_and_wait(publisher, [publisher.publish(topic, gate, 0)])
        assert in_gate.wait(WAIT_S), "the gate message did not arrive"
        publish_and_wait(publisher, [publisher.publish(topic, payload, 1) for payload in big])
        wait_for(lambda: unread_bytes(subscriber.client.socket()) > 0, "the broker writing to the subscriber")

        # A second client with the same client id: the broker drops the first connection.
        thief = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        thief_connected = threading.Event()
        thief.on_connect = lambda *args: thief_connected.set()
        ep = endpoint(mqtt_settings)
        thief.connect(ep.host, ep.port)
        thief.loop_start()
        assert thief_connected.wait(WAIT_S), "the second client did not connect"
        thief.disconnect()
        thief.loop_stop()

        open_gate.set()  # the first client reads what it got, meets the end, reconnects
        wait_for(lambda: subscriber.subscribed >= 2, "the reconnect and its new subscription")
        assert subscriber.connects == 2
        assert len(buffered_at_drop) == 1 and buffered_at_drop[0] > 0, \
            "the old connection did not end inside a packet: nothing for the reconnect to discard"
        # what came before the drop is a prefix of what was sent, each message whole
        before = list(received)
        assert 0 < len(before) < len(big) and before == big[:len(before)]

        after = [b"small after the reconnect", bytes(range(256)) * 3000]
        publish_and_wait(publisher, [publisher.publish(topic, payload, 1) for payload in after])
        wait_for(lambda: len(received) >= len(before) + len(after), "the messages after the reconnect")
        assert received[len(before):] == after
    finally:
        open_gate.set()
        subscriber.stop()
        publisher.disconnect()
        publisher.loop_stop()


# -- on a socket pair: the test decides where each recv ends ------------------------------------


def encode_publish(topic: str, payload: bytes, qos: int, mid: int, *, retain: bool = False, dup: bool = False,
                   properties: Properties | None = None, v5: bool = True) -> bytes:
    """A PUBLISH packet as the broker would send it (3.3)."""
    block = property_block(properties) if properties is not None else b""
    return encode_packet(publish_first_byte(qos, retain, dup),
                         encode_publish_body(topic.encode(), payload, qos, mid, block, v5))


def property_block(properties: Properties) -> bytes:
    """paho's packed properties without the length in front of them."""
    packed = properties.pack()
    prefix = next(n for n in range(1, 5) if encode_length(len(packed) - n) == packed[:n])
    return packed[prefix:]


def pubrel(mid: int) -> bytes:
    return b"\x62\x02" + mid.to_bytes(2, "big")


def ack(kind: int, mid: int) -> bytes:
    """PUBACK (0x40), PUBREC (0x50) or PUBCOMP (0x70) as paho sends them: success, no reason code."""
    return bytes([kind, 2]) + mid.to_bytes(2, "big")


class SocketPairBroker:
    """The broker's end of a socket pair whose other end is a ReadAheadClient's socket.

    No network loop runs: :meth:`deliver` writes bytes and calls the client's
    ``_packet_read`` until it has read them all, so each ``recv`` returns exactly
    what one ``deliver`` wrote (up to READ_SIZE).
    """

    def __init__(self, protocol: int = mqtt.MQTTv5, manual_ack: bool = False) -> None:
        self.client = ReadAheadClient(CallbackAPIVersion.VERSION2, client_id="socketpair", protocol=protocol,
                                      manual_ack=manual_ack)
        self.received: list[mqtt.MQTTMessage] = []
        self.client.on_message = lambda c, u, m: self.received.append(m)
        self.sockets: list[socket.socket] = []
        self.plug_new_socket()

    def plug_new_socket(self) -> None:
        """What a reconnect does to the client: a new socket in ``_sock``."""
        self.end, client_end = socket.socketpair()
        self.end.setblocking(False)
        client_end.setblocking(False)
        self.sockets += [self.end, client_end]
        self.client._sock = client_end
        self.from_client = bytearray()

    def deliver(self, data: bytes) -> MQTTErrorCode:
        """Send ``data`` to the client and let it read; its last answer (MQTT_ERR_AGAIN when all went well)."""
        rc = MQTTErrorCode.MQTT_ERR_AGAIN
        view = memoryview(data)
        while view:
            try:
                view = view[self.end.send(view):]
            except BlockingIOError:
                pass  # the socket pair is full: let the client read
            rc = self.client._packet_read()
            while rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
                self._take_what_the_client_sent()
                rc = self.client._packet_read()
            if rc != MQTTErrorCode.MQTT_ERR_AGAIN:
                return rc
        self._take_what_the_client_sent()
        return rc

    def _take_what_the_client_sent(self) -> None:
        while True:
            try:
                chunk = self.end.recv(65536)
            except BlockingIOError:
                return
            if not chunk:
                return
            self.from_client += chunk

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()


@pytest.fixture
def pair_v5():
    broker = SocketPairBroker(mqtt.MQTTv5)
    yield broker
    broker.close()


def fields(message: mqtt.MQTTMessage) -> tuple:
    props = message.properties
    return (message.topic, message.payload, message.qos, message.retain, message.dup, message.mid,
            None if props is None else props.json())


def content_type(value: str) -> Properties:
    props = Properties(PacketTypes.PUBLISH)
    props.ContentType = value
    return props


@st.composite
def broker_streams(draw):
    """(protocol, bytes the broker sends, messages the client should deliver, bytes it should answer)."""
    v5 = draw(st.booleans())
    stream, expected, answers = [], [], []
    for mid in range(1, draw(st.integers(1, 12)) + 1):
        if draw(st.integers(0, 4)) == 0:
            stream.append(b"\xd0\x00")  # a PINGRESP between the messages
        qos = draw(st.integers(0, 2))
        topic = draw(st.sampled_from(["t", "device/d-1/telemetry", "température/日本"]))
        size = draw(st.sampled_from([0, 1, 100, 200, 20_000, 70_000]))  # 70,000 > READ_SIZE
        payload = bytes([mid]) * size
        retain, dup = draw(st.booleans()), draw(st.booleans())
        props = content_type("application/json") if v5 and draw(st.booleans()) else None
        stream.append(encode_publish(topic, payload, qos, mid, retain=retain, dup=dup, properties=props, v5=v5))
        if qos == 2:
            stream.append(pubrel(mid))  # paho hands a QoS 2 message on when its PUBREL comes
            answers += [ack(0x50, mid), ack(0x70, mid)]
        elif qos == 1:
            answers.append(ack(0x40, mid))
        if not v5:
            expected_props = None
        elif props is not None:
            expected_props = props.json()
        else:
            expected_props = {} if qos == 2 else None  # QoS 2 takes paho's path, which builds Properties
        expected.append((topic, payload, qos, retain, dup, mid if qos else 0, expected_props))
    return (mqtt.MQTTv5 if v5 else mqtt.MQTTv311), b"".join(stream), expected, b"".join(answers)


@hypothesis_settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(broker_streams(), st.data())
def test_a_stream_received_in_pieces_split_anywhere_yields_every_message_and_acknowledgement(stream, data):
    protocol, sent, expected, answers = stream
    splits = sorted(data.draw(st.lists(st.integers(0, len(sent)), max_size=10), label="splits"))
    broker = SocketPairBroker(protocol)
    try:
        for a, b in zip([0, *splits], [*splits, len(sent)]):
            assert broker.deliver(sent[a:b]) == MQTTErrorCode.MQTT_ERR_AGAIN
        assert [fields(m) for m in broker.received] == expected
        assert bytes(broker.from_client) == answers
    finally:
        broker.close()


def test_a_stream_received_one_byte_at_a_time_yields_every_message(pair_v5):
    messages = [("a", b"", 0), ("b/ü", b"x" * 300, 1), ("c", b"y" * 20_000, 0)]
    packets = [encode_publish(t, p, q, i + 1) for i, (t, p, q) in enumerate(messages)]
    ends = [sum(map(len, packets[:i + 1])) for i in range(len(packets))]
    stream = b"".join(packets)
    for i in range(len(stream)):
        assert pair_v5.deliver(stream[i:i + 1]) == MQTTErrorCode.MQTT_ERR_AGAIN
        # each message as soon as its last byte is in, not before and not later
        assert len(pair_v5.received) == sum(end <= i + 1 for end in ends)
    assert [(m.topic, m.payload, m.qos) for m in pair_v5.received] == messages
    assert bytes(pair_v5.from_client) == ack(0x40, 2)


def test_several_packets_in_one_recv_are_all_handled(pair_v5):
    stream = b"".join(encode_publish(f"t/{i}", str(i).encode(), 1, i + 1) for i in range(200))
    assert len(stream) < READ_SIZE
    assert pair_v5.deliver(stream) == MQTTErrorCode.MQTT_ERR_AGAIN
    assert [m.payload for m in pair_v5.received] == [str(i).encode() for i in range(200)]
    assert bytes(pair_v5.from_client) == b"".join(ack(0x40, i + 1) for i in range(200))


@pytest.mark.parametrize("old_bytes", [1, 2, 3, 50], ids=["first-byte", "half-length", "length", "some-body"])
def test_a_new_socket_discards_what_was_left_of_the_old_one(pair_v5, old_bytes):
    cut_off = encode_publish("old", b"o" * 200, 1, 1)  # length 2 bytes: 3 bytes of header
    assert pair_v5.deliver(cut_off[:old_bytes]) == MQTTErrorCode.MQTT_ERR_AGAIN
    pair_v5.plug_new_socket()
    assert pair_v5.deliver(encode_publish("new", b"n" * 10, 1, 9)) == MQTTErrorCode.MQTT_ERR_AGAIN
    assert [(m.topic, m.payload, m.mid) for m in pair_v5.received] == [("new", b"n" * 10, 9)]
    assert bytes(pair_v5.from_client) == ack(0x40, 9)


def test_with_manual_ack_the_fast_path_leaves_the_acknowledgement_to_the_application():
    broker = SocketPairBroker(mqtt.MQTTv5, manual_ack=True)
    try:
        assert broker.deliver(encode_publish("t", b"x", 1, 5)) == MQTTErrorCode.MQTT_ERR_AGAIN
        assert [m.mid for m in broker.received] == [5] and broker.received[0].properties is None
        assert bytes(broker.from_client) == b""
        broker.client.ack(5, 1)
        broker._take_what_the_client_sent()
        assert bytes(broker.from_client) == ack(0x40, 5)
    finally:
        broker.close()


@pytest.mark.parametrize("packet", [
    pytest.param(b"\x30\xff\xff\xff\xff\x01", id="five-byte-length"),
    pytest.param(encode_packet(0x36, b"\x00\x01t\x00\x01\x00x"), id="qos3-publish"),
    pytest.param(encode_packet(0x32, b"\x00\x09t"), id="topic-past-the-body"),
    pytest.param(encode_packet(0x34, b"\x00\x09t"), id="qos2-topic-past-the-body"),  # paho's path
    pytest.param(encode_packet(0x30, b"\x00\x01t"), id="v5-without-property-length"),
    pytest.param(encode_packet(0x30, b"\x00\x01t\x02\x01\x05x"), id="bad-property-for-paho"),  # format indicator 5
])
def test_a_malformed_packet_is_a_protocol_error_not_an_exception(pair_v5, packet):
    assert pair_v5.deliver(encode_publish("ok", b"before", 0, 0)) == MQTTErrorCode.MQTT_ERR_AGAIN
    assert pair_v5.deliver(packet) == MQTTErrorCode.MQTT_ERR_PROTOCOL
    assert [m.payload for m in pair_v5.received] == [b"before"]


def test_nothing_after_a_disconnect_from_the_broker_is_handled(pair_v5):
    disconnects = []
    pair_v5.client.on_disconnect = lambda c, u, flags, reason, props: disconnects.append(str(reason))
    taken_over = b"\xe0\x01\x8e"  # DISCONNECT, reason 0x8E: session taken over (3.14.2.1)
    stream = encode_publish("t", b"before", 0, 0) + taken_over + encode_publish("t", b"after", 0, 0)
    assert pair_v5.deliver(stream) == MQTTErrorCode.MQTT_ERR_CONN_LOST  # its socket closed by paho
    assert disconnects == ["Session taken over"]
    assert [m.payload for m in pair_v5.received] == [b"before"]


def test_the_end_of_the_connection_is_reported_as_lost(pair_v5):
    pair_v5.end.close()
    assert pair_v5.client._packet_read() == MQTTErrorCode.MQTT_ERR_CONN_LOST


# -- the paho release and the private members the reader relies on ------------------------------


def private_names_of_the_reader() -> tuple[set[str], set[str]]:
    """(paho's private members the reader overrides or uses, the reader's own private attributes),
    read from its source: every ``_name`` defined in ReadAheadClient or reached through ``self`` or
    ``super()``; its own are those its ``__init__`` assigns."""
    tree = ast.parse(inspect.getsource(mqtt_reader))
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == ReadAheadClient.__name__)
    used = {n.name for n in cls.body if isinstance(n, ast.FunctionDef)
            and n.name.startswith("_") and not n.name.startswith("__")}
    used |= {n.attr for n in ast.walk(cls) if isinstance(n, ast.Attribute)
             and n.attr.startswith("_") and not n.attr.startswith("__")
             and (isinstance(n.value, ast.Name) and n.value.id == "self" or isinstance(n.value, ast.Call))}
    init = next(n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "__init__")
    targets = [t for n in ast.walk(init) if isinstance(n, ast.Assign) for t in n.targets]
    targets += [n.target for n in ast.walk(init) if isinstance(n, ast.AnnAssign)]
    own = {t.attr for t in targets if isinstance(t, ast.Attribute)}
    return used - own, own


def stated_in_the_docstring(start: str, end: str) -> set[str]:
    doc = mqtt_reader.__doc__
    return set(re.findall(r"``(_\w+)``", doc[doc.index(start):doc.index(end)]))


def stock_client() -> mqtt.Client:
    return mqtt.Client(CallbackAPIVersion.VERSION2, client_id="stock", protocol=mqtt.MQTTv5)


def test_the_installed_paho_is_a_release_the_reader_was_checked_against():
    installed = importlib.metadata.version("paho-mqtt")
    assert installed in CHECKED_PAHO, (
        f"paho-mqtt {installed} is not in CHECKED_PAHO {CHECKED_PAHO}: read the private members listed in "
        "connectors/mqtt_reader.py in its client.py before adding it")


def test_the_docstring_lists_exactly_the_private_members_the_reader_touches():
    paho_members, own = private_names_of_the_reader()
    assert len(paho_members) == 14  # two overridden, twelve used, as the docstring says
    assert stated_in_the_docstring("What it takes from paho's internals", "Its own attributes") == paho_members
    assert stated_in_the_docstring("Its own attributes", ":data:`CHECKED_PAHO`") == own


def test_every_private_member_the_reader_touches_exists_on_the_installed_paho_client():
    paho_members, own = private_names_of_the_reader()
    stock = stock_client()
    assert sorted(name for name in paho_members if not hasattr(stock, name)) == []
    assert sorted(name for name in own if hasattr(stock, name)) == []  # nothing of paho's is shadowed


def test_between_packets_the_reader_leaves_in_packet_as_paho_does():
    assert mqtt_reader._idle_packet() == stock_client()._in_packet


def test_received_bytes_feed_the_keep_alive_clock(pair_v5):
    pair_v5.client._last_bytes_received = 0.0
    assert pair_v5.deliver(encode_publish("t", b"x", 0, 0)) == MQTTErrorCode.MQTT_ERR_AGAIN
    assert pair_v5.client._last_bytes_received > 0.0
