"""A paho client that reads ahead: the bridge's MQTT receive path, made cheaper.

Stock paho (2.0-2.2) reads a packet with at least three ``recv`` calls (its
first byte, each byte of its length, its body) and handles one packet per
``select`` wake-up at QoS 0; it also builds an MQTT 5 ``Properties`` object for
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

It overrides two of paho's private methods, ``_packet_read`` and
``_handle_publish``, whose contract (``_in_packet``, ``_packet_handle``,
``_handle_on_message``) is the same in paho 2.0, 2.1 and 2.2. The dependency is
held to 2.2.x, and ``tests/connectors/test_mqtt_reader.py`` checks every message
field against stock paho on a real broker, so a paho release that changes them
fails there, not in the field.
"""

from __future__ import annotations

import time

import paho.mqtt.client as mqtt
from paho.mqtt.client import MQTTErrorCode, MQTTMessage
from paho.mqtt.properties import MalformedPacket as PahoMalformedPacket  # its home in paho 2.0-2.2

from guardstream.connectors.mqtt_wire import MalformedPacket, PacketBuffer, read_publish

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

