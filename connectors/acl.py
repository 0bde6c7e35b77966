"""Who may publish and subscribe where on the MQTT broker: a mosquitto ACL from the registry; pure.

A device's MQTT username is its device id (its password comes from the password file,
``infra/mqtt_auth.py``). Each enabled device of the registry may

* **publish** under its own id only, in the shapes the bridge maps (:data:`mapping.DEFAULT_RULES`
  or ``GUARDSTREAM_BRIDGE_RULES``): a rule whose id is its last segment gives exactly that
  topic (``alert/+/ID``); one that goes on after the id gives everything under it
  (``guard/ID/#``), unless that would cover a command topic, in which case only the rule's
  own shape (``device/ID/telemetry``; a catch-all such as ``device/ID/#`` then gives nothing
  beyond the other rules' shapes). System health topics are the components', not a device's;
* **subscribe** to its own command topic (``device/ID/cmd``) and nothing else.

A grant that would still cover a command topic is left out and reported, never written.
Disabled and unregistered devices get no line: with ``allow_anonymous false`` they cannot
even connect. The service user (the bridge, the command relay, ``dlq replay``) reads and
writes every topic the rules map and writes every command topic.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from guardstream.connectors.mapping import COMMAND_TOPIC, Rule

SYSTEM_PREFIX = "system"  # components' health topics: no device publishes there

_PLACEHOLDER = re.compile(r"^\{([a-z_]+)\}$")


def covers(topic_filter: str, topic: str) -> bool:
    """Whether the MQTT subscription filter ``topic_filter`` matches ``topic`` (``+`` and ``#``)."""
    parts, wanted = topic_filter.split("/"), topic.split("/")
    for i, part in enumerate(parts):
        if part == "#":
            return True
        if i >= len(wanted) or (part != "+" and part != wanted[i]):
            return False
    return len(parts) == len(wanted)


def _device_rules(rules: Iterable[Rule]) -> list[Rule]:
    """Rules whose topic names a device: not the components' health topics (``system/...``), nor a
    catch-all with no id in it (``alert/#``, the id in the payload: a device cannot be told apart)."""
    return [r for r in rules if r.prefix != SYSTEM_PREFIX and r.key and "{" + r.key + "}" in r.segments]


def _shape(rule: Rule, device_id: str, upto: int | None = None) -> str:
    """The rule's pattern with the device id for its key and ``+`` for its other placeholders."""
    out = []
    for segment in rule.segments[:upto]:
        placeholder = _PLACEHOLDER.match(segment)
        out.append(segment if placeholder is None else device_id if placeholder[1] == rule.key else "+")
    return "/".join(out)


@dataclass(frozen=True)
class Grants:
    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    left_out: tuple[str, ...]  # grants that would have covered a command topic


def device_grants(rules: Iterable[Rule], device_id: str) -> Grants:
    command = COMMAND_TOPIC.format(device_id=device_id)
    publish: list[str] = []
    left_out: list[str] = []
    for rule in _device_rules(rules):
        at = rule.segments.index("{" + rule.key + "}")
        wide = _shape(rule, device_id, at + 1) + ("/#" if at + 1 < len(rule.segments) else "")
        grant = wide if not covers(wide, command) else _shape(rule, device_id)
        if covers(grant, command):
            if not rule.is_catch_all:
                left_out.append(grant)
            # a catch-all under the device's own prefix (device/ID/#) would reach its command topic:
            # the device keeps the shapes the other rules name, and nothing more
        elif grant not in publish:
            publish.append(grant)
    return Grants(tuple(publish), (command,), tuple(left_out))


def service_grants(rules: Iterable[Rule]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(readwrite filters, write-only filters) of the service user."""
    readwrite = tuple(dict.fromkeys(r.mqtt_filter for r in rules))
    return readwrite, (COMMAND_TOPIC.format(device_id="+"),)


SYS_BROKER = "$SYS/broker/#"


@dataclass(frozen=True)
class Acl:
    text: str
    users: tuple[str, ...]  # device usernames, in the file's order
    left_out: tuple[tuple[str, str], ...]  # (device id, grant) refused because it covered a command topic


def acl_file(rules: tuple[Rule, ...], device_ids: Iterable[str], service_user: str, header: str = "") -> Acl:
    """The mosquitto ACL file for ``device_ids`` (the enabled devices) and the service user."""
    readwrite, write = service_grants(rules)
    lines = [f"# {line}" for line in header.splitlines()]
    lines += ["# no topic lines before the first user: anonymous clients get nothing", "",
              f"user {service_user}", *(f"topic readwrite {f}" for f in readwrite),
              *(f"topic write {f}" for f in write),
              # the broker's own figures: the bridge exports how many messages it holds (broker_queue.py)
              f"topic read {SYS_BROKER}"]
    users: list[str] = []
    left_out: list[tuple[str, str]] = []
    for device_id in sorted(set(device_ids)):
        grants = device_grants(rules, device_id)
        users.append(device_id)
        left_out += [(device_id, g) for g in grants.left_out]
        lines += ["", f"user {device_id}", *(f"topic write {t}" for t in grants.publish),
                  *(f"topic read {t}" for t in grants.subscribe)]
    return Acl("\n".join(lines) + "\n", tuple(users), tuple(left_out))
