"""The bridge over MQTT TLS with client certificates, against a real mosquitto."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import shutil
import ssl
import subprocess
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from paho.mqtt.enums import CallbackAPIVersion

from guardstream.catalog import TOPICS
from guardstream.infra.stack import free_port, tcp_accepts, wait_until
from support.processes import collect

MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.access("/usr/sbin/mosquitto", os.X_OK) else None)
pytestmark = pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto is not installed (the TLS test configures it)")


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _issue(subject: str, issuer_key, issuer_name, *, ca: bool = False, san: bool = False):
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(issuer_name or _name(subject))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
    cert = builder.sign(issuer_key or key, hashes.SHA256())
    return key, cert


def _write(path: Path, key, cert) -> tuple[Path, Path]:
    key_path, cert_path = path.with_suffix(".key"), path.with_suffix(".pem")
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


@pytest.fixture
def tls_broker(tmp_path):
    ca_key, ca_cert = _issue("guardstream test CA", None, None, ca=True)
    _, ca_file = _write(tmp_path / "ca", ca_key, ca_cert)
    server = _write(tmp_path / "server", *_issue("localhost", ca_key, ca_cert.subject, san=True))
    client = _write(tmp_path / "client", *_issue("bridge", ca_key, ca_cert.subject))
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


def test_the_bridge_forwards_over_tls_with_a_client_certificate(applied, run_component, unique, tls_broker):
    port, ca_file, (client_key, client_cert) = tls_broker
    settings = applied.replace(mqtt_url=f"mqtts://127.0.0.1:{port}", mqtt_ca_file=str(ca_file),
                               mqtt_client_cert=str(client_cert), mqtt_client_key=str(client_key))
    run_component(["bridge"], settings, GUARDSTREAM_BRIDGE_ID=f"b-{unique}",
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
