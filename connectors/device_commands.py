"""``guardstream commands``: DeviceCommand records from Kafka, published to devices over MQTT.

Delivery guarantee: at least once. The Kafka offset of a command is committed
only after its outcome (SENT, EXPIRED or FAILED) is on ``commands.outcomes``; a
crash in between publishes the command again, with the same ``command_id`` in
the payload, so devices drop the repeat. An expired command is never sent.
A record that does not decode becomes a dead letter (stage ``commands``).

No single command stops the relay: a ``device_id`` that is not a plain MQTT topic
segment (empty, or holding ``+``, ``#``, ``/``, NUL or another control character) is
refused before a topic is built from it, and the command gets a FAILED outcome naming
the reason; so does a publish paho refuses. An outcome Kafka refuses for good makes the
command a dead letter (reason ``produce_refused``). The commands queued behind go on.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer

from guardstream.catalog import TOPICS
from guardstream.connectors.mapping import COMMAND_TOPIC
from guardstream.connectors.metrics import CommandMetrics
from guardstream.connectors.mqtt import connect, new_client
from guardstream.errors import InputError, SchemaError
from guardstream.kafka import consumer_config, error_text, produce, producer_config, take_batch
from guardstream.records import COMMAND_OUTCOME, DEAD_LETTER, CommandOutcome, command_outcome
from guardstream.refusal import Refused
from guardstream.schemas.codec import Codec
from guardstream.schemas.dead_letters import Source, dead_letter
from guardstream.settings import Settings

log = logging.getLogger("guardstream.commands")
GROUP = "guardstream-commands"
MAX_DEVICE_ID_BYTES = 256
_NOT_IN_A_SEGMENT = re.compile(r"[+#/\x00-\x1f\x7f]")


@dataclass(frozen=True)
class Publish:
    topic: str
    payload: bytes
    qos: int


@dataclass(frozen=True)
class Expired:
    detail: str


def device_id_refusal(device_id: str) -> Refused | None:
    """Why ``device_id`` cannot be one segment of an MQTT topic, or None: a wildcard would
    address other devices' topics, a ``/`` another topic level, NUL is refused by brokers."""
    if not device_id:
        return Refused("bad_device_id", "device_id is empty")
    if bad := _NOT_IN_A_SEGMENT.search(device_id):
        return Refused("bad_device_id", f"device_id holds {bad[0]!r}, which cannot be in an MQTT topic segment")
    if len(device_id.encode()) > MAX_DEVICE_ID_BYTES:
        return Refused("bad_device_id", f"device_id longer than {MAX_DEVICE_ID_BYTES} bytes")
    return None


def decide(command: dict[str, Any], now_ms: int) -> Publish | Expired | Refused:
    """What to do with one command: publish it, or not, because it expired or cannot be addressed."""
    if refused := device_id_refusal(command["device_id"]):
        return refused
    expires = command.get("expires_ms")
    if expires is not None and expires <= now_ms:
        return Expired(f"expired {now_ms - expires} ms before it could be sent")
    payload = json.dumps({
        "command_id": command["command_id"], "command": command["command"],
        "arguments": command.get("arguments") or {}, "issued_ms": command["issued_ms"], "expires_ms": expires,
    }, separators=(",", ":")).encode()
    qos = command.get("qos", 1)
    return Publish(COMMAND_TOPIC.format(device_id=command["device_id"]), payload, qos if qos in (0, 1, 2) else 1)


def outcome(command: dict[str, Any], kind: str, now_ms: int, detail: str | None = None) -> CommandOutcome:
    return command_outcome(command_id=command["command_id"], tenant=command["tenant"],
                           device_id=command["device_id"], outcome=kind, ts_ms=now_ms, detail=detail)


# How long an idle fetch may wait for commands. An operator's command is not a race of
# milliseconds, and asking every 10 ms (the embedded profile's latency-bound default) costs: alone
# against tansu, one idle consumer cost it 0.08 of a core, 0.008 at 250 ms; in `guardstream up`
# the relay itself went from 0.008 to 0.002 of a core (the broker's own idle CPU moved less than
# it varies there). A command reaches the relay in 101 ms at the median, 128 at most on tansu;
# Apache Kafka answers at once.
FETCH_WAIT_MS = 250


class CommandRelay:
    def __init__(self, settings: Settings, codec: Codec, metrics: CommandMetrics) -> None:
        self.settings = settings
        self.codec = codec
        self.metrics = metrics
        self.stopping = threading.Event()
        self.mqtt_connected = threading.Event()
        self.consumer = Consumer(consumer_config(settings, "guardstream-commands", GROUP,
                                                 **{"fetch.wait.max.ms": FETCH_WAIT_MS}))
        self.producer = Producer(producer_config(settings, "guardstream-commands"))
        self.client = new_client(settings, f"guardstream-commands-{settings.bridge_id}")
        self.client.on_connect = lambda *a: (self.mqtt_connected.set(), metrics.connected.labels("mqtt").set(1))
        self.client.on_disconnect = lambda *a: (self.mqtt_connected.clear(), metrics.connected.labels("mqtt").set(0))

    def ready(self) -> tuple[bool, str]:
        if not self.mqtt_connected.is_set():
            return False, "MQTT not connected"
        return True, ""

    def run(self) -> None:
        connect(self.client, self.settings)
        self.client.loop_start()
        self.consumer.subscribe([TOPICS.commands_device.name])
        try:
            while not self.stopping.is_set():
                records = take_batch(self.consumer, 500, 0.2)
                if records:
                    self._handle(records)
        finally:
            self.consumer.close()
            self.client.disconnect()
            self.client.loop_stop()

    def _handle(self, records: list) -> None:
        for record in records:
            if record.error() is not None:
                if record.error().code() != KafkaError._PARTITION_EOF:
                    log.warning("consume error: %s", record.error().str())
                continue
            self._relay_one(record)
        # outcomes must be in Kafka before the commands count as done
        if self.producer.flush(30) > 0:
            raise KafkaException(KafkaError(KafkaError._MSG_TIMED_OUT, "outcomes not acknowledged in 30 s"))
        self.consumer.commit(asynchronous=False)

    def _relay_one(self, record: Any) -> None:
        now = time.time_ns() // 1_000_000
        try:
            _, command = self.codec.decode(record.value() or b"")
        except (InputError, SchemaError) as exc:
            self._dead_letter(record, exc.reason, exc.detail, now)
            return
        decision = decide(command, now)
        if isinstance(decision, Expired):
            result = outcome(command, "EXPIRED", now, decision.detail)
        elif isinstance(decision, Refused):
            log.warning("command %s refused: %s", command["command_id"], decision.detail)
            result = outcome(command, "FAILED", now, f"{decision.reason}: {decision.detail}")
        else:
            why = self._publish(decision)
            result = outcome(command, "FAILED" if why else "SENT", time.time_ns() // 1_000_000, why)
        self.metrics.outcomes.labels(result["outcome"]).inc()
        try:
            produce(self.producer, TOPICS.commands_outcomes.name, self.codec.encode(COMMAND_OUTCOME, result),
                    command["device_id"].encode(), on_delivery=self._outcome_delivered(record))
        except KafkaException as exc:  # refused before it was queued, e.g. too large
            self._dead_letter(record, "produce_refused", f"its outcome was refused: {error_text(exc)}", now)

    def _publish(self, publish: Publish) -> str | None:
        """Publish one command over MQTT; why it failed, or None once the broker has it."""
        self._wait_connected()
        try:
            info = self.client.publish(publish.topic, publish.payload, qos=publish.qos)
            info.wait_for_publish(timeout=10)
            if not info.is_published():
                return f"MQTT publish not confirmed: {info.rc}"
        except (RuntimeError, ValueError) as exc:  # paho's refusal: bad topic, too large, queue full, not connected
            return f"MQTT publish refused: {exc}"
        return None

    def _outcome_delivered(self, record: Any) -> Callable[[KafkaError | None, Any], None]:
        """The delivery report of a command's outcome: one Kafka refused for good makes the command a dead letter."""
        def delivered(error: KafkaError | None, _message: Any) -> None:
            if error is not None and not error.fatal():
                self._dead_letter(record, "produce_refused", f"its outcome was refused: {error.str()}",
                                  time.time_ns() // 1_000_000)
            elif error is not None:
                raise KafkaException(error)
        return delivered

    def _wait_connected(self) -> None:
        while not self.mqtt_connected.wait(1.0):
            if self.stopping.is_set():
                raise KeyboardInterrupt

    def _dead_letter(self, record: Any, reason: str, detail: str, now: int) -> None:
        source = Source(record.topic(), record.partition(), record.offset(), record.key())
        letter, headers = dead_letter("commands", reason, detail, source, record.value() or b"", now)
        produce(self.producer, TOPICS.dlq_bridge.name, self.codec.encode(DEAD_LETTER, letter), record.key(),
                headers=headers)
        self.metrics.outcomes.labels("dead_letter").inc()

def run(settings: Settings) -> int:
    from guardstream.lifecycle import install_stop_handlers
    from guardstream.observability import serve
    from guardstream.schemas.registry import registry_from_settings

    metrics = CommandMetrics.create()
    relay = CommandRelay(settings, Codec(registry_from_settings(settings)), metrics)
    endpoints = serve(metrics.registry, relay.ready, settings.metrics_host, settings.metrics_port) \
        if settings.metrics_port else None
    install_stop_handlers(relay.stopping.set)
    try:
        relay.run()
    except KeyboardInterrupt:
        pass
    finally:
        if endpoints:
            endpoints.close()
    return 0
