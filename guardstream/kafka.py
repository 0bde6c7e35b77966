"""Kafka client configuration, built from the settings, and the end-offset probe.

Every Kafka client in guardstream gets its configuration here, so security
settings (SASL/SSL) reach all of them and the embedded profile's short session
timeouts are set in one place.

End offsets: some Kafka-protocol brokers (tansu, the embedded broker) report a
partition's high watermark as the base offset of the last record batch + 1
rather than the last offset + 1. :func:`probe_end_offsets` reads from
``high watermark - 1`` to the partition's end-of-file event and takes that
position, which is exact on every broker (on Apache Kafka it reads one record).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from guardstream.errors import UnavailableError
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


def probe_end_offsets(settings: Settings, partitions: Iterable[tuple[str, int]],
                      timeout_s: float = 10.0) -> dict[tuple[str, int], tuple[int, int]]:
    """{(topic, partition): (oldest offset, exact end offset)} for each partition."""
    wanted = list(partitions)
    if not wanted:
        return {}
    consumer = Consumer(common_config(settings, "guardstream-probe") | {
        "group.id": "guardstream-probe", "enable.auto.commit": False, "enable.partition.eof": True,
        "fetch.wait.max.ms": 100,
    })
    try:
        result: dict[tuple[str, int], tuple[int, int]] = {}
        to_read: list[TopicPartition] = []
        for topic, partition in wanted:
            try:
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout_s)
            except KafkaException as exc:
                raise UnavailableError(f"watermarks of {topic}[{partition}]: {exc}") from exc
            result[(topic, partition)] = (low, high)
            if high > low:
                to_read.append(TopicPartition(topic, partition, high - 1))
        if to_read:
            _read_to_eof(consumer, to_read, result, timeout_s)
        return result
    finally:
        consumer.close()


def _read_to_eof(consumer: Consumer, partitions: list[TopicPartition],
                 result: dict[tuple[str, int], tuple[int, int]], timeout_s: float) -> None:
    consumer.assign(partitions)
    pending = {(tp.topic, tp.partition) for tp in partitions}
    deadline = time.monotonic() + timeout_s
    while pending and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is None:
            continue
        key = (message.topic(), message.partition())
        error = message.error()
        if error is None:
            low, high = result[key]
            result[key] = (low, max(high, message.offset() + 1))
        elif error.code() == KafkaError._PARTITION_EOF:
            low, high = result[key]
            result[key] = (low, max(high, message.offset()))
            pending.discard(key)
        elif not error.retriable():
            raise UnavailableError(f"probe of {key[0]}[{key[1]}]: {error.str()}")
    if pending:
        raise UnavailableError(f"end offsets of {sorted(pending)} not reached within {timeout_s:.0f}s")
