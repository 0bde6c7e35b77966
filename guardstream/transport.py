"""Production runs encrypted: a component refuses to start over plaintext Kafka, MQTT or HTTP.

The embedded profile (the local stack, the tests) runs on loopback and is left
alone. On the production profile each component names the connections it makes
(``uses``), and :func:`plaintext_links` says which of them would travel in clear,
each as (setting to change, why). ``GUARDSTREAM_ALLOW_PLAINTEXT=1`` is the
explicit escape, logged at start-up; ``GUARDSTREAM_GATEWAY_TLS_PROXY=1`` says the
gateway listens in clear behind a proxy that terminates TLS for it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

from guardstream.errors import ConfigError
from guardstream.settings import Settings

KAFKA, MQTT, GATEWAY = "kafka", "mqtt", "gateway"
ESCAPE = "GUARDSTREAM_ALLOW_PLAINTEXT"

log = logging.getLogger("guardstream.transport")


def plaintext_links(settings: Settings, uses: Iterable[str]) -> list[tuple[str, str]]:
    """[(setting, why)] for each connection in ``uses`` that is not encrypted; empty off production."""
    if settings.embedded:
        return []
    found: list[tuple[str, str]] = []
    wanted = set(uses)
    if KAFKA in wanted and settings.kafka_security_protocol not in ("ssl", "sasl_ssl"):
        found.append(("KAFKA_SECURITY_PROTOCOL", f"Kafka over {settings.kafka_security_protocol} is not "
                      "encrypted; use ssl or sasl_ssl"))
    if MQTT in wanted and settings.mqtt_url.split("://", 1)[0] in ("mqtt", "tcp"):
        found.append(("MQTT_URL", "MQTT without TLS; use mqtts:// (or ssl://)"))
    if GATEWAY in wanted and settings.gateway_tls_cert is None and not settings.gateway_tls_proxy:
        found.append(("GUARDSTREAM_GATEWAY_TLS_CERT", "the gateway would serve tokens and events over plain "
                      "HTTP/WebSocket; give it a certificate, or set GUARDSTREAM_GATEWAY_TLS_PROXY=1 when a "
                      "proxy terminates TLS in front of it"))
    return found


def require_encryption(settings: Settings, uses: Iterable[str]) -> None:
    """Refuse (a :class:`ConfigError` naming the first setting) or, with the escape, log each link."""
    links = plaintext_links(settings, uses)
    if not links:
        return
    if settings.allow_plaintext:
        for setting, why in links:
            log.warning("%s=1: running in clear on the production profile: %s (%s)", ESCAPE, why, setting)
        return
    setting, why = links[0]
    raise ConfigError(setting, f"{why} (production profile; {ESCAPE}=1 runs in clear anyway)")


def component_settings(*uses: str, environ: Mapping[str, str] | None = None) -> Settings:
    """The settings of a component that makes the connections ``uses``, checked for encryption."""
    settings = Settings.from_env(environ)
    require_encryption(settings, uses)
    return settings
