"""MQTT clients built from the settings: protocol, TLS, credentials, session.

The bridge, the command relay and the simulator all connect through here, so
``MQTT_URL``, ``MQTT_CA_FILE`` and the client certificate reach each of them.
"""

from __future__ import annotations

import logging
import socket
import ssl
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from guardstream.connectors.mqtt_reader import ReadAheadClient
from guardstream.errors import UnavailableError
from guardstream.settings import Settings

log = logging.getLogger("guardstream.mqtt")


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    tls: bool
    username: str | None
    password: str | None


def endpoint(settings: Settings) -> Endpoint:
    parts = urlsplit(settings.mqtt_url)
    tls = parts.scheme in ("mqtts", "ssl")
    return Endpoint(parts.hostname or "", parts.port or (8883 if tls else 1883), tls,
                    unquote(parts.username) if parts.username else None,
                    unquote(parts.password) if parts.password else None)


def is_v5(settings: Settings) -> bool:
    return settings.mqtt_protocol == "5"


def new_client(settings: Settings, client_id: str, *, manual_ack: bool = False,
               persistent: bool = False) -> mqtt.Client:
    """A paho client (callback API v2, reading ahead: ``mqtt_reader.py``) with TLS and
    credentials applied; not yet connected.

    ``persistent`` asks the broker to keep the session (subscriptions and
    unacknowledged messages) across disconnects: clean session off in 3.1.1,
    clean start off with a session expiry in 5.
    """
    v5 = is_v5(settings)
    client = ReadAheadClient(CallbackAPIVersion.VERSION2, client_id=client_id,
                             protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
                             clean_session=None if v5 else not persistent, manual_ack=manual_ack)
    ep = endpoint(settings)
    if ep.username:
        client.username_pw_set(ep.username, ep.password)
    if ep.tls:
        client.tls_set(ca_certs=settings.mqtt_ca_file, certfile=settings.mqtt_client_cert,
                       keyfile=settings.mqtt_client_key, cert_reqs=ssl.CERT_REQUIRED)
    client.reconnect_delay_set(min_delay=1, max_delay=30)
    client.on_socket_open = _send_at_once
    return client


def _send_at_once(client: mqtt.Client, userdata: object, sock: object) -> None:
    """TCP_NODELAY: an acknowledgement or an alert is a small packet, and Nagle's
    algorithm would hold it until the previous one is acknowledged. (The broker's side
    of the same change, mosquitto's ``set_tcp_nodelay``, took the local stack's p50
    publish -> bridge receipt from 11 ms to under 1 ms.)"""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # type: ignore[attr-defined]
    except (AttributeError, OSError) as exc:
        # not a TCP socket (a WebSocket transport or a proxy): nothing to tune, and nothing wrong
        log.debug("TCP_NODELAY not set on the MQTT socket: %s", exc)


def connect(client: mqtt.Client, settings: Settings, *, persistent: bool = False,
            receive_maximum: int | None = None, keepalive: int = 30) -> None:
    """Start connecting (the network loop finishes it and reconnects on its own)."""
    ep = endpoint(settings)
    properties = None
    kwargs = {}
    if is_v5(settings):
        properties = Properties(PacketTypes.CONNECT)
        if persistent:
            properties.SessionExpiryInterval = settings.mqtt_session_expiry_s
        if receive_maximum:
            # the broker sends at most this many unacknowledged QoS 1/2 messages
            properties.ReceiveMaximum = receive_maximum
        kwargs["clean_start"] = not persistent
    try:
        client.connect_async(ep.host, ep.port, keepalive=keepalive, properties=properties, **kwargs)
    except (OSError, ValueError) as exc:
        raise UnavailableError(f"MQTT broker {ep.host}:{ep.port}: {exc}") from exc
