"""Kafka client configuration, built from the settings, and the client mechanics every
component shares: handing a record to a producer whose queue may be full, taking a batch,
the text and code of a Kafka error.

Every Kafka client in guardstream gets its configuration here, so security
settings (SASL/SSL) reach all of them and the embedded profile's short session
timeouts are set in one place. Reading partitions to their end (and exact end
offsets) is :mod:`guardstream.topic_end`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer

from guardstream.errors import BackpressureError
from guardstream.settings import Settings


LIBRDKAFKA_LOGGER = logging.getLogger("guardstream.librdkafka")


def common_config(settings: Settings, client_id: str) -> dict[str, Any]:
    config: dict[str, Any] = {
        # librdkafka's own log lines go through Python logging, not straight to stderr
        "logger": LIBRDKAFKA_LOGGER,
        "bootstrap.servers": settings.kafka_bootstrap_servers,
        "client.id": client_id,
        "security.protocol": settings.kafka_security_protocol,
    }
    if settings.kafka_sasl_mechanism:
        config["sasl.mechanism"] = settings.kafka_sasl_mechanism.upper()
        config["sasl.username"] = settings.kafka_sasl_username
        config["sasl.password"] = settings.kafka_sasl_password.reveal()
    for key, value in (("ssl.ca.location", settings.kafka_ssl_ca_location),
                       ("ssl.certificate.location", settings.kafka_ssl_certificate_location),
                       ("ssl.key.location", settings.kafka_ssl_key_location)):
        if value:
            config[key] = value
    return config


def producer_config(settings: Settings, client_id: str, **overrides: Any) -> dict[str, Any]:
    """Idempotent, acks=all: a retry never writes a record twice, an ack means replicated."""
    config = common_config(settings, client_id)
    config.update({
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "compression.type": "lz4",
        # the same key lands on the same partition as with the Java client and aiokafka (Faust)
        "partitioner": "murmur2_random",
    })
    config.update(overrides)
    return config


def session_timeouts(settings: Settings) -> tuple[int, int]:
    """(session.timeout.ms, heartbeat.interval.ms). A group join on the embedded
    broker takes about half the session timeout, so the local stack keeps it short."""
    return (6000, 1000) if settings.embedded else (45000, 3000)


def fetch_wait_ms(settings: Settings) -> int:
    """How long a fetch may wait for records. Apache Kafka answers as soon as records
    arrive, so its default (500 ms) costs nothing there. The embedded broker (tansu 0.6)
    answers at once only when records are already there; otherwise it looks into its store
    again after half the wait, then after half of what is left, and so on, so a record
    that arrives just after an idle fetch began waits up to half the wait (measured: p50
    delivery 116 ms at 500, 8 ms at 20). On the local stack consumers therefore ask often."""
    return 10 if settings.embedded else 500


def consumer_config(settings: Settings, client_id: str, group_id: str, **overrides: Any) -> dict[str, Any]:
    """Manual commits: every stage commits only what it has finished with."""
    session_ms, heartbeat_ms = session_timeouts(settings)
    config = common_config(settings, client_id)
    config.update({
        "group.id": group_id,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": session_ms,
        "heartbeat.interval.ms": heartbeat_ms,
        "fetch.wait.max.ms": fetch_wait_ms(settings),
    })
    config.update(overrides)
    return config


def take_batch(consumer: Consumer, max_records: int, wait_s: float) -> list[Any]:
    """Up to ``max_records`` messages: wait at most ``wait_s`` for the first, then take
    whatever else is already fetched without waiting.

    ``Consumer.consume(n, timeout)`` returns only when n messages are there or the
    timeout is over, so at low load every record would wait the full timeout.
    """
    first = consumer.poll(wait_s)
    if first is None:
        return []
    return [first, *consumer.consume(max_records - 1, 0)] if max_records > 1 else [first]


def admin_config(settings: Settings, client_id: str = "guardstream-admin") -> dict[str, Any]:
    return common_config(settings, client_id)


# How long :func:`produce` waits for room in a full producer queue unless told otherwise:
# librdkafka's default delivery timeout (``message.timeout.ms``). By then every record in the
# queue has been delivered or has failed, either of which makes room, so a queue still full
# is a client that no longer moves.
QUEUE_WAIT_S = 300.0
# Each wait for room serves delivery reports for this long: serving them is what makes room.
QUEUE_POLL_S = 0.05


def produce(producer: Producer, topic: str, value: bytes | None, key: bytes | None = None, *,
            partition: int = -1, headers: list[tuple[str, bytes | None]] | None = None, timestamp: int = 0,
            on_delivery: Callable[[KafkaError | None, Message], None] | None = None,
            wait_s: float = QUEUE_WAIT_S) -> None:
    """Hand one record to ``producer``; while its local queue is full (Kafka slow or away),
    serve delivery reports and try again.

    :class:`BackpressureError` when there is still no room after ``wait_s`` seconds: at once
    with 0 (a caller that must not block), never with ``math.inf`` (a producer whose records
    wait for Kafka without a deadline). ``partition`` -1 leaves the choice to the producer's
    partitioner, ``timestamp`` 0 stamps the record now. Any other error of the client
    (:class:`KafkaException`) is the caller's.
    """
    deadline = None
    while True:
        try:
            producer.produce(topic, value, key, partition=partition, on_delivery=on_delivery, timestamp=timestamp,
                             headers=headers)
            return
        except BufferError as exc:
            if deadline is None:
                deadline = time.monotonic() + wait_s
            if time.monotonic() >= deadline:
                raise BackpressureError(f"{topic}: the producer's queue stayed full for {wait_s:g}s") from exc
        producer.poll(QUEUE_POLL_S)


def error_text(exc: KafkaException) -> str:
    """What a Kafka client error says, without the ``KafkaError{code=...}`` wrapping."""
    error = exc.args[0] if exc.args else None
    return error.str() if isinstance(error, KafkaError) else str(exc)


def error_code(exc: KafkaException) -> int | None:
    """The :class:`KafkaError` code of a client error (``KafkaError.GROUP_ID_NOT_FOUND``, ...), None without one."""
    error = exc.args[0] if exc.args else None
    return error.code() if isinstance(error, KafkaError) else None
