"""Which MQTT topics the bridge takes, and where each goes in Kafka.

A rule is a topic pattern with named segments (``guard/{guard_id}/gps``), the
raw Kafka topic it feeds, the segment that becomes the Kafka key, and the QoS
the bridge subscribes with. Only topics that match a rule *and* whose named
segments are plain ids pass: wildcards, NUL, control characters, empty or dot
segments, over-long names and ids outside ``[A-Za-z0-9_.:-]`` are refused with
a reason code, so nothing crafted in a topic name reaches Kafka.

A pattern may end in ``#``: a catch-all rule, which takes the topics under its
literal start (zero or more further levels) that no earlier rule took, so that every
topic under a whitelisted prefix reaches its raw topic and the stream worker decides
what it is (``bridge.catch_all`` header) instead of the bridge dropping it. Rules are
tried in order; the subscriptions leave out filters a catch-all already covers, since
a broker may deliver a message once per matching subscription.

Topics guardstream publishes itself under a device's prefix (:data:`OWN_TOPICS`, the
command topic) are never forwarded.

Rules load from a TOML file (``GUARDSTREAM_BRIDGE_RULES``) or default to
:data:`DEFAULT_RULES`; a rule may name only raw topics of the catalog.
"""

from __future__ import annotations

import functools
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

import msgspec

from guardstream.catalog import TOPICS
from guardstream.errors import ConfigError, InputError

MAX_TOPIC_CHARS = 256
_ID = re.compile(r"^[A-Za-z0-9_:-][A-Za-z0-9_.:-]{0,127}$")
_PLACEHOLDER = re.compile(r"^\{([a-z_]+)\}$")
_LITERAL = re.compile(r"^[A-Za-z0-9_.-]+$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

# The QoS the bridge subscribes with never exceeds 1: paho sends PUBREC for a
# QoS 2 message before the application sees it, so a crash between PUBREC and
# the Kafka ack would lose it. At QoS 1 the PUBACK waits for Kafka; duplicates
# that at-least-once allows are dropped downstream by msg.id.
MAX_SUBSCRIBE_QOS = 1


@dataclass(frozen=True)
class Rule:
    pattern: str  # e.g. "guard/{guard_id}/gps"
    kafka_topic: str
    key: str  # the placeholder whose value is the Kafka key ("" for none: only a catch-all rule)
    qos: int  # QoS devices publish with; the subscription uses min(qos, MAX_SUBSCRIBE_QOS)

    @property
    def segments(self) -> tuple[str, ...]:
        return tuple(self.pattern.split("/"))

    @property
    def is_catch_all(self) -> bool:
        return self.segments[-1] == "#"

    @property
    def mqtt_filter(self) -> str:
        """The subscription filter: every placeholder becomes ``+`` (a trailing ``#`` stays)."""
        return "/".join("+" if _PLACEHOLDER.match(s) else s for s in self.segments)

    @property
    def subscribe_qos(self) -> int:
        return min(self.qos, MAX_SUBSCRIBE_QOS)

    @property
    def prefix(self) -> str:
        """First literal segment: the label metrics count this rule's traffic under."""
        return self.segments[0]

    def check(self) -> None:
        raw = {t.name for t in TOPICS.raw()}
        if self.kafka_topic not in raw:
            raise ConfigError("GUARDSTREAM_BRIDGE_RULES", f"rule {self.pattern!r}: {self.kafka_topic!r} is not "
                              f"a raw topic ({', '.join(sorted(raw))})")
        names = [m[1] for s in self.segments if (m := _PLACEHOLDER.match(s))]
        fixed = self.segments[:-1] if self.is_catch_all else self.segments
        literals = [s for s in fixed if not _PLACEHOLDER.match(s)]
        if self.key not in names and not (self.key == "" and self.is_catch_all):
            raise ConfigError("GUARDSTREAM_BRIDGE_RULES", f"rule {self.pattern!r}: key {self.key!r} is not one "
                              "of its {placeholders}")
        if not all(_LITERAL.match(s) for s in literals) or len(set(names)) != len(names):
            raise ConfigError("GUARDSTREAM_BRIDGE_RULES", f"rule {self.pattern!r}: segments must be literals "
                              "or distinct {placeholders}")
        if self.qos not in (0, 1, 2):
            raise ConfigError("GUARDSTREAM_BRIDGE_RULES", f"rule {self.pattern!r}: qos must be 0, 1 or 2")


DEFAULT_RULES: tuple[Rule, ...] = (
    Rule("device/{device_id}/telemetry", TOPICS.raw_device.name, "device_id", 1),
    # the older fleet's names: status carries telemetry, a heartbeat is telemetry with little in it
    Rule("device/{device_id}/status", TOPICS.raw_device.name, "device_id", 1),
    Rule("device/{device_id}/heartbeat", TOPICS.raw_device.name, "device_id", 1),
    Rule("guard/{guard_id}/gps", TOPICS.raw_guard.name, "guard_id", 1),
    Rule("guard/{guard_id}/location", TOPICS.raw_guard.name, "guard_id", 1),
    Rule("sensor/{sensor_id}/{kind}", TOPICS.raw_sensor.name, "sensor_id", 1),
    Rule("alert/{kind}/{device_id}", TOPICS.raw_alert.name, "device_id", 2),
    Rule("system/{component}/health", TOPICS.raw_system.name, "component", 0),
    # presence: birth and last-will messages; the worker makes a SystemHealth of each (OK, DOWN)
    Rule("device/{device_id}/online", TOPICS.raw_system.name, "device_id", 1),
    Rule("device/{device_id}/offline", TOPICS.raw_system.name, "device_id", 1),
    Rule("guard/{guard_id}/online", TOPICS.raw_system.name, "guard_id", 1),
    Rule("guard/{guard_id}/offline", TOPICS.raw_system.name, "guard_id", 1),
    # catch-alls, last: whatever else arrives under a whitelisted prefix
    Rule("device/{device_id}/#", TOPICS.raw_device.name, "device_id", 1),
    Rule("guard/{guard_id}/#", TOPICS.raw_guard.name, "guard_id", 1),
    Rule("sensor/{sensor_id}/#", TOPICS.raw_sensor.name, "sensor_id", 1),
    Rule("alert/{kind}/{device_id}/#", TOPICS.raw_alert.name, "device_id", 2),
    Rule("alert/#", TOPICS.raw_alert.name, "", 2),  # no device in the topic: the payload's device_id
    Rule("system/{component}/#", TOPICS.raw_system.name, "component", 0),
)

# Where the command relay publishes a DeviceCommand (an MQTT topic, not a Kafka one).
COMMAND_TOPIC = "device/{device_id}/cmd"
# Topics guardstream publishes itself, which a catch-all subscription also delivers: never forwarded.
OWN_TOPICS = (COMMAND_TOPIC.split("/"),)


def _covers(wide: tuple[str, ...], narrow: tuple[str, ...]) -> bool:
    """Whether every topic MQTT filter ``narrow`` matches is matched by catch-all filter ``wide``."""
    head = wide[:-1]
    return (wide[-1] == "#" and len(narrow) >= len(head)
            and all(w == "+" or w == n for w, n in zip(head, narrow)) and "#" not in narrow[:len(head)])


def subscription_filters(rules: tuple[Rule, ...]) -> list[tuple[str, int]]:
    """(filter, QoS) to subscribe to: one per rule, less those a catch-all rule's filter covers
    (which then takes the highest QoS among them)."""
    filters: dict[str, int] = {}
    for rule in rules:
        filters[rule.mqtt_filter] = max(filters.get(rule.mqtt_filter, 0), rule.subscribe_qos)
    split = {f: tuple(f.split("/")) for f in filters}
    wide = {f: [w for w in filters if w != f and _covers(split[w], split[f])] for f in filters}
    kept = {f: qos for f, qos in filters.items() if not wide[f]}
    for f, qos in filters.items():
        for w in wide[f]:
            if w in kept:
                kept[w] = max(kept[w], qos)
    return list(kept.items())


def load_rules(path: Path | None) -> tuple[Rule, ...]:
    if path is None:
        rules = DEFAULT_RULES
    else:
        try:
            doc = tomllib.loads(path.read_text())
            rules = tuple(Rule(r["pattern"], r["topic"], r["key"], int(r.get("qos", 1))) for r in doc["rule"])
        except (OSError, tomllib.TOMLDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ConfigError("GUARDSTREAM_BRIDGE_RULES", f"{path}: {exc}") from exc
    for rule in rules:
        rule.check()
    return rules


class Match(msgspec.Struct, frozen=True):
    rule: Rule
    key: str
    values: dict[str, str]
    own: bool = False  # a topic guardstream publishes itself (OWN_TOPICS): not forwarded


def _unsafe(topic: str) -> str | None:
    """Why this topic name can never be forwarded, or None."""
    if len(topic) > MAX_TOPIC_CHARS:
        return f"topic longer than {MAX_TOPIC_CHARS} characters"
    if "+" in topic or "#" in topic:
        return "wildcard in a published topic"
    if _CONTROL.search(topic):
        return "control character or NUL in topic"
    if topic.startswith("$") or topic.startswith("/") or "//" in topic or topic.endswith("/"):
        return "empty or system segment in topic"
    return None


def match(rules: tuple[Rule, ...], topic: str) -> Match:
    """The rule ``topic`` falls under, with its key; :class:`InputError` when refused."""
    found = _match(rules, topic)
    if isinstance(found, Match):
        return found
    raise InputError(found[1], reason=found[0])


# A fleet publishes on a bounded set of topics, each many times: the answer per topic is
# kept (refusals too), which took the matching off the bridge's per-message profile.
@functools.lru_cache(maxsize=100_000)
def _match(rules: tuple[Rule, ...], topic: str) -> Match | tuple[str, str]:
    try:
        return _match_once(rules, topic)
    except InputError as exc:
        return exc.reason, exc.detail


def _match_once(rules: tuple[Rule, ...], topic: str) -> Match:
    why = _unsafe(topic)
    if why:
        raise InputError(why, reason="bad_topic")
    parts = topic.split("/")
    for rule in rules:
        segments = rule.segments
        if rule.is_catch_all:
            segments = segments[:-1]
            if len(parts) < len(segments):
                continue
        elif len(segments) != len(parts):
            continue
        values: dict[str, str] = {}
        for pattern, part in zip(segments, parts):
            placeholder = _PLACEHOLDER.match(pattern)
            if placeholder is None:
                if pattern != part:
                    break
            elif _ID.match(part) and part not in (".", ".."):
                values[placeholder[1]] = part
            else:
                raise InputError(f"segment {placeholder[1]} is not a plain id", reason="bad_topic_id")
        else:
            own = any(len(own) == len(parts) and all(o == p or _PLACEHOLDER.match(o) for o, p in zip(own, parts))
                      for own in OWN_TOPICS)
            return Match(rule, values.get(rule.key, ""), values, own)
    raise InputError("topic matches no bridge rule", reason="unmapped_topic")
