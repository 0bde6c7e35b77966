"""The bridge's and the command relay's metrics, declared once."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from guardstream.observability import new_registry


@dataclass(frozen=True)
class BridgeMetrics:
    registry: CollectorRegistry
    received: Counter
    forwarded: Counter
    refused: Counter
    inflight: Gauge
    window: Gauge
    window_capacity: Gauge
    window_oldest_age: Gauge
    producer_queue: Gauge
    ack_latency: Histogram
    connected: Gauge
    reconnects: Counter
    redelivered: Counter
    skipped: Counter
    properties_dropped: Counter
    not_whitelisted: Counter
    produce_refused: Counter

    @classmethod
    def create(cls) -> BridgeMetrics:
        r = new_registry("bridge")
        return cls(
            registry=r,
            received=Counter("guardstream_bridge_received_total", "MQTT messages received.",
                             ["topic", "qos"], registry=r),
            forwarded=Counter("guardstream_bridge_forwarded_total", "Messages written to their raw topic.",
                              ["topic"], registry=r),
            refused=Counter("guardstream_bridge_refused_total", "Messages refused (sent to the dead-letter topic).",
                            ["topic", "reason"], registry=r),
            inflight=Gauge("guardstream_bridge_inflight_messages",
                           "QoS >= 1 messages received from MQTT whose MQTT acknowledgement waits for Kafka.",
                           registry=r),
            # per lane, read at scrape time (Gauge.set_function): nothing is counted per message
            window=Gauge("guardstream_bridge_window_messages",
                         "The lane's window: QoS >= 1 messages received and not yet confirmed by Kafka.",
                         ["lane"], registry=r),
            window_capacity=Gauge("guardstream_bridge_window_capacity",
                                  "The lane's window size (GUARDSTREAM_BRIDGE_MAX_INFLIGHT); at capacity the lane "
                                  "stops reading and messages queue in the MQTT broker.", ["lane"], registry=r),
            window_oldest_age=Gauge("guardstream_bridge_window_oldest_age_seconds",
                                    "How long the oldest unconfirmed message of the lane's window has waited "
                                    "for Kafka (0 when the window is empty).", ["lane"], registry=r),
            producer_queue=Gauge("guardstream_bridge_producer_queue_messages",
                                 "Records and requests in the lane's Kafka producer queue, not yet delivered "
                                 "(librdkafka's len(producer)).", ["lane"], registry=r),
            ack_latency=Histogram("guardstream_bridge_ack_latency_seconds",
                                  "From MQTT receipt to the Kafka acknowledgement.", registry=r,
                                  buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30)),
            connected=Gauge("guardstream_bridge_connected", "1 while connected, per side.", ["side"], registry=r),
            reconnects=Counter("guardstream_bridge_reconnects_total", "Connections re-established, per side.",
                               ["side"], registry=r),
            redelivered=Counter("guardstream_bridge_redelivered_total",
                                "Messages the broker delivered again (MQTT DUP flag).", registry=r),
            skipped=Counter("guardstream_bridge_skipped_total",
                            "Messages on topics guardstream publishes itself (device commands), not forwarded.",
                            ["topic"], registry=r),
            properties_dropped=Counter("guardstream_bridge_user_properties_dropped_total",
                                       "MQTT 5 user properties not copied into headers (past the count or byte "
                                       "limit).", ["topic"], registry=r),
            not_whitelisted=Counter("guardstream_bridge_not_whitelisted_total",
                                    "Messages whose topic no bridge rule takes (bad, unmapped or crafted topic "
                                    "names), dropped from the pipeline to dlq.bridge.", ["topic", "reason"],
                                    registry=r),
            produce_refused=Counter("guardstream_bridge_produce_refused_total",
                                    "Records Kafka or its client refused for good (too large, invalid), each "
                                    "sent on as a dead letter instead.", ["topic"], registry=r),
        )


@dataclass(frozen=True)
class CommandMetrics:
    registry: CollectorRegistry
    outcomes: Counter
    connected: Gauge

    @classmethod
    def create(cls) -> CommandMetrics:
        r = new_registry("commands")
        return cls(
            registry=r,
            outcomes=Counter("guardstream_commands_total", "Device commands handled, by outcome.",
                             ["outcome"], registry=r),
            connected=Gauge("guardstream_commands_connected", "1 while connected, per side.", ["side"], registry=r),
        )
