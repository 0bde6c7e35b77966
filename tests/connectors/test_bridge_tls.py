"""The bridge over MQTT TLS with client certificates, against a real mosquitto."""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from guardstream.catalog import TOPICS
from guardstream.infra.stack import free_port, tcp_accepts, wait_until
from support.processes import collect
from support.tls import issue, make_ca, write

MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.access("/usr/sbin/mosquitto", os.X_OK) else None)
pytestmark = pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto is not installed (the TLS test configures it)")


@pytest.fixture
def tls_broker(tmp_path):
    ca_key, ca_cert, ca_file = make_ca(tmp_path)
    server = write(tmp_path / "server", *issue("localhost", ca_key, ca_cert.subject, san=True))
    client = write(tmp_path / "client", *issue("bridge", ca_key, ca_cert.subject))
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\ncafile {ca_file}\ncertfile {server[1]}\nkeyfile {server[0]}\n"
                    "require_certificate true\nuse_identity_as_username true\nallow_anonymous false\n"
                    # as root, mosquitto would drop to its own user, who cannot read the test folder
                    "user root\npersistence false\nlog_dest stderr\n")
    process = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL,
                               stderr=(tmp_path / "mosquitto.log").open("w"))
    wait_until(lambda: tcp_accepts("127.0.0.1", port), 20, "TLS mosquitto")
    yield port, ca_file, client
    process.terminate()
    process.wait(10)


def test_the_bridge_forwards_over_tls_with_a_client_certificate(applied, run_component, unique, tls_broker,
                                                               tmp_path):
    """On the production profile, which refuses mqtt://: the test broker speaks Kafka in clear only,
    so that link alone runs under the logged escape."""
    port, ca_file, (client_key, client_cert) = tls_broker
    settings = applied.replace(mqtt_url=f"mqtts://127.0.0.1:{port}", mqtt_ca_file=str(ca_file),
                               mqtt_client_cert=str(client_cert), mqtt_client_key=str(client_key),
                               profile="production", allow_plaintext=True)
    bridge = run_component(["bridge"], settings, GUARDSTREAM_BRIDGE_ID=f"b-{unique}",
                           GUARDSTREAM_BRIDGE_SHARED_GROUP=f"g-{unique}")

    device = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"dev-{unique}", protocol=mqtt.MQTTv5)
    device.tls_set(ca_certs=str(ca_file), certfile=str(client_cert), keyfile=str(client_key),
                   cert_reqs=ssl.CERT_REQUIRED)
    device.connect("127.0.0.1", port)
    device.loop_start()
    payload = json.dumps({"ts": 1795000000, "lat": 52.52, "lon": 13.4}).encode()
    device.publish(f"guard/tls-{unique}/gps", payload, qos=1).wait_for_publish(10)
    [record] = collect(applied, TOPICS.raw_guard.name, lambda r: r.key() == f"tls-{unique}".encode(), 1)
    assert record.value() == payload
    device.loop_stop()
    log = bridge.log.read_text()
    assert "GUARDSTREAM_ALLOW_PLAINTEXT=1: running in clear" in log and "(KAFKA_SECURITY_PROTOCOL)" in log
    assert "(MQTT_URL)" not in log
