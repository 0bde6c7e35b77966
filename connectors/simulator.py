"""``guardstream simulate``: a simulated fleet publishing over MQTT at a steady rate.

The fleet (``simulation.py``) decides every message and its simulated time;
this module publishes each one when the monotonic clock reaches that time, so
the rate holds over hours without drift, and a slow broker shows as a lower
achieved rate in the summary line rather than as a growing backlog. The demo
fences the fleet walks through are ``connectors/demo_fences.geojson``;
:func:`import_demo_fences` writes them to the geofences topic for
``guardstream up --simulate``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from importlib import resources
from typing import IO, Any

import paho.mqtt.client as mqtt

from guardstream.connectors.mqtt import connect, endpoint, is_v5, new_client
from guardstream.connectors.simulation import KINDS, Fleet, Message, demo_fence_records
from guardstream.errors import InputError, UnavailableError
from guardstream.settings import Settings, masked_url

log = logging.getLogger("guardstream.simulator")

DEMO_FENCES = "demo_fences.geojson"  # package data beside this module
MAX_INFLIGHT = 65_535  # the most unacknowledged QoS 1/2 messages MQTT allows
LATE_STOP_S = 1.0  # a run with a duration that fell behind stops at most this much late


def load_demo_fences() -> dict[str, Any]:
    return json.loads(resources.files("guardstream.connectors").joinpath(DEMO_FENCES).read_text())


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class SimulateOptions:
    devices: int
    rate: float  # messages per second, all devices together
    seed: int = 1
    duration_s: float | None = None  # None: until stopped
    malformed_share: float = 0.01
    qos_override: int | None = None
    id_prefix: str = "sim"

    def fleet(self, start_ms: int) -> Fleet:
        try:
            return Fleet(self.seed, self.devices, load_demo_fences(), start_ms=start_ms, rate=self.rate,
                         malformed_share=self.malformed_share, id_prefix=self.id_prefix,
                         qos_override=self.qos_override)
        except ValueError as exc:
            raise InputError(str(exc), reason="bad_argument") from exc


@dataclass
class Tally:
    """What was published, for the summary line."""

    per_kind: Counter = field(default_factory=Counter)
    malformed: int = 0
    sent: int = 0

    def add(self, message: Message) -> None:
        self.per_kind[message.kind] += 1
        self.malformed += message.malformed is not None
        self.sent += 1

    def summary(self, elapsed_s: float, acknowledged: int, lost: int) -> str:
        kinds = ", ".join(f"{kind} {self.per_kind[kind]}" for kind in KINDS)
        return (f"simulate: {self.sent} messages in {elapsed_s:.2f} s ({self.sent / max(elapsed_s, 1e-9):.1f} msg/s): "
                f"{kinds}; malformed {self.malformed}; acknowledged {acknowledged}, lost {lost}")


def inflight_window(rate: float) -> int:
    """Unacknowledged QoS 1/2 messages to allow: enough for a 50 ms round trip at ``rate``.

    Not more: paho walks every in-flight message on each acknowledgement, so a
    window of 1,000 publishes at QoS 1 about half as fast as one of 200 (measured
    against a local mosquitto).
    """
    return max(100, min(500, int(rate / 20)))


class Publisher:
    """A paho client that counts what the broker has taken and bounds what it has not."""

    def __init__(self, settings: Settings, client_id: str, inflight: int,
                 stop: threading.Event | None = None) -> None:
        self.client = new_client(settings, client_id)
        self.settings = settings
        self.stop = stop or threading.Event()
        # paho's own window; the broker may ask for a smaller one when it accepts the connection
        self.window = max(1, min(MAX_INFLIGHT, inflight))
        self.client.max_inflight_messages_set(self.window)
        self.client.max_queued_messages_set(0)
        self.client.on_connect = self._on_connect
        self.client.on_publish = self._on_publish
        self.connected = threading.Event()
        self._done = threading.Condition()
        # acknowledged: QoS 0 written to the socket, QoS 1 PUBACK, QoS 2 PUBCOMP; refused: a failure
        # reason from the broker; unsent: QoS 0 while disconnected (paho keeps QoS 1/2 for a reconnect)
        self.published = self.acknowledged = self.refused = self.unsent = 0

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: object, reason: Any,
                    properties: Any) -> None:
        if getattr(reason, "is_failure", False):
            log.warning("MQTT connection refused: %s", reason)
            return
        # A v5 broker drops what arrives beyond its Receive Maximum (mosquitto: 1000), and paho
        # neither applies it nor lets its window change once connected: publish() keeps to it.
        receive_maximum = getattr(properties, "ReceiveMaximum", None)
        if receive_maximum:
            self.window = min(self.window, receive_maximum)
        self.connected.set()

    def _on_publish(self, client: mqtt.Client, userdata: object, mid: int, reason: Any, properties: object) -> None:
        with self._done:
            if getattr(reason, "is_failure", False):
                self.refused += 1
            else:
                self.acknowledged += 1
            self._done.notify_all()

    def start(self, timeout_s: float = 15.0) -> None:
        connect(self.client, self.settings)
        self.client.loop_start()
        if not self.connected.wait(timeout_s):
            self.client.loop_stop()
            ep = endpoint(self.settings)
            raise UnavailableError(f"MQTT broker {ep.host}:{ep.port} did not accept a connection "
                                   f"within {timeout_s:.0f}s")

    def publish(self, message: Message) -> None:
        """Publish, first waiting while the broker's window of unacknowledged messages is full."""
        if message.qos > 0 and self.outstanding >= self.window:
            while not self.wait_below(self.window, 1.0) and not self.stop.is_set():
                pass
        info = self.client.publish(message.topic, message.payload, message.qos)
        if info.rc == mqtt.MQTT_ERR_SUCCESS or message.qos > 0:
            self.published += 1
        else:
            self.unsent += 1

    @property
    def outstanding(self) -> int:
        return self.published - self.acknowledged - self.refused

    @property
    def lost(self) -> int:
        return self.refused + self.unsent

    def wait_below(self, outstanding: int, timeout_s: float) -> bool:
        """Wait until fewer than ``outstanding`` messages await the broker; False on timeout."""
        with self._done:
            return self._done.wait_for(lambda: self.outstanding < outstanding, timeout_s)

    def close(self, drain_s: float = 15.0) -> None:
        """Let the broker take what was published, then disconnect."""
        if not self.wait_below(1, drain_s):
            log.warning("%d message(s) still unacknowledged after %.0fs", self.outstanding, drain_s)
        self.client.disconnect()
        self.client.loop_stop()


def run(settings: Settings, options: SimulateOptions, stop: threading.Event | None = None,
        out: IO[str] | None = None) -> int:
    """Publish at ``options.rate`` until ``options.duration_s`` passes or ``stop`` is set."""
    stop = stop or threading.Event()
    fleet = options.fleet(now_ms())
    publisher = Publisher(settings, f"guardstream-simulator-{os.getpid()}", inflight_window(options.rate), stop)
    publisher.start()
    log.info("simulating %d devices at %.0f msg/s on %s (MQTT %s)", options.devices, options.rate,
             masked_url(settings.mqtt_url), "5" if is_v5(settings) else "3.1.1")
    started = time.monotonic()
    tally = publish_paced(fleet, publisher, stop, options.duration_s)
    elapsed = time.monotonic() - started
    publisher.close()
    print(tally.summary(elapsed, publisher.acknowledged, publisher.lost), file=out or sys.stdout, flush=True)
    return 0


def publish_paced(fleet: Fleet, publisher: Publisher, stop: threading.Event, duration_s: float | None) -> Tally:
    """Publish each message when the monotonic clock reaches its simulated time."""
    tally = Tally()
    backlog = max(10_000, int(2 * fleet.rate))
    started = time.monotonic()
    end = None if duration_s is None else started + duration_s
    end_ms = None if duration_s is None else fleet.start_ms + round(duration_s * 1000)
    while not stop.is_set():
        now = time.monotonic()
        # a second's worth at most per batch: a run that fell far behind builds no huge list
        until_ms = min(fleet.start_ms + int((now - started) * 1000), fleet.next_due_ms + 1000)
        for message in fleet.step(until_ms if end_ms is None else min(until_ms, end_ms - 1)):
            publisher.publish(message)
            tally.add(message)
            if tally.sent % 128 == 0 and end is not None and time.monotonic() >= end + LATE_STOP_S:
                break  # far behind the rate: stop about on time all the same
        if end is not None and now >= end:
            break
        if publisher.outstanding >= backlog:
            publisher.wait_below(backlog // 2, 1.0)  # the broker is behind: let it catch up
            continue
        next_at = started + (fleet.next_due_ms - fleet.start_ms) / 1000
        stop.wait(max(0.0, min(next_at, end or next_at) - time.monotonic()))  # pacing, not synchronisation
    return tally


def dry_run(options: SimulateOptions, lines: int, out: IO[str] | None = None) -> int:
    """Print the next ``lines`` messages (topic, QoS, payload) without connecting."""
    out = out or sys.stdout
    fleet = options.fleet(now_ms())
    for message in fleet.take(lines):
        out.write(f"{message.topic} qos={message.qos} {message.payload.decode('utf-8', 'backslashreplace')}\n")
    out.flush()
    return 0


def import_demo_fences(settings: Settings, timeout_s: float = 15.0) -> int:
    """Write the demo fences to the geofences topic when it is empty; returns how many were written."""
    from confluent_kafka import KafkaException, Producer

    from guardstream.catalog import TOPICS
    from guardstream.kafka import producer_config
    from guardstream.records import GEOFENCE
    from guardstream.schemas.codec import Codec
    from guardstream.schemas.registry import registry_from_settings
    from guardstream.topic_end import probe_end_offsets

    topic = TOPICS.geofences.name
    ends = probe_end_offsets(settings, [(topic, p) for p in range(TOPICS.geofences.partitions)], timeout_s)
    if any(end > 0 for _, end in ends.values()):
        return 0
    codec = Codec(registry_from_settings(settings))
    records = demo_fence_records(load_demo_fences(), now_ms())
    producer = Producer(producer_config(settings, "guardstream-demo-fences"))
    try:
        for record in records:
            producer.produce(topic, codec.encode(GEOFENCE, record), record["fence_id"].encode())
        left = producer.flush(timeout_s)
    except KafkaException as exc:
        raise UnavailableError(f"writing demo fences to {topic}: {exc}") from exc
    if left:
        raise UnavailableError(f"{left} demo fence(s) not acknowledged by Kafka within {timeout_s:.0f}s")
    return len(records)
