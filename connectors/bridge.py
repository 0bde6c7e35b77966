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

No single message stops a lane. Every record Kafka or its client refuses for good (too
large, invalid) becomes a dead letter instead, the dead letter cut to fit
(``schemas/dead_letters.py``); a dead letter refused in turn is sent once more bare
(payload cut to nothing, its length and hash kept). An error in a lane's threads (paho's
network thread runs the message callback; ``kafka-poll`` the idle delivery reports) fails the
lane: ``/readyz`` answers 503, and the process stops with exit code 1 so its supervisor
restarts it. A message that failed the lane twice is dead-lettered on its third delivery
instead of crash-looping the bridge (``poison.py``).

The decisions (mapping, refusal, ack order) are pure code in ``mapping.py``,
``raw.py`` and ``acks.py``; this module is the threads and clients around them.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from functools import partial
from typing import Any

import paho.mqtt.client as mqtt
from confluent_kafka import KafkaError, KafkaException, Producer
from paho.mqtt.subscribeoptions import SubscribeOptions
from prometheus_client.metrics import MetricWrapperBase

from guardstream.catalog import TOPICS
from guardstream.connectors.acks import OrderedAcks, Ticket
from guardstream.connectors.broker_queue import BrokerQueueReader
from guardstream.connectors.mapping import Rule, load_rules, subscription_filters
from guardstream.connectors.metrics import BridgeMetrics
from guardstream.connectors.mqtt import connect, is_v5, new_client
from guardstream.connectors.mqtt_wire import Publish
from guardstream.connectors.poison import PoisonLedger, ledger_path, load, save
from guardstream.connectors.raw import (TOPIC_REFUSALS, Divert, Forward, Incoming, PropertyLimits, Skip, decide,
                                        message_id, poison)
from guardstream.kafka import error_text, produce, producer_config
from guardstream.lifecycle import start_guarded
from guardstream.records import DEAD_LETTER
from guardstream.refusal import Refused
from guardstream.schemas.codec import Codec
from guardstream.schemas.dead_letters import MAX_PAYLOAD, Source, dead_letter
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
# How often the main thread checks that every lane's threads still run.
THREAD_CHECK_S = 1.0


@dataclass(slots=True)
class Sent:
    """One record handed to the producer on a message's behalf, for its delivery report."""

    ticket: Ticket | None  # the message's place in the ack window; None for QoS 0
    received: float  # monotonic time the message arrived
    counter: Any  # the metric child counted on delivery
    incoming: Incoming
    decision: Forward | Divert  # what the record is: the message forwarded, or its dead letter
    bare: bool = False  # the last resort: a dead letter stripped of payload and user headers


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
        self._due_acks: list[tuple[int, int]] = []  # (mid, qos) due, in order; guarded by _window
        self._ack_order = threading.Lock()
        self.stopping = stopping or threading.Event()
        self.fatal: BaseException | None = None
        self.mqtt_connected = threading.Event()
        self._ever_connected = False
        self.kafka_ok = threading.Event()
        client_id = f"guardstream-{settings.bridge_id}" + ("" if lane == "main" else f"-{lane}")
        linger_ms = settings.bridge_linger if lane == "main" else ALERTS_LINGER_MS
        self.producer = Producer(producer_config(
            settings, client_id,
            # no deadline: while Kafka is away, records wait and MQTT acks wait with them
            **{"message.timeout.ms": 0, "linger.ms": linger_ms, "error_cb": self._on_kafka_error,
               "queue.buffering.max.messages": QUEUE_MAX_MESSAGES,
               "queue.buffering.max.kbytes": QUEUE_MAX_KBYTES}))
        self._last_polled = 0.0  # when the MQTT thread last served delivery reports (monotonic)
        # labelled metric children, looked up once each: labels() costs more than inc()
        self._children: dict[tuple[object, ...], Any] = {}
        self.limits = PropertyLimits(settings.bridge_user_properties_max, settings.bridge_user_properties_bytes_max)
        self._prefixes = frozenset(r.prefix for r in self.rules)
        self.ledger_path = ledger_path(settings.state_dir, settings.bridge_id, lane)
        self.ledger: PoisonLedger = load(self.ledger_path)
        self.client = new_client(settings, client_id, manual_ack=True, persistent=True)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message  # what paho still dispatches: packets with properties, QoS 2
        self.client.on_publish_batch = self._on_publishes
        self._poller: threading.Thread | None = None
        self._network: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        self._poller = start_guarded(f"kafka-poll-{self.lane}", self._poll_kafka, self._fail, log,
                                     f"the {self.lane} lane's Kafka poller")
        connect(self.client, self.settings, persistent=True, receive_maximum=self.settings.bridge_max_inflight)
        self.client.loop_start()
        self._network = getattr(self.client, "_thread", None)  # paho's loop thread (paho is pinned)

    def ready(self) -> tuple[bool, str]:
        if self.fatal is not None:
            return False, f"failed: {self.fatal!r}"
        if not self.mqtt_connected.is_set():
            return False, "MQTT not connected"
        if not self.kafka_ok.is_set():
            return False, "Kafka not reachable"
        return True, ""

    def check_threads(self) -> None:
        """Fail the lane when one of its threads has ended while it runs: paho's network thread
        can end on an error of its own, outside any callback of ours."""
        if self.stopping.is_set():
            return
        for name, thread in (("MQTT network", self._network), ("Kafka poll", self._poller)):
            if thread is not None and not thread.is_alive():
                log.error("%s lane: its %s thread ended; stopping so the supervisor restarts us", self.lane, name)
                self._fail(RuntimeError(f"{name} thread ended"))

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop taking messages, let in-flight records reach Kafka and their acks reach MQTT."""
        self.stopping.set()
        with self._window:
            self._window.notify_all()
        self.producer.flush(timeout_s)
        self._send_due_acks()
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
                self._serve_reports(IDLE_POLL_S)
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

    def _fail(self, exc: BaseException) -> None:
        """The lane cannot go on: not ready from now on, and the process stops (exit code 1)."""
        if self.fatal is None:
            self.fatal = exc
        self.stopping.set()

    def _on_kafka_error(self, error: KafkaError) -> None:
        if error.fatal():
            log.error("Kafka producer failed: %s; stopping so the supervisor restarts us", error.str())
            self._fail(KafkaException(error))
        elif error.code() == KafkaError._ALL_BROKERS_DOWN:
            self.kafka_ok.clear()
            self.metrics.connected.labels("kafka").set(0)
            log.warning("Kafka unreachable: %s; holding MQTT acknowledgements", error.str())

    # -- MQTT side -------------------------------------------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: object, reason: object,
                    properties: object) -> None:
        try:
            self._connected(client, reason)
        except Exception as exc:  # noqa: BLE001 - raised on, it would end paho's thread and leave the lane deaf
            log.exception("%s lane: error on MQTT connect", self.lane)
            self._fail(exc)

    def _connected(self, client: mqtt.Client, reason: object) -> None:
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
            self._due_acks = []  # the broker redelivers those messages; their mids mean nothing now
            self._window.notify_all()
        if not self.stopping.is_set():
            log.warning("MQTT disconnected (%s); %d unacknowledged message(s) will be redelivered", reason, dropped)

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        # paho runs this on its network thread: an error raised on from here would end that
        # thread, and the lane with it, while the process looked alive
        try:
            self._take(message)
        except Exception as exc:  # noqa: BLE001 - recorded against the message, then the lane stops
            self._lane_failed(exc, message)

    def _on_publishes(self, client: mqtt.Client, run: list[Publish]) -> None:
        """A run of PUBLISH packets one read brought (``mqtt_reader.on_publish_batch``), each taken
        as ``_on_message`` takes one; the first that fails the lane ends the run."""
        for publish in run:
            message = Received(publish)
            try:
                self._take(message)
            except Exception as exc:  # noqa: BLE001 - recorded against the message, then the lane stops
                self._lane_failed(exc, message)
                return
            if self.stopping.is_set():
                return

    def _lane_failed(self, exc: Exception, message: mqtt.MQTTMessage | Received) -> None:
        """Handling ``message`` failed: count it in the poison ledger, then stop the lane.
        Not acknowledged, the message comes back after the restart; see ``poison.py``."""
        topic = _topic(message)
        msg_id = message_id(topic, message.payload)
        kills = self.ledger.killed(msg_id)
        try:
            save(self.ledger, self.ledger_path)
        except OSError as save_exc:
            log.error("cannot write the poison ledger %s: %s", self.ledger_path, save_exc)
        log.error("%s lane failed on a message on %r (msg.id %s, %d time(s) so far); stopping so the supervisor "
                  "restarts us", self.lane, topic, msg_id, kills, exc_info=exc)
        self._fail(exc)

    def _take(self, message: mqtt.MQTTMessage | Received) -> None:
        received = time.monotonic()
        topic = _topic(message)
        props = message.properties
        incoming = Incoming(topic, message.payload, message.qos, bool(message.retain), now_ms(),
                            getattr(props, "ContentType", None),
                            tuple(getattr(props, "UserProperty", ()) or ()))
        msg_id = message_id(topic, message.payload)
        if self.ledger.kills and self.ledger.is_poison(msg_id):
            decision: Forward | Divert = poison(incoming, self.settings.bridge_id, msg_id, self.ledger.kills[msg_id],
                                                self.limits, self._prefixes)
        else:
            decision = decide(incoming, self.rules, self.settings.bridge_id, self.settings.bridge_max_payload_bytes,
                              self.limits, msg_id)
        # QoS 0 has no acknowledgement to hold, so no place in the window: its memory is
        # bounded by the producer's queue (a full queue blocks this thread in produce)
        ticket = self._admit(message) if message.qos else None
        if self.stopping.is_set():
            return  # not acknowledged: the broker redelivers a QoS >= 1 message to the next run
        self._child(self.metrics.received, decision.prefix, str(message.qos)).inc()
        if message.dup:
            self.metrics.redelivered.inc()
        if decision.dropped_properties:
            self._child(self.metrics.properties_dropped, decision.prefix).inc(decision.dropped_properties)
        if isinstance(decision, Forward):
            self._send(Sent(ticket, received, self._child(self.metrics.forwarded, decision.prefix), incoming,
                            decision))
        elif isinstance(decision, Skip):  # our own command topic: acknowledged, not forwarded
            self._child(self.metrics.skipped, decision.prefix).inc()
            self._confirm(ticket)
        else:
            if decision.refused.reason in TOPIC_REFUSALS:
                self._child(self.metrics.not_whitelisted, decision.prefix, decision.refused.reason).inc()
            self._dead_letter(decision, incoming, ticket, received)
        if received - self._last_polled >= SERVE_REPORTS_S:
            self._serve_reports(0)  # delivery reports due by now: acks, and room in the window
            self._last_polled = time.monotonic()
        elif self._due_acks:
            self._send_due_acks()  # confirmed without Kafka (skipped), or while produce waited for room

    def _admit(self, message: mqtt.MQTTMessage | Received) -> Ticket | None:
        """A ticket in the window of unconfirmed messages, waiting for room; None when stopping."""
        with self._window:
            # while this thread waits, the kafka-poll thread serves the delivery reports that make room
            while self.acks.full and not self.stopping.is_set():
                self._window.wait(0.5)
            if self.stopping.is_set():
                return None
            return self.acks.add(message.mid, message.qos)

    def _dead_letter(self, divert: Divert, incoming: Incoming, ticket: Ticket | None, received: float,
                     bare: bool = False) -> None:
        counter = self._child(self.metrics.refused, divert.prefix, divert.refused.reason)
        self._send(Sent(ticket, received, counter, incoming, divert, bare))

    def _send(self, sent: Sent) -> None:
        """Hand ``sent``'s record to the producer; one the client refuses goes the way of a failed delivery."""
        decision = sent.decision
        if isinstance(decision, Forward):
            topic, key, value, headers = decision.kafka_topic, decision.key, decision.value, decision.headers
        else:
            refused, incoming = decision.refused, sent.incoming
            letter, headers = dead_letter("bridge", refused.reason, refused.detail, Source(incoming.topic),
                                          incoming.payload, incoming.received_ms, 0 if sent.bare else MAX_PAYLOAD)
            topic, key, value = TOPICS.dlq_bridge.name, None, self.codec.encode(DEAD_LETTER, letter)
            if not sent.bare:
                headers += decision.headers
        try:
            produce(self.producer, topic, value, key, headers=headers,
                    on_delivery=partial(self._on_delivery, sent), wait_s=QUEUE_WAIT_S)
        except KafkaException as exc:  # e.g. larger than message.max.bytes: refused before it was queued
            self._undeliverable(sent, error_text(exc))

    def _on_delivery(self, sent: Sent, error: KafkaError | None, record: object) -> None:
        if error is not None:
            # retries have no deadline, so what ends up here is final for this record
            if error.fatal():
                self._fail(KafkaException(error))
            else:
                self._undeliverable(sent, error.str())
            return
        self._kafka_reachable()
        sent.counter.inc()
        self.metrics.ack_latency.observe(time.monotonic() - sent.received)
        if isinstance(sent.decision, Divert) and sent.decision.refused.reason == "poison":
            self._poison_sent(sent.incoming)
        self._confirm(sent.ticket)

    def _confirm(self, ticket: Ticket | None) -> None:
        """A message is done with: its MQTT ack is due once every earlier one's is, and goes out
        with the others due at the next :meth:`_send_due_acks`."""
        if ticket is None:
            return  # QoS 0: nothing to acknowledge
        with self._window:
            due = self.acks.confirm(ticket)
            if due:
                self._due_acks.extend(due)
                self._window.notify_all()

    def _send_due_acks(self) -> None:
        """Every due ack, in order, QoS 1 ones in one write (``mqtt_reader.ack_many``): one per
        delivery report served cost a ``send`` and a wake-up of paho's thread per message."""
        with self._ack_order:  # both threads send acks: one at a time, so they leave in order
            with self._window:
                due, self._due_acks = self._due_acks, []
            if not due:
                return
            if all(qos == 1 for _, qos in due):
                self.client.ack_many([mid for mid, _ in due])
                return
            for mid, qos in due:  # QoS 2 among them (rare): paho's PUBCOMP, one by one, in order
                self.client.ack(mid, qos)

    def _serve_reports(self, timeout_s: float) -> None:
        """Serve the producer's delivery reports, then send the acks they made due."""
        self.producer.poll(timeout_s)
        self._send_due_acks()

    def _undeliverable(self, sent: Sent, why: str) -> None:
        """Kafka or its client refused ``sent``'s record for good: its message goes on as a dead
        letter (the message's ticket with it, so its ack waits for that), a refused dead letter
        once more bare, and only a refused bare one fails the lane."""
        decision = sent.decision
        self._child(self.metrics.produce_refused, decision.prefix).inc()
        log.warning("%s lane: Kafka refused a record from %r: %s; sending it on as a dead letter",
                    self.lane, sent.incoming.topic, why)
        if isinstance(decision, Forward):
            divert = Divert(Refused("produce_refused", f"Kafka refused the record: {why}"), decision.headers,
                            decision.prefix)
            self._dead_letter(divert, sent.incoming, sent.ticket, sent.received)
        elif not sent.bare:
            divert = Divert(Refused(decision.refused.reason, f"{decision.refused.detail}; its dead letter was "
                                    f"refused too ({why})"), [], decision.prefix)
            self._dead_letter(divert, sent.incoming, sent.ticket, sent.received, bare=True)
        else:
            self._fail(KafkaException(KafkaError(KafkaError._INVALID_ARG, f"a bare dead letter was refused: {why}")))

    def _poison_sent(self, incoming: Incoming) -> None:
        """A poison message is in ``dlq.bridge``: it leaves the ledger."""
        if self.ledger.forget(message_id(incoming.topic, incoming.payload)):
            try:
                save(self.ledger, self.ledger_path)
            except OSError as exc:
                log.error("cannot write the poison ledger %s: %s", self.ledger_path, exc)


def _topic(message: mqtt.MQTTMessage | Received) -> str | None:
    """The message's topic; None when its bytes are not UTF-8."""
    try:
        return message.topic
    except UnicodeDecodeError:
        return None


class Received:
    """A PUBLISH of the reader's fast path, with the fields of paho's ``MQTTMessage`` the lane reads;
    it never has MQTT 5 properties (packets with some go through paho)."""

    __slots__ = ("_topic", "payload", "qos", "retain", "dup", "mid")
    properties = None

    def __init__(self, publish: Publish) -> None:
        self._topic = publish.topic
        self.payload, self.qos, self.retain = publish.payload, publish.qos, publish.retain
        self.dup, self.mid = publish.dup, publish.mid

    @property
    def topic(self) -> str:
        """As paho's: decoded when read; UnicodeDecodeError when the bytes are not UTF-8."""
        return self._topic.decode("utf-8")


def watch_window(metrics: BridgeMetrics, bridge: Bridge) -> None:
    """The lane's window and producer queue as gauges read at scrape time: nothing per message."""
    lane = bridge.lane
    metrics.window.labels(lane).set_function(lambda: len(bridge.acks))
    metrics.window_capacity.labels(lane).set(bridge.acks.capacity)
    metrics.window_oldest_age.labels(lane).set_function(bridge.acks.oldest_age)
    metrics.producer_queue.labels(lane).set_function(lambda: len(bridge.producer))


def _broker_queue(settings: Settings, metrics: BridgeMetrics) -> BrokerQueueReader | None:
    """The MQTT broker's own figures beside the bridge's (``broker_queue.py``), when asked for."""
    if not settings.bridge_broker_stats:
        return None
    reader = BrokerQueueReader(settings, f"guardstream-{settings.bridge_id}-sys")
    metrics.registry.register(reader)
    reader.start()
    return reader


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
    for bridge in bridges:
        watch_window(metrics, bridge)
    broker = _broker_queue(settings, metrics)

    ready = all_ready({f"{b.lane} lane": b.ready for b in bridges})
    endpoints = serve(metrics.registry, ready, settings.metrics_host, settings.metrics_port) \
        if settings.metrics_port else None
    install_stop_handlers(stopping.set)
    for bridge in bridges:
        bridge.start()
    log.info("bridge %s: %s -> Kafka %s", settings.bridge_id, masked_url(settings.mqtt_url),
             settings.kafka_bootstrap_servers)
    while not stopping.wait(THREAD_CHECK_S):
        for bridge in bridges:
            bridge.check_threads()
    for bridge in bridges:
        bridge.stop()
    if broker is not None:
        broker.stop()
    if endpoints:
        endpoints.close()
    return 1 if any(b.fatal for b in bridges) else 0
