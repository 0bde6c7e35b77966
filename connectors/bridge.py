"""``guardstream bridge``: MQTT -> Kafka, at least once.

Delivery guarantee: a QoS 1 (or 2, delivered to the bridge as 1) message is
acknowledged to the MQTT broker only after Kafka acknowledged its record
(idempotent producer, ``acks=all``), in the order the messages arrived. A
``kill -9`` at any moment loses nothing: the broker keeps the persistent
session and redelivers what was not acknowledged; the copy that may already be
in Kafka carries the same ``msg.id``, which later stages drop. QoS 0 is best
effort, and counted.

Back-pressure: at most ``GUARDSTREAM_BRIDGE_MAX_INFLIGHT`` QoS >= 1 messages are
unconfirmed; MQTT 5 tells the broker so (Receive Maximum), and the receiving
thread stops reading when the window is full, so while Kafka is unreachable
the bridge stops acknowledging and its memory stays bounded. QoS 0 messages
have no acknowledgement to hold and take no place in the window; the
producer's bounded queue is what stops the receiving thread for them. The
producer retries without a deadline, so the bridge resumes on its own.

Throughput (``bench/bridge_throughput.py``): the MQTT network thread serves
Kafka's delivery reports itself while messages flow, so one thread holds the
GIL instead of two trading it per message (measured: a quarter less CPU per
message); the ``kafka-poll`` thread serves them only when MQTT is idle.
Records linger up to ``GUARDSTREAM_BRIDGE_LINGER_MS`` to share a produce request, which the
embedded broker pays for per request.

The decisions (mapping, refusal, ack order) are pure code in ``mapping.py``,
``raw.py`` and ``acks.py``; this module is the threads and clients around them.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import paho.mqtt.client as mqtt
from confluent_kafka import KafkaError, KafkaException, Producer
from paho.mqtt.subscribeoptions import SubscribeOptions
from prometheus_client import Counter
from prometheus_client.metrics import MetricWrapperBase

from guardstream.catalog import TOPICS
from guardstream.connectors.acks import OrderedAcks, Ticket
from guardstream.connectors.mapping import Rule, load_rules, subscription_filters
from guardstream.connectors.metrics import BridgeMetrics
from guardstream.connectors.mqtt import connect, is_v5, new_client
from guardstream.connectors.raw import Divert, Forward, Incoming, Skip, decide
from guardstream.kafka import produce, producer_config
from guardstream.records import DEAD_LETTER
from guardstream.schemas.codec import Codec
from guardstream.schemas.dead_letters import Source, dead_letter
from guardstream.settings import Settings, masked_url

log = logging.getLogger("guardstream.bridge")

# How long a record may wait for others to share its produce request: the
# GUARDSTREAM_BRIDGE_LINGER_MS setting. At 5 ms a request carried a few records spread
# over 30 raw partitions; 50 ms cut the embedded broker's CPU per record by about four
# fifths and the bridge's by a fifth (bench/bridge_throughput.py), for up to 45 ms more
# before the MQTT acknowledgement and before the record reaches the stream workers.
# The alerts lane never lingers: a panic alert goes out at once.
ALERTS_LINGER_MS = 0
# The producer's queue, bounded: it is all that holds QoS 0 messages while Kafka is away
# (QoS >= 1 ones are held by the window), so the bridge's memory stays bounded for them too.
QUEUE_MAX_MESSAGES = 20_000
QUEUE_MAX_KBYTES = 64 * 1024
# How long a record waits for room in that queue: as long as it takes. Records wait for
# Kafka without a deadline (message.timeout.ms 0), and the receiving thread with them.
QUEUE_WAIT_S = math.inf
# While messages flow, the MQTT thread serves delivery reports at most this often rather
# than after every message: each poll releases and retakes the GIL.
SERVE_REPORTS_S = 0.001
# The kafka-poll thread serves delivery reports when the MQTT thread has not for this long.
IDLE_POLL_S = 0.02


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def subscriptions(rules: tuple[Rule, ...], settings: Settings) -> list[tuple[str, int]]:
    """(filter, qos) per rule, in the shared-subscription group when MQTT 5 has one."""
    group = settings.bridge_shared_group if is_v5(settings) else ""
    return [(f"$share/{group}/{f}" if group else f, qos) for f, qos in subscription_filters(rules)]


def lanes(rules: tuple[Rule, ...]) -> list[tuple[str, tuple[Rule, ...]]]:
    """(lane name, its rules): alerts get an MQTT session of their own, so the broker
    queues them apart from a flood of telemetry; the main lane keeps the bridge's
    original client id (and so its persistent session)."""
    alerts = tuple(r for r in rules if r.kafka_topic == TOPICS.raw_alert.name)
    rest = tuple(r for r in rules if r not in alerts)
    return [(name, chosen) for name, chosen in (("main", rest), ("alerts", alerts)) if chosen]


class Bridge:
    def __init__(self, settings: Settings, codec: Codec, metrics: BridgeMetrics,
                 rules: tuple[Rule, ...] | None = None, lane: str = "main",
                 stopping: threading.Event | None = None) -> None:
        self.settings = settings
        self.codec = codec
        self.metrics = metrics
        self.rules = rules if rules is not None else load_rules(settings.bridge_rules)
        self.lane = lane
        self.acks = OrderedAcks(settings.bridge_max_inflight)
        self._window = threading.Condition()
        self.stopping = stopping or threading.Event()
        self.fatal: BaseException | None = None
        self.mqtt_connected = threading.Event()
        self._ever_connected = False
        self.kafka_ok = threading.Event()
        client_id = f"guardstream-{settings.bridge_id}" + ("" if lane == "main" else f"-{lane}")
        linger_ms = settings.bridge_linger_ms if lane == "main" else ALERTS_LINGER_MS
        self.producer = Producer(producer_config(
            settings, client_id,
            # no deadline: while Kafka is away, records wait and MQTT acks wait with them
            **{"message.timeout.ms": 0, "linger.ms": linger_ms, "error_cb": self._on_kafka_error,
               "queue.buffering.max.messages": QUEUE_MAX_MESSAGES,
               "queue.buffering.max.kbytes": QUEUE_MAX_KBYTES}))
        self._last_polled = 0.0  # when the MQTT thread last served delivery reports (monotonic)
        # labelled metric children, looked up once each: labels() costs more than inc()
        self._children: dict[tuple[object, ...], Any] = {}
        self.client = new_client(settings, client_id, manual_ack=True, persistent=True)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self._poller = threading.Thread(target=self._poll_kafka, name="kafka-poll", daemon=True)

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        self._poller.start()
        connect(self.client, self.settings, persistent=True, receive_maximum=self.settings.bridge_max_inflight)
        self.client.loop_start()

    def ready(self) -> tuple[bool, str]:
        if self.fatal is not None:
            return False, f"failed: {self.fatal}"
        if not self.mqtt_connected.is_set():
            return False, "MQTT not connected"
        if not self.kafka_ok.is_set():
            return False, "Kafka not reachable"
        return True, ""

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop taking messages, let in-flight records reach Kafka and their acks reach MQTT."""
        self.stopping.set()
        with self._window:
            self._window.notify_all()
        self.producer.flush(timeout_s)
        self.client.disconnect()
        self.client.loop_stop()

    # -- Kafka side ------------------------------------------------------------------

    def _poll_kafka(self) -> None:
        try:
            self.producer.list_topics(timeout=10)
            self._kafka_reachable()
        except KafkaException as exc:
            log.warning("Kafka not reachable yet: %s", exc)
        while not self.stopping.is_set():
            if time.monotonic() - self._last_polled > IDLE_POLL_S:
                self.producer.poll(IDLE_POLL_S)
            else:
                self.stopping.wait(IDLE_POLL_S)  # the MQTT thread is serving them

    def _kafka_reachable(self) -> None:
        if not self.kafka_ok.is_set():
            self.kafka_ok.set()
            self.metrics.connected.labels("kafka").set(1)

    def _child(self, metric: MetricWrapperBase, *labels: str) -> Any:
        """``metric.labels(*labels)``, cached."""
        key = (metric, *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def _on_kafka_error(self, error: KafkaError) -> None:
        if error.fatal():
            self.fatal = KafkaException(error)
            log.error("Kafka producer failed: %s; stopping so the supervisor restarts us", error.str())
            self.stopping.set()
        elif error.code() == KafkaError._ALL_BROKERS_DOWN:
            self.kafka_ok.clear()
            self.metrics.connected.labels("kafka").set(0)
            log.warning("Kafka unreachable: %s; holding MQTT acknowledgements", error.str())

    # -- MQTT side -------------------------------------------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: object, reason: object,
                    properties: object) -> None:
        if getattr(reason, "is_failure", False):
            log.warning("MQTT connection refused: %s", reason)
            return
        subs = subscriptions(self.rules, self.settings)
        if is_v5(self.settings):
            client.subscribe([(f, SubscribeOptions(qos=q)) for f, q in subs])
        else:
            client.subscribe(subs)
        if self._ever_connected:
            self.metrics.reconnects.labels("mqtt").inc()
        self._ever_connected = True
        self.metrics.connected.labels("mqtt").set(1)
        self.mqtt_connected.set()
        log.info("MQTT connected; subscribed to %s", ", ".join(f for f, _ in subs))

    def _on_disconnect(self, client: mqtt.Client, userdata: object, flags: object, reason: object,
                       properties: object) -> None:
        self.mqtt_connected.clear()
        self.metrics.connected.labels("mqtt").set(0)
        with self._window:
            dropped = self.acks.reconnected()
            self._window.notify_all()
        if not self.stopping.is_set():
            log.warning("MQTT disconnected (%s); %d unacknowledged message(s) will be redelivered", reason, dropped)

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        received = time.monotonic()
        try:
            topic: str | None = message.topic
        except UnicodeDecodeError:
            topic = None
        props = message.properties
        incoming = Incoming(topic, message.payload, message.qos, bool(message.retain), now_ms(),
                            getattr(props, "ContentType", None),
                            tuple(getattr(props, "UserProperty", ()) or ()))
        decision = decide(incoming, self.rules, self.settings.bridge_id, self.settings.bridge_max_payload_bytes)
        # QoS 0 has no acknowledgement to hold, so no place in the window: its memory is
        # bounded by the producer's queue (a full queue blocks this thread in produce)
        ticket = self._admit(message) if message.qos else None
        if self.stopping.is_set():
            return  # not acknowledged: the broker redelivers a QoS >= 1 message to the next run
        self._child(self.metrics.received, decision.prefix, str(message.qos)).inc()
        if message.dup:
            self.metrics.redelivered.inc()
        if isinstance(decision, Forward):
            produce(self.producer, decision.kafka_topic, decision.value, decision.key, headers=decision.headers,
                    on_delivery=self._delivered(ticket, received, self._child(self.metrics.forwarded, decision.prefix)),
                    wait_s=QUEUE_WAIT_S)
        elif isinstance(decision, Skip):  # our own command topic: acknowledged, not forwarded
            self._on_delivery(ticket, received, self._child(self.metrics.skipped, decision.prefix), None, None)
        else:
            self._dead_letter(decision, incoming, ticket, received)
        if received - self._last_polled >= SERVE_REPORTS_S:
            self.producer.poll(0)  # delivery reports due by now: acks, and room in the window
            self._last_polled = time.monotonic()

    def _admit(self, message: mqtt.MQTTMessage) -> Ticket | None:
        """A ticket in the window of unconfirmed messages, waiting for room; None when stopping."""
        with self._window:
            # while this thread waits, the kafka-poll thread serves the delivery reports that make room
            while self.acks.full and not self.stopping.is_set():
                self._window.wait(0.5)
            if self.stopping.is_set():
                return None
            return self.acks.add(message.mid, message.qos)

    def _dead_letter(self, divert: Divert, incoming: Incoming, ticket: Ticket | None, received: float) -> None:
        refused = divert.refused
        letter, headers = dead_letter("bridge", refused.reason, refused.detail, Source(incoming.topic),
                                      incoming.payload, incoming.received_ms)
        produce(self.producer, TOPICS.dlq_bridge.name, self.codec.encode(DEAD_LETTER, letter),
                headers=headers + divert.headers,
                on_delivery=self._delivered(ticket, received,
                                            self._child(self.metrics.refused, divert.prefix, refused.reason)),
                wait_s=QUEUE_WAIT_S)

    def _delivered(self, ticket: Ticket | None, received: float,
                   counter: Counter) -> Callable[[KafkaError | None, object], None]:
        """The delivery callback of one record: count it, then release the MQTT acks now due."""
        return partial(self._on_delivery, ticket, received, counter)

    def _on_delivery(self, ticket: Ticket | None, received: float, counter: Counter, error: KafkaError | None,
                     record: object) -> None:
        if error is not None:
            # only non-retriable errors end up here (retries have no deadline): loud, and no ack
            log.error("Kafka refused a record: %s", error.str())
            self.fatal = KafkaException(error)
            self.stopping.set()
            return
        self._kafka_reachable()
        counter.inc()
        self.metrics.ack_latency.observe(time.monotonic() - received)
        if ticket is None:
            return  # QoS 0: nothing to acknowledge
        with self._window:
            due = self.acks.confirm(ticket)
            self._window.notify_all()
        for mid, qos in due:
            self.client.ack(mid, qos)


def run(settings: Settings) -> int:
    """Run the bridge until SIGTERM/SIGINT; exit 1 after a fatal Kafka error."""
    from guardstream.lifecycle import install_stop_handlers
    from guardstream.observability import all_ready, serve
    from guardstream.schemas.registry import registry_from_settings

    metrics = BridgeMetrics.create()
    codec = Codec(registry_from_settings(settings))
    stopping = threading.Event()
    bridges = [Bridge(settings, codec, metrics, rules, lane, stopping)
               for lane, rules in lanes(load_rules(settings.bridge_rules))]
    metrics.inflight.set_function(lambda: sum(len(b.acks) for b in bridges))  # read at scrape time

    ready = all_ready({f"{b.lane} lane": b.ready for b in bridges})
    endpoints = serve(metrics.registry, ready, settings.metrics_host, settings.metrics_port) \
        if settings.metrics_port else None
    install_stop_handlers(stopping.set)
    for bridge in bridges:
        bridge.start()
    log.info("bridge %s: %s -> Kafka %s", settings.bridge_id, masked_url(settings.mqtt_url),
             settings.kafka_bootstrap_servers)
    stopping.wait()
    for bridge in bridges:
        bridge.stop()
    if endpoints:
        endpoints.close()
    return 1 if any(b.fatal for b in bridges) else 0
