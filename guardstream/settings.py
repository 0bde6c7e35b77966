"""Settings: one frozen object, built once from the environment at start-up.

Conventional names are used where they exist (``KAFKA_BOOTSTRAP_SERVERS``,
``DATABASE_URL``, ``MQTT_URL``, ``SCHEMA_REGISTRY_URL``, ``KAFKA_SECURITY_PROTOCOL``
...); everything else is ``GUARDSTREAM_*``. A bad value stops start-up with one
line naming the variable (:class:`ConfigError`); an unknown ``GUARDSTREAM_*``
variable is refused the same way, so a typo never silently falls back to a default.

No other module reads the environment or holds a host or port literal.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from guardstream.errors import ConfigError


class Secret(str):
    """A string that never shows itself in a repr, a log line or a traceback."""

    def __repr__(self) -> str:
        return "Secret('***')" if self else "Secret('')"

    def reveal(self) -> str:
        return str.__str__(self)


def masked_url(url: str) -> str:
    """``url`` fit to print: its password, in the user part or in a ``password=`` query parameter, as ``***``."""
    parts = urlsplit(url)
    shown = url
    if parts.password is not None:
        userinfo, _, hostport = parts.netloc.rpartition("@")
        shown = shown.replace(f"//{parts.netloc}", f"//{userinfo.split(':', 1)[0]}:***@{hostport}", 1)
    if "password" in parts.query:
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        query = urlencode([(k, "***" if k == "password" else v) for k, v in pairs], safe="*/:")
        shown = shown.partition("?")[0] + "?" + query + (f"#{parts.fragment}" if parts.fragment else "")
    return shown


PROFILES = ("embedded", "production")


# -- parsers: each takes the raw text and returns the value or raises ValueError ----

def _text(raw: str) -> str:
    return raw.strip()


def _secret(raw: str) -> Secret:
    return Secret(raw)


def _int_range(lo: int, hi: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        value = int(raw.strip())
        if not lo <= value <= hi:
            raise ValueError(f"must be between {lo} and {hi}, got {value}")
        return value
    return parse


def _positive_float(raw: str) -> float:
    value = float(raw.strip())
    if not value > 0 or value != value or value == float("inf"):
        raise ValueError(f"must be a positive number, got {raw!r}")
    return value


def _bool(raw: str) -> bool:
    text = raw.strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"must be true or false, got {raw!r}")


def _choice(*options: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        text = raw.strip().lower()
        if text not in options:
            raise ValueError(f"must be one of {', '.join(options)}, got {raw!r}")
        return text
    return parse


def _host_port_list(raw: str) -> str:
    parts = [p.strip() for p in raw.split(",") if p.strip()]
    if not parts:
        raise ValueError("must list at least one host:port")
    for part in parts:
        host, sep, port = part.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{part!r} is not host:port")
    return ",".join(parts)


def _url(*schemes: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        text = raw.strip()
        parts = urlsplit(text)
        if parts.scheme not in schemes:
            raise ValueError(f"scheme must be one of {', '.join(schemes)}, got {text!r}")
        try:
            port = parts.port
        except ValueError as exc:
            raise ValueError(f"bad port in {text!r}") from exc
        if not parts.hostname and not (parts.scheme.startswith("postgres") and parts.query):
            raise ValueError(f"no host in {text!r}")
        if port is not None and not 0 < port < 65536:
            raise ValueError(f"bad port in {text!r}")
        return text
    return parse


def _optional(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    def wrapped(raw: str) -> Any:
        return None if raw.strip() == "" else parse(raw)
    return wrapped


def _path(raw: str) -> Path:
    return Path(raw.strip()).expanduser()


def _named_urls(raw: str) -> str:
    """``name=http://host:port,...``; returned normalised, as text, so ``as_env`` round-trips it."""
    pairs = []
    for part in (p.strip() for p in raw.split(",")):
        if not part:
            continue
        name, sep, url = part.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"{part!r} is not name=url")
        pairs.append(f"{name.strip()}={_url('http', 'https')(url)}")
    return ",".join(pairs)


def _urls(raw: str) -> str:
    """``http://host:port,...``; returned normalised, as text, so ``as_env`` round-trips it."""
    return ",".join(_url("http", "https")(part.strip()) for part in raw.split(",") if part.strip())


@dataclass(frozen=True)
class Var:
    env: str
    parse: Callable[[str], Any]
    default: Any
    doc: str


DEFAULT_STATE_DIR = Path(".state")


def _var(env: str, parse: Callable[[str], Any], default: Any, doc: str) -> Any:
    return field(default=default, metadata={"var": Var(env, parse, default, doc)})


@dataclass(frozen=True)
class Settings:
    """Every setting guardstream reads. Build with :meth:`from_env`."""

    profile: str = _var("GUARDSTREAM_PROFILE", _choice(*PROFILES), "production",
                        "embedded (local stack: short Kafka session timeouts, one replica) or production")
    kafka_bootstrap_servers: str = _var("KAFKA_BOOTSTRAP_SERVERS", _host_port_list, "127.0.0.1:9092",
                                        "Kafka brokers, comma-separated host:port")
    kafka_security_protocol: str = _var("KAFKA_SECURITY_PROTOCOL",
                                        _choice("plaintext", "ssl", "sasl_plaintext", "sasl_ssl"),
                                        "plaintext", "Kafka security.protocol")
    kafka_sasl_mechanism: str | None = _var("KAFKA_SASL_MECHANISM",
                                            _optional(_choice("plain", "scram-sha-256", "scram-sha-512")),
                                            None, "Kafka sasl.mechanism")
    kafka_sasl_username: str | None = _var("KAFKA_SASL_USERNAME", _optional(_text), None, "Kafka SASL user")
    kafka_sasl_password: Secret = _var("KAFKA_SASL_PASSWORD", _secret, Secret(""), "Kafka SASL password (secret)")
    kafka_ssl_ca_location: str | None = _var("KAFKA_SSL_CA_LOCATION", _optional(_text), None,
                                             "CA bundle for Kafka TLS")
    kafka_ssl_certificate_location: str | None = _var("KAFKA_SSL_CERTIFICATE_LOCATION", _optional(_text), None,
                                                      "client certificate for Kafka mTLS")
    kafka_ssl_key_location: str | None = _var("KAFKA_SSL_KEY_LOCATION", _optional(_text), None,
                                              "client key for Kafka mTLS")
    replication_factor: int | None = _var("GUARDSTREAM_REPLICATION_FACTOR", _optional(_int_range(1, 16)), None,
                                          "override the catalog's replication factor (1 on the embedded stack)")
    partitions_max: int | None = _var("GUARDSTREAM_PARTITIONS_MAX", _optional(_int_range(1, 10000)), None,
                                      "cap on the catalog's partition counts when topics are created "
                                      "(default: none; embedded: 1)")
    database_url: str = _var("DATABASE_URL", _url("postgresql", "postgres"),
                             "postgresql://postgres@127.0.0.1:5432/guardstream", "PostgreSQL connection URL")
    mqtt_url: str = _var("MQTT_URL", _url("mqtt", "mqtts", "tcp", "ssl"), "mqtt://127.0.0.1:1883",
                         "MQTT broker URL; mqtts:// for TLS; user:password@ for credentials")
    mqtt_ca_file: str | None = _var("MQTT_CA_FILE", _optional(_text), None, "CA bundle for MQTT TLS")
    mqtt_client_cert: str | None = _var("MQTT_CLIENT_CERT", _optional(_text), None, "client certificate for MQTT")
    mqtt_client_key: str | None = _var("MQTT_CLIENT_KEY", _optional(_text), None, "client key for MQTT")
    schema_registry_url: str | None = _var("SCHEMA_REGISTRY_URL", _optional(_url("http", "https")), None,
                                           "Confluent-compatible Schema Registry; unset: the registry file in schemas/")
    state_dir: Path = _var("GUARDSTREAM_STATE_DIR", _path, DEFAULT_STATE_DIR,
                           "where the local stack keeps its data, logs and pid files")
    metrics_host: str = _var("GUARDSTREAM_METRICS_HOST", _text, "127.0.0.1",
                             "address the /metrics, /healthz and /readyz endpoints bind to")
    metrics_port: int = _var("GUARDSTREAM_METRICS_PORT", _int_range(0, 65535), 9400,
                             "port of this component's /metrics endpoint (0: none)")
    log_level: str = _var("GUARDSTREAM_LOG_LEVEL", _choice("debug", "info", "warning", "error"), "info",
                          "log level")
    allow_plaintext: bool = _var("GUARDSTREAM_ALLOW_PLAINTEXT", _bool, False,
                                 "production profile: let components start over plaintext Kafka, mqtt:// or "
                                 "a gateway without TLS (logged at start-up); otherwise they refuse")
    tenant_default: str = _var("GUARDSTREAM_DEFAULT_TENANT", _text, "default",
                               "tenant of records that name none")
    unknown_devices: str | None = _var("GUARDSTREAM_UNKNOWN_DEVICES",
                                       _optional(_choice("dead_letter", "default_tenant")), None,
                                       "records of a device missing from the registry: dead_letter "
                                       "(unknown_device) or default_tenant (default: dead_letter; embedded: "
                                       "default_tenant)")

    # -- connectors ------------------------------------------------------------------
    mqtt_protocol: str = _var("GUARDSTREAM_MQTT_PROTOCOL", _choice("5", "3.1.1"), "5",
                              "MQTT protocol the bridge speaks (3.1.1 for brokers without MQTT 5)")
    mqtt_session_expiry_s: int = _var("GUARDSTREAM_MQTT_SESSION_EXPIRY_S", _int_range(60, 2**31 - 1), 86400,
                                      "how long the broker keeps the bridge's session (and unacked messages) "
                                      "while it is away")
    bridge_id: str = _var("GUARDSTREAM_BRIDGE_ID", _text, "bridge-1",
                          "stable id of this bridge instance: its MQTT client id and the bridge.id header")
    bridge_shared_group: str = _var("GUARDSTREAM_BRIDGE_SHARED_GROUP", _text, "guardstream-bridge",
                                    "MQTT 5 shared-subscription group that bridge instances split the load in "
                                    "(empty: plain subscriptions)")
    bridge_max_inflight: int = _var("GUARDSTREAM_BRIDGE_MAX_INFLIGHT", _int_range(1, 65535), 1000,
                                    "messages received from MQTT but not yet acknowledged by Kafka, at most")
    bridge_max_payload_bytes: int = _var("GUARDSTREAM_BRIDGE_MAX_PAYLOAD_BYTES", _int_range(1, 8 * 2**20),
                                         256 * 1024, "larger payloads become dead letters instead of raw records")
    bridge_linger_ms: int | None = _var("GUARDSTREAM_BRIDGE_LINGER_MS", _optional(_int_range(0, 1000)), None,
                                        "how long the bridge lets a record wait for others to share a produce "
                                        "request (throughput against latency; alerts never wait; default: "
                                        "10; embedded: 20)")
    bridge_user_properties_max: int = _var("GUARDSTREAM_BRIDGE_USER_PROPERTIES_MAX", _int_range(0, 1000), 32,
                                           "MQTT 5 user properties copied into a record's headers, at most "
                                           "(the rest are dropped and counted)")
    bridge_user_properties_bytes_max: int = _var("GUARDSTREAM_BRIDGE_USER_PROPERTIES_BYTES_MAX",
                                                 _int_range(0, 2**20), 8192,
                                                 "header bytes (names and values) of those user properties, "
                                                 "at most (the rest are dropped and counted)")
    bridge_rules: Path | None = _var("GUARDSTREAM_BRIDGE_RULES", _optional(_path), None,
                                     "TOML file of MQTT topic -> Kafka topic rules (default: the built-in rules)")
    bridge_broker_stats: bool = _var("GUARDSTREAM_BRIDGE_BROKER_STATS", _bool, True,
                                     "the bridge reads the MQTT broker's $SYS figures (mosquitto: messages it "
                                     "holds, messages it dropped) and exports them on its /metrics")
    mqtt_auth: bool = _var("GUARDSTREAM_MQTT_AUTH", _bool, False,
                           "local stack: mosquitto with passwords and an ACL from the device registry "
                           "(`guardstream mqtt acl`)")

    # -- lag exporter ----------------------------------------------------------------
    lag_interval_s: float | None = _var("GUARDSTREAM_LAG_INTERVAL_S", _optional(_positive_float), None,
                                        "seconds between consumer-lag collections (default: 10, embedded: 2)")
    lag_window: int = _var("GUARDSTREAM_LAG_WINDOW", _int_range(2, 1000), 10,
                           "offset observations per partition a consumer group's status is judged over")

    lag_bridge_metrics: str = _var("GUARDSTREAM_LAG_BRIDGE_METRICS", _urls, "",
                                   "bridges' metrics URLs (comma-separated) whose windows `guardstream lag` shows "
                                   "(besides a running local stack's bridge)")

    # -- operator tools --------------------------------------------------------------
    health_endpoints: str = _var("GUARDSTREAM_HEALTH_ENDPOINTS", _named_urls, "",
                                 "components `guardstream health` checks the /readyz of, as name=url,... "
                                 "(besides those of a running local stack)")

    # -- PostgreSQL sink -------------------------------------------------------------
    sink_group: str = _var("GUARDSTREAM_SINK_GROUP", _text, "guardstream-sink",
                           "consumer group of the sink's bulk consumer; the critical one uses <group>-critical")
    sink_critical_batch_rows: int = _var("GUARDSTREAM_SINK_CRITICAL_BATCH_ROWS", _int_range(1, 100_000), 50,
                                         "events.critical: rows per batch, at most")
    sink_critical_batch_ms: int = _var("GUARDSTREAM_SINK_CRITICAL_BATCH_MS", _int_range(1, 60_000), 20,
                                       "events.critical: milliseconds a row may wait for its batch, at most")
    sink_batch_rows: int = _var("GUARDSTREAM_SINK_BATCH_ROWS", _int_range(1, 1_000_000), 5000,
                                "other topics: rows per batch and per priority, at most")
    sink_batch_ms: int = _var("GUARDSTREAM_SINK_BATCH_MS", _int_range(1, 600_000), 500,
                              "other topics: milliseconds a row may wait for its batch, at most")
    sink_retry_max_ms: int = _var("GUARDSTREAM_SINK_RETRY_MAX_MS", _int_range(10, 600_000), 10_000,
                                  "longest wait between write attempts while PostgreSQL is unreachable")

    # -- stream worker -----------------------------------------------------------------
    worker_engine: str = _var("GUARDSTREAM_WORKER_ENGINE", _choice("batch", "faust"), "batch",
                              "batch (the Kafka client's batches, the faster) or faust (Faust agents)")
    worker_batch_max: int = _var("GUARDSTREAM_WORKER_BATCH_MAX", _int_range(1, 100_000), 2000,
                                 "raw records the stream worker takes per batch, at most")
    worker_batch_wait_ms: int = _var("GUARDSTREAM_WORKER_BATCH_WAIT_MS", _int_range(1, 10_000), 50,
                                     "how long the stream worker waits for the first record of a batch")
    worker_device_horizon_s: int = _var("GUARDSTREAM_WORKER_DEVICE_HORIZON_S", _int_range(60, 365 * 86400), 86400,
                                        "a device not heard from for this long is forgotten by the silent-device "
                                        "check (no DEVICE_SILENT for it); above device_silent.after_minutes")
    worker_exactly_once: bool = _var("GUARDSTREAM_WORKER_EXACTLY_ONCE", _bool, False,
                                     "write each checkpoint's events, state and input offsets in one Kafka "
                                     "transaction (needs a broker that filters aborted transactions)")
    worker_id: str = _var("GUARDSTREAM_WORKER_ID", _text, "worker-1",
                          "stable id of this worker instance: its transactional.id with exactly-once on")
    rules_file: Path | None = _var("GUARDSTREAM_RULES_FILE", _optional(_path), None,
                                   "alert rules (TOML; default: streams/rules_default.toml)")
    geofence_exit_margin_m: float = _var("GUARDSTREAM_GEOFENCE_EXIT_MARGIN_M", _positive_float, 25.0,
                                         "a fix this many metres outside a fence exits it at once")
    geofence_exit_fixes: int = _var("GUARDSTREAM_GEOFENCE_EXIT_FIXES", _int_range(1, 100), 3,
                                    "consecutive outside fixes (nearer than the margin) that exit a fence")
    geofence_max_accuracy_m: float = _var("GUARDSTREAM_GEOFENCE_MAX_ACCURACY_M", _positive_float, 100.0,
                                          "fixes less accurate than this never change fence state")

    # -- WebSocket gateway -------------------------------------------------------------
    gateway_host: str = _var("GUARDSTREAM_GATEWAY_HOST", _text, "127.0.0.1",
                             "address the WebSocket gateway and dashboard bind to")
    gateway_port: int = _var("GUARDSTREAM_GATEWAY_PORT", _int_range(1, 65535), 8765,
                             "port of the WebSocket gateway and dashboard")
    gateway_origins: str = _var("GUARDSTREAM_GATEWAY_ORIGINS", _text, "",
                                "browser origins allowed to connect, comma-separated (the dashboard's own: when "
                                "reached by IP address, localhost or GUARDSTREAM_GATEWAY_HOST)")
    gateway_tls_cert: Path | None = _var("GUARDSTREAM_GATEWAY_TLS_CERT", _optional(_path), None,
                                         "certificate chain (PEM) of the gateway; set with the key for wss:// and https://")
    gateway_tls_key: Path | None = _var("GUARDSTREAM_GATEWAY_TLS_KEY", _optional(_path), None,
                                        "private key (PEM) of the gateway certificate")
    gateway_rate_per_min: int = _var("GUARDSTREAM_GATEWAY_RATE_PER_MIN", _int_range(1, 1_000_000), 100,
                                     "messages a client may send per minute (token bucket of that size)")
    gateway_max_message_bytes: int = _var("GUARDSTREAM_GATEWAY_MAX_MESSAGE_BYTES", _int_range(128, 2**24), 65536,
                                          "largest message a client may send (larger: closed with 1009)")
    gateway_queue_max: int = _var("GUARDSTREAM_GATEWAY_QUEUE_MAX", _int_range(1, 1_000_000), 1000,
                                  "messages queued per client, at most, before positions conflate and others drop")
    gateway_send_buffer_bytes: int = _var("GUARDSTREAM_GATEWAY_SEND_BUFFER_BYTES", _int_range(4096, 2**26), 65536,
                                          "kernel send buffer per client: past it, a slow client's messages wait "
                                          "in its gateway queue, where they conflate")
    gateway_ping_interval_s: float = _var("GUARDSTREAM_GATEWAY_PING_INTERVAL_S", _positive_float, 20.0,
                                          "seconds between keep-alive pings; a client that misses a pong as long "
                                          "is disconnected")
    gateway_tls_proxy: bool = _var("GUARDSTREAM_GATEWAY_TLS_PROXY", _bool, False,
                                   "the gateway listens in clear behind a proxy that terminates TLS for it "
                                   "(production: allowed without a certificate)")
    jwt_secret: Secret = _var("GUARDSTREAM_JWT_SECRET", _secret, Secret(""),
                              "HS256 secret of client tokens (secret); embedded profile: generated when unset")
    jwt_public_key: Path | None = _var("GUARDSTREAM_JWT_PUBLIC_KEY", _optional(_path), None,
                                       "PEM public key file of RS256 client tokens")
    jwt_audience: str = _var("GUARDSTREAM_JWT_AUDIENCE", _text, "guardstream",
                             "audience (aud) client tokens must name")
    jwt_issuer: str | None = _var("GUARDSTREAM_JWT_ISSUER", _optional(_text), None,
                                  "issuer (iss) client tokens must name; required on the production profile "
                                  "(embedded, unset: any issuer)")
    jwt_max_lifetime_s: float = _var("GUARDSTREAM_JWT_MAX_LIFETIME_S", _positive_float, 86400.0,
                                     "longest a client token may be valid, from its iat (or nbf) to its exp")

    # -- notifier ------------------------------------------------------------------------
    notify_rules: Path | None = _var("GUARDSTREAM_NOTIFY_RULES", _optional(_path), None,
                                     "notification routing rules (TOML; default: notifier/rules_default.toml)")
    notify_group: str = _var("GUARDSTREAM_NOTIFY_GROUP", _text, "guardstream-notifier",
                             "consumer group of the notifier (events.critical and alerts.actions)")
    notify_max_attempts: int = _var("GUARDSTREAM_NOTIFY_MAX_ATTEMPTS", _int_range(1, 100), 8,
                                    "sends a notification gets before it becomes a dead letter on dlq.notify")
    notify_retry_base_ms: int = _var("GUARDSTREAM_NOTIFY_RETRY_BASE_MS", _int_range(1, 600_000), 1000,
                                     "wait after a notification's first failed send; doubled after each failure")
    notify_retry_max_ms: int = _var("GUARDSTREAM_NOTIFY_RETRY_MAX_MS", _int_range(1, 3_600_000), 60_000,
                                    "longest wait between two sends of one notification")
    notify_senders: int = _var("GUARDSTREAM_NOTIFY_SENDERS", _int_range(1, 64), 4,
                               "notifications sent at once per channel (a rate-limited channel sends one at a time)")
    notify_send_timeout_s: float = _var("GUARDSTREAM_NOTIFY_SEND_TIMEOUT_S", _positive_float, 10.0,
                                        "how long one send may take; a send that began this long ago twice over "
                                        "and never finished (the notifier stopped) is sent again")
    notify_dashboard_url: str | None = _var("GUARDSTREAM_NOTIFY_DASHBOARD_URL", _optional(_url("http", "https")),
                                            None, "dashboard address notifications link to "
                                            "(default: http://GUARDSTREAM_GATEWAY_HOST:GUARDSTREAM_GATEWAY_PORT/)")
    notify_smtp_url: str | None = _var("GUARDSTREAM_NOTIFY_SMTP_URL", _optional(_url("smtp", "smtps")), None,
                                       "SMTP server for email (smtps:// implicit TLS; user:password@ to log in); "
                                       "unset: no email")
    notify_smtp_starttls: bool = _var("GUARDSTREAM_NOTIFY_SMTP_STARTTLS", _bool, True,
                                      "smtp://: upgrade to TLS with STARTTLS before logging in or sending")
    notify_smtp_ca_file: str | None = _var("GUARDSTREAM_NOTIFY_SMTP_CA_FILE", _optional(_text), None,
                                           "CA bundle the SMTP server's certificate is checked against "
                                           "(default: the system's)")
    notify_email_from: str = _var("GUARDSTREAM_NOTIFY_EMAIL_FROM", _text, "guardstream@localhost",
                                  "From address of notification email")
    notify_webhook_secret: Secret = _var("GUARDSTREAM_NOTIFY_WEBHOOK_SECRET", _secret, Secret(""),
                                         "HMAC-SHA256 key webhook bodies are signed with (secret); "
                                         "unset: no webhooks")
    notify_sms_url: str | None = _var("GUARDSTREAM_NOTIFY_SMS_URL", _optional(_url("http", "https")), None,
                                      "SMS provider's message endpoint (Twilio-style form POST); unset: no SMS")
    notify_sms_account: str | None = _var("GUARDSTREAM_NOTIFY_SMS_ACCOUNT", _optional(_text), None,
                                          "SMS provider account id (basic-auth user)")
    notify_sms_token: Secret = _var("GUARDSTREAM_NOTIFY_SMS_TOKEN", _secret, Secret(""),
                                    "SMS provider auth token (basic-auth password; secret)")
    notify_sms_from: str | None = _var("GUARDSTREAM_NOTIFY_SMS_FROM", _optional(_text), None,
                                       "sender number or id of SMS")
    notify_vapid_key: Path | None = _var("GUARDSTREAM_NOTIFY_VAPID_KEY", _optional(_path), None,
                                         "PEM private key (EC P-256) Web Push requests are signed with (VAPID); "
                                         "unset: no push")
    notify_vapid_subject: str = _var("GUARDSTREAM_NOTIFY_VAPID_SUBJECT", _text, "mailto:guardstream@localhost",
                                     "contact push services see in the VAPID signature (mailto: or https: URL)")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        known = {v.env for v in settings_vars()}
        for name in env:
            if name.startswith("GUARDSTREAM_") and name not in known:
                close = difflib.get_close_matches(name, sorted(known), n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                raise ConfigError(name, f"unknown setting{hint}")
        values: dict[str, Any] = {}
        for f in fields(cls):
            var: Var = f.metadata["var"]
            raw = env.get(var.env)
            if raw is None:
                continue
            try:
                values[f.name] = var.parse(raw)
            except ValueError as exc:
                raise ConfigError(var.env, str(exc)) from exc
        settings = cls(**values)
        settings._check_combinations()
        return settings

    def _check_combinations(self) -> None:
        if self.kafka_security_protocol.startswith("sasl") and not self.kafka_sasl_mechanism:
            raise ConfigError("KAFKA_SASL_MECHANISM", f"required when KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol}")
        if self.kafka_sasl_mechanism and not (self.kafka_sasl_username and self.kafka_sasl_password):
            raise ConfigError("KAFKA_SASL_USERNAME", "SASL needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD")
        if bool(self.mqtt_client_cert) != bool(self.mqtt_client_key):
            raise ConfigError("MQTT_CLIENT_KEY", "MQTT_CLIENT_CERT and MQTT_CLIENT_KEY go together")
        if self.notify_sms_url and not (self.notify_sms_account and self.notify_sms_token and self.notify_sms_from):
            raise ConfigError("GUARDSTREAM_NOTIFY_SMS_ACCOUNT", "SMS needs GUARDSTREAM_NOTIFY_SMS_ACCOUNT, "
                              "GUARDSTREAM_NOTIFY_SMS_TOKEN and GUARDSTREAM_NOTIFY_SMS_FROM")

    @property
    def embedded(self) -> bool:
        return self.profile == "embedded"

    @property
    def bridge_linger(self) -> int:
        """The bridge's linger in milliseconds. The embedded broker pays 150-230 µs a produce request
        and lists every batch it ever stored at each fetch, so the local stack lets records wait
        longer to share one: 20 ms sustained 7,000 msg/s where 10 ms sustained 6,500, for 5.6 ms more
        at p50 at 1,000 msg/s (README, "The CPU budget per message")."""
        if self.bridge_linger_ms is not None:
            return self.bridge_linger_ms
        return 20 if self.embedded else 10

    @property
    def unknown_device_policy(self) -> str:
        """What becomes of a device the registry does not know. The local stack and the demo fleet
        start without a registry, so there its records keep the payload's (or the default) tenant;
        in production a device must be registered before it may speak."""
        if self.unknown_devices is not None:
            return self.unknown_devices
        return "default_tenant" if self.embedded else "dead_letter"

    @property
    def partition_cap(self) -> int | None:
        """The partition cap in force. A single embedded broker pays per partition on every
        look into its store, and it looks several times per idle fetch (measured on tansu: an
        idle consumer of 4 topics costs it 15 % of a core with two partitions each, 9 % with
        one), so the local stack keeps one and leaves the CPU to the pipeline (the README's
        Performance section has the end-to-end figures of both). The local stack runs one
        worker, sink and gateway; GUARDSTREAM_PARTITIONS_MAX gives it more to share."""
        if self.partitions_max is not None:
            return self.partitions_max
        return 1 if self.embedded else None

    def as_env(self) -> dict[str, str]:
        """The environment that rebuilds these settings in a child process."""
        out: dict[str, str] = {}
        for f in fields(self):
            var: Var = f.metadata["var"]
            value = getattr(self, f.name)
            if value is None:
                continue
            out[var.env] = value.reveal() if isinstance(value, Secret) else str(value)
        return out

    def replace(self, **changes: Any) -> Settings:
        from dataclasses import replace
        return replace(self, **changes)


def settings_vars() -> list[Var]:
    return [f.metadata["var"] for f in fields(Settings)]
