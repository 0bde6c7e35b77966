"""What the MQTT broker says it holds: mosquitto's ``$SYS`` figures, read and exported.

mosquitto publishes ``$SYS/broker/...`` every ``sys_interval`` seconds (retained, so a
new subscriber gets the last values at once). None of them is per client: mosquitto
2.0 does not say how many messages wait for one session. What comes closest to
"messages held for the bridge" is its message store: every message queued for a
persistent session or in flight to a client, plus the retained ones (``$SYS``'s own
among them), each stored message counted once however many sessions it waits for.
So the queue reported here is

    queued = store/messages/count - retained messages/count

broker-wide: it includes what waits for any other persistent session (a device
offline with a QoS 1 subscription, say). With the bridge as the broker's only heavy
subscriber, it is the bridge's backlog. ``publish/messages/dropped`` counts messages
the broker threw away, a queue past ``max_queued_messages`` among them: those are lost.

Other brokers: amqtt, EMQX, HiveMQ and VerneMQ do not publish these topics (EMQX and
VerneMQ report queue depth through their own HTTP APIs); with them no report ever
arrives, the gauges below have no series, and ``guardstream lag`` says "not reported".

:func:`broker_queue` is the pure part: the latest value of each topic in, figures out.
:class:`BrokerQueueReader` is the shell: one MQTT client subscribed to those topics.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from guardstream.settings import Settings

log = logging.getLogger(__name__)

STORED = "$SYS/broker/store/messages/count"
RETAINED = "$SYS/broker/retained messages/count"
DROPPED = "$SYS/broker/publish/messages/dropped"
RECEIVED_1MIN = "$SYS/broker/load/publish/received/1min"
SENT_1MIN = "$SYS/broker/load/publish/sent/1min"
SYS_TOPICS = (STORED, RETAINED, DROPPED, RECEIVED_1MIN, SENT_1MIN)


@dataclass(frozen=True)
class BrokerQueue:
    """The broker's own figures, as of ``reported_at`` (seconds since the epoch)."""

    stored: int  # messages in the broker's store
    retained: int  # of which retained messages
    dropped: int | None  # messages the broker dropped since it started (None: not reported)
    received_per_s: float | None  # PUBLISH packets received per second, one-minute average
    sent_per_s: float | None  # PUBLISH packets sent per second, one-minute average
    reported_at: float

    @property
    def queued(self) -> int:
        """Messages held for sessions (queued or in flight), retained ones left out."""
        return max(0, self.stored - self.retained)


def _number(raw: str | None, kind: Callable[[str], float]) -> float | None:
    if raw is None:
        return None
    try:
        return kind(raw.strip())
    except ValueError:
        return None


def broker_queue(values: Mapping[str, str], reported_at: float) -> BrokerQueue | None:
    """The figures in ``values`` ({$SYS topic: its last payload}); None when the broker has not
    reported its store (not mosquitto, or ``$SYS`` disabled or not readable)."""
    stored = _number(values.get(STORED), int)
    retained = _number(values.get(RETAINED), int)
    if stored is None or retained is None:
        return None
    dropped = _number(values.get(DROPPED), int)
    return BrokerQueue(int(stored), int(retained), None if dropped is None else int(dropped),
                       _number(values.get(RECEIVED_1MIN), float), _number(values.get(SENT_1MIN), float),
                       reported_at)


def queue_families(queue: BrokerQueue | None, now: float) -> list[Metric]:
    """The bridge's series of the broker's figures; none while the broker reports nothing."""
    if queue is None:
        return []
    families: list[Metric] = [
        GaugeMetricFamily("guardstream_mqtt_broker_queued_messages",
                          "Messages the MQTT broker holds for sessions (queued or in flight, retained ones left "
                          "out), broker-wide, from mosquitto's $SYS store count.", value=queue.queued),
        GaugeMetricFamily("guardstream_mqtt_broker_report_age_seconds",
                          "Seconds since the MQTT broker's last $SYS report.", value=max(0.0, now - queue.reported_at)),
    ]
    if queue.dropped is not None:
        families.append(CounterMetricFamily("guardstream_mqtt_broker_dropped_messages",
                                            "Messages the MQTT broker dropped since it started (queues past "
                                            "max_queued_messages among them).", value=queue.dropped))
    rates = GaugeMetricFamily("guardstream_mqtt_broker_publish_rate",
                              "PUBLISH packets per second through the MQTT broker, one-minute average.",
                              labels=["direction"])
    for direction, rate in (("received", queue.received_per_s), ("sent", queue.sent_per_s)):
        if rate is not None:
            rates.add_metric([direction], rate)
    families.append(rates)
    return families


class BrokerQueueReader:
    """Keeps the latest ``$SYS`` figures; a Prometheus collector of them (``register`` it)."""

    def __init__(self, settings: Settings, client_id: str, clock: Callable[[], float] = time.time) -> None:
        from guardstream.connectors.mqtt import new_client
        self._settings = settings
        self._clock = clock
        self._lock = threading.Lock()
        self._values: dict[str, str] = {}
        self._reported_at = 0.0
        self.reported = threading.Event()  # set once the store count and retained count have arrived
        self.client = new_client(settings, client_id)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message

    def start(self) -> None:
        from guardstream.connectors.mqtt import connect
        connect(self.client, self._settings)
        self.client.loop_start()

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def read(self) -> BrokerQueue | None:
        with self._lock:
            return broker_queue(self._values, self._reported_at)

    def collect(self) -> Iterator[Metric]:
        yield from queue_families(self.read(), self._clock())

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: object, reason: object,
                    properties: object) -> None:
        if getattr(reason, "is_failure", False):
            log.warning("MQTT broker figures: connection refused: %s", reason)
            return
        client.subscribe([(topic, 0) for topic in SYS_TOPICS])

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        payload = message.payload.decode("ascii", "replace")
        with self._lock:
            self._values[message.topic] = payload
            self._reported_at = self._clock()
            complete = STORED in self._values and RETAINED in self._values
        if complete:
            self.reported.set()


def read_once(settings: Settings, client_id: str, timeout_s: float) -> BrokerQueue | None:
    """The broker's figures, waiting up to ``timeout_s`` for them; None when none arrived."""
    reader = BrokerQueueReader(settings, client_id)
    reader.start()
    try:
        reader.reported.wait(timeout_s)
        return reader.read()
    finally:
        reader.stop()
