"""The gateway on the production profile: refused in clear, served over TLS (wss:// and https://)."""

from __future__ import annotations

import asyncio
import ssl
import urllib.error
import urllib.request

from gateway_support import GatewayProcess, start_gateway, subscribe, token
from support.tls import issue, make_ca, write
from websockets.asyncio.client import connect


def test_a_production_gateway_serves_the_dashboard_and_the_feed_over_tls(applied, tmp_path):
    ca_key, ca_cert, ca_file = make_ca(tmp_path)
    key, cert = write(tmp_path / "gateway", *issue("localhost", ca_key, ca_cert.subject, san=True))
    # the test broker speaks Kafka in clear only: that link alone runs under the logged escape
    settings = applied.replace(profile="production", allow_plaintext=True)
    gateway: GatewayProcess = start_gateway(settings, tmp_path / "gateway.log",
                                            GUARDSTREAM_GATEWAY_TLS_CERT=str(cert),
                                            GUARDSTREAM_GATEWAY_TLS_KEY=str(key),
                                            GUARDSTREAM_JWT_ISSUER="https://idp.example")
    try:
        trust = ssl.create_default_context(cafile=str(ca_file))
        with urllib.request.urlopen(f"https://127.0.0.1:{gateway.port}/", context=trust, timeout=10) as page:
            assert page.status == 200 and b"<html" in page.read(2000).lower()

        async def feed() -> dict:
            async with connect(f"wss://127.0.0.1:{gateway.port}/ws", ssl=trust, open_timeout=10,
                               additional_headers={"Authorization": f"Bearer {token(issuer='https://idp.example')}"}) as conn:
                return await subscribe(conn, ["tenant:acme:alerts"])
        assert asyncio.run(feed())["type"] == "subscribed"

        untrusted = ssl.create_default_context()  # the system's CAs do not know the test CA
        try:
            urllib.request.urlopen(f"https://127.0.0.1:{gateway.port}/", context=untrusted, timeout=10)
            raise AssertionError("a client that does not trust the certificate got through")
        except urllib.error.URLError as exc:
            assert isinstance(exc.reason, ssl.SSLCertVerificationError)
        log = gateway.component.log.read_text()
        assert "(KAFKA_SECURITY_PROTOCOL)" in log and "(GUARDSTREAM_GATEWAY_TLS_CERT)" not in log
    finally:
        gateway.stop()
