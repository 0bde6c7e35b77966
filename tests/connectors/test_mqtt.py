"""MQTT clients built from the settings, against the session's real broker."""

import socket
import threading

from guardstream.connectors.mqtt import connect, new_client


def test_clients_send_small_packets_at_once(settings, unique):
    client = new_client(settings, f"nodelay-{unique}")
    connected = threading.Event()
    client.on_connect = lambda *args: connected.set()
    connect(client, settings)
    client.loop_start()
    try:
        assert connected.wait(10), "not connected"
        sock = client.socket()
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        client.disconnect()
        client.loop_stop()
