"""A paho client that reads ahead: the bridge's MQTT receive path, made cheaper.

Stock paho reads a packet with at least three ``recv`` calls (its first byte,
each byte of its length, its body) and handles one packet per ``select``
wake-up at QoS 0; it also builds an MQTT 5 ``Properties`` object for
every PUBLISH, which costs more than the rest of the parsing together when the
packet carries no properties at all, as device telemetry does. Measured with
cProfile on a bare subscriber: ``Properties`` took 3.6 s of 16.4 s.

:class:`ReadAheadClient` keeps paho for everything else (connecting, TLS,
sessions, keep-alive, acknowledgements, QoS 2, reconnecting) and changes only
how bytes become packets:

* one ``recv`` of up to :data:`READ_SIZE` bytes per call, cut into every
  complete packet it holds; the incomplete rest waits for the next ``recv``
  (``mqtt_wire.PacketBuffer``);
* a QoS 0 or 1 PUBLISH without properties is read by ``mqtt_wire.read_publish``
  and handed on with ``properties`` None; one with properties, and every QoS 2
  PUBLISH, goes through paho's own handling unchanged.

It also acknowledges many QoS 1 messages at once (:meth:`ReadAheadClient.ack_many`):
paho's ``ack`` queues one PUBACK per message, and in threaded mode each costs a write to
its wake-up socket and a ``send`` of its own; one packet of many PUBACKs costs one each.

What it takes from paho's internals, as paho 2.2.0's ``paho/mqtt/client.py``
has them (two private methods replaced, twelve private members used):

* overrides ``_packet_read`` (read what the socket holds, hand on each packet) and
  ``_handle_publish`` (the fast path; it falls back to paho's own through ``super()``);
* calls ``_packet_queue`` (queue bytes for paho's writer: :meth:`ReadAheadClient.ack_many`),
  ``_sock_recv`` (one ``recv``, through paho's TLS handling), ``_packet_handle``
  (paho's dispatch by packet type), ``_handle_on_message`` (paho's callbacks),
  ``_send_puback`` and ``_easy_log``;
* reads ``_sock`` (the current connection), ``_protocol`` (MQTT 5 or not) and ``_manual_ack``;
* reads and writes ``_in_packet``, the packet paho's handlers read (its eight keys
  as paho sets them), and writes ``_last_bytes_received`` under ``_msgtime_mutex``:
  paho 2.2 times keep-alives from it.

Its own attributes, ``_read_sock`` and ``_buffer``, are names paho does not use.

:data:`CHECKED_PAHO` names the paho releases whose source was read against that
list, and the dependency is pinned to them. ``tests/connectors/test_mqtt_reader.py``
fails on any other release and on any member above that the installed client
lacks, and checks every message field against stock paho on a real broker. Paho
keeps no promise about these names between releases: 2.0 and 2.1 time keep-alives
from ``_last_msg_in`` (this reader would leave it unfed), parse packets inside
their handlers rather than in ``paho.mqtt._packet``, and keep ``MalformedPacket``
in ``paho.mqtt.properties``. Before adding a release to :data:`CHECKED_PAHO`,
read the list above in its source.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Iterable

import paho.mqtt.client as mqtt
from paho.mqtt.client import MQTTErrorCode, MQTTMessage
from paho.mqtt.exception import MalformedPacket as PahoMalformedPacket

from guardstream.connectors.mqtt_wire import MalformedPacket, PacketBuffer, read_publish

# The paho releases whose client.py was read against the list of private members above.
CHECKED_PAHO = ("2.2.0",)

# A PUBACK of MQTT 3.1.1 and 5 without reason code or properties (3.4; 5's 3.4.2.1: success)
_PUBACK = struct.Struct("!BBH")

# One recv takes this much at most: about 500 telemetry messages, or a 16 KiB TLS record.
READ_SIZE = 64 * 1024


def _idle_packet() -> dict:
    """paho's ``_in_packet`` between packets, so that its own reader could take over."""
    return {"command": 0, "have_remaining": 0, "remaining_count": [], "remaining_mult": 1,
            "remaining_length": 0, "to_process": 0, "packet": bytearray(b""), "pos": 0}


class ReadAheadClient(mqtt.Client):
    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._read_sock: object = None  # the socket the buffered bytes came from
        self._buffer = PacketBuffer()

    def _packet_read(self) -> MQTTErrorCode:
        sock = self._sock
        if sock is not self._read_sock:  # a new connection: nothing of the last one carries over
            self._read_sock, self._buffer = sock, PacketBuffer()
        try:
            data = self._sock_recv(READ_SIZE)
        except BlockingIOError:
            return MQTTErrorCode.MQTT_ERR_AGAIN
        except OSError as err:  # TimeoutError included
            self._easy_log(mqtt.MQTT_LOG_ERR, "failed to receive on socket: %s", err)
            return MQTTErrorCode.MQTT_ERR_CONN_LOST
        if not data:
            return MQTTErrorCode.MQTT_ERR_CONN_LOST
        with self._msgtime_mutex:
            self._last_bytes_received = time.monotonic()
        packets, malformed = self._buffer.feed(data)
        for first, body in packets:
            self._in_packet = {"command": first, "have_remaining": 1, "remaining_count": [],
                               "remaining_mult": 1, "remaining_length": len(body), "to_process": 0,
                               "packet": body, "pos": 0}
            try:
                rc = self._packet_handle()
            except (MalformedPacket, PahoMalformedPacket) as exc:
                self._easy_log(mqtt.MQTT_LOG_ERR, "malformed packet from the broker: %s", exc)
                rc = MQTTErrorCode.MQTT_ERR_PROTOCOL
            if rc:
                return rc
            if self._sock is not sock:
                break  # the connection closed under a callback: what follows is for no one
        self._in_packet = _idle_packet()
        if malformed:
            self._easy_log(mqtt.MQTT_LOG_ERR, "malformed packet from the broker: %s", malformed)
            return MQTTErrorCode.MQTT_ERR_PROTOCOL
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def _handle_publish(self) -> MQTTErrorCode:
        first, body = self._in_packet["command"], self._in_packet["packet"]
        if first & 0x06 == 0x04:
            return super()._handle_publish()  # QoS 2: paho's PUBREC/PUBREL exchange
        publish = read_publish(first, body, self._protocol == mqtt.MQTTv5)
        if publish.properties:
            return super()._handle_publish()  # paho reads content type, user properties, topic alias
        message = MQTTMessage(publish.mid, publish.topic)
        message.dup = publish.dup
        message.qos = publish.qos
        message.retain = publish.retain
        message.payload = publish.payload
        message.timestamp = time.monotonic()
        self._handle_on_message(message)
        if publish.qos and not self._manual_ack:
            return self._send_puback(publish.mid)
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def ack_many(self, mids: Iterable[int]) -> MQTTErrorCode:
        """PUBACKs for the QoS 1 messages ``mids``, in that order, queued as one write."""
        data = b"".join([_PUBACK.pack(mqtt.PUBACK, 2, mid) for mid in mids])
        if not data:
            return MQTTErrorCode.MQTT_ERR_SUCCESS
        return self._packet_queue(mqtt.PUBACK, data, 0, 0)
