"""Notification routing rules: a TOML file read into frozen data; pure, no I/O but the file read.

    life_safety = ["PANIC", "SOS", ...]    kinds that ignore quiet hours
    [rate_limits] sms = 10                  notifications a minute, per tenant and channel (0: no limit);
                                            or sms = { count = 10, per_s = 60 } for another window
    [sites] "guard-7" = "hq"                device id -> site, for messages and rules' ``sites``
    [recipients.NAME]                       email / phone / webhook addresses, quiet_hours, timezone
    [[rules]]                               name, tenants, kinds, severities, sites (each optional: any)
    [[rules.tiers]]                         recipients, channels, escalate_after_s
    channels: email, webhook, sms, push (``push = true`` on the recipient: the browsers it subscribed)

The first rule that matches an alert routes it. Tier 1 is notified at once; tier k+1 when
tier k's ``escalate_after_s`` has passed without an acknowledgement. The default file is
``rules_default.toml`` beside this module; ``GUARDSTREAM_NOTIFY_RULES`` replaces it whole.
A bad file is one :class:`InputError` (reason ``bad_notify_rules``) naming the problem.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from guardstream.errors import InputError

DEFAULT_RULES_PATH = Path(__file__).resolve().parent / "rules_default.toml"
CHANNELS = ("email", "webhook", "sms", "push")
ADDRESS_FIELD = {"email": "email", "webhook": "webhook", "sms": "phone", "push": "push"}  # channel -> field
PUSH_ADDRESS = "subscribed browsers"  # push goes to the recipient's rows of push_subscriptions
ALERT_KINDS = ("PANIC", "SOS", "FALL", "TAMPER", "SMOKE", "FIRE", "LOW_BATTERY", "HIGH_TEMPERATURE",
               "DEVICE_SILENT", "GEOFENCE_VIOLATION", "SYSTEM_DEGRADED")  # enum AlertKind
SEVERITIES = ("CRITICAL", "HIGH", "NORMAL", "LOW")  # enum Severity
_CLOCK = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


def bad_rules(where: str, detail: str) -> InputError:
    return InputError(f"notify rules {where}: {detail}", reason="bad_notify_rules")


@dataclass(frozen=True)
class QuietHours:
    start: time
    end: time  # before start: the quiet hours run over midnight
    zone: str

    @classmethod
    def parse(cls, text: str, zone: str, where: str) -> QuietHours:
        start, sep, end = text.partition("-")
        clocks = [_CLOCK.match(part.strip()) for part in (start, end)]
        if not sep or not all(clocks):
            raise bad_rules(where, f"quiet_hours {text!r} is not HH:MM-HH:MM")
        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise bad_rules(where, f"timezone {zone!r} is not a known time zone") from exc
        (sh, sm), (eh, em) = ((int(c[1]), int(c[2])) for c in clocks if c)
        if (sh, sm) == (eh, em):
            raise bad_rules(where, f"quiet_hours {text!r} is empty")
        return cls(time(sh, sm), time(eh, em), zone)


@dataclass(frozen=True)
class RateLimit:
    count: int  # notifications per window and tenant, at most; 0: no limit
    window_ms: int = 60_000


@dataclass(frozen=True)
class Recipient:
    name: str
    email: str | None = None
    phone: str | None = None
    webhook: str | None = None
    quiet: QuietHours | None = None
    push: bool = False

    def address(self, channel: str) -> str | None:
        if channel == "push":
            return PUSH_ADDRESS if self.push else None
        return getattr(self, ADDRESS_FIELD[channel])


@dataclass(frozen=True)
class Tier:
    recipients: tuple[str, ...]
    channels: tuple[str, ...]
    escalate_after_ms: int | None  # None on the last tier


@dataclass(frozen=True)
class Rule:
    name: str
    tiers: tuple[Tier, ...]
    tenants: frozenset[str] | None = None  # None: any
    kinds: frozenset[str] | None = None
    severities: frozenset[str] | None = None
    sites: frozenset[str] | None = None

    def matches(self, tenant: str, kind: str, severity: str, site: str | None) -> bool:
        return ((self.tenants is None or tenant in self.tenants)
                and (self.kinds is None or kind in self.kinds)
                and (self.severities is None or severity in self.severities)
                and (self.sites is None or site in self.sites))


@dataclass(frozen=True)
class RuleSet:
    rules: tuple[Rule, ...]
    recipients: Mapping[str, Recipient]
    life_safety: frozenset[str]
    rate_limits: Mapping[str, RateLimit]  # by channel; a channel absent has no limit
    sites: Mapping[str, str]  # device id -> site

    def route(self, tenant: str, kind: str, severity: str, site: str | None) -> Rule | None:
        """The first rule that matches, or None: such an alert notifies nobody."""
        for rule in self.rules:
            if rule.matches(tenant, kind, severity, site):
                return rule
        return None

    def channels_used(self) -> frozenset[str]:
        return frozenset(c for rule in self.rules for tier in rule.tiers for c in tier.channels)


# -- reading ----------------------------------------------------------------------------------

def load_rules(path: Path | None = None) -> RuleSet:
    """The rules of ``path`` (default: the shipped file); :class:`InputError` naming the first problem."""
    path = path or DEFAULT_RULES_PATH
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise bad_rules(str(path), f"cannot be read: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise bad_rules(str(path), f"is not TOML: {exc}") from exc
    return parse_rules(data)


def parse_rules(data: Mapping[str, Any]) -> RuleSet:
    _only(data, "the file", {"life_safety", "rate_limits", "sites", "recipients", "rules"})
    life_safety = frozenset(_names(data, "life_safety", "the file", ALERT_KINDS) or ())
    limits = data.get("rate_limits", {})
    _only(limits, "[rate_limits]", set(CHANNELS))
    rate_limits = {channel: _rate_limit(f"[rate_limits].{channel}", limit) for channel, limit in limits.items()}
    sites = data.get("sites", {})
    if not all(isinstance(v, str) for v in sites.values()):
        raise bad_rules("[sites]", "maps device ids to site names (strings)")
    recipients = {name: _recipient(name, body) for name, body in data.get("recipients", {}).items()}
    rules = tuple(_rule(i, body, recipients) for i, body in enumerate(data.get("rules", [])))
    names = [r.name for r in rules]
    if len(set(names)) != len(names):
        raise bad_rules("[[rules]]", "two rules share a name")
    return RuleSet(rules, recipients, life_safety, rate_limits, dict(sites))


def _rate_limit(where: str, value: Any) -> RateLimit:
    def whole(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v >= 0
    if whole(value):
        return RateLimit(value)
    if isinstance(value, dict):
        _only(value, where, {"count", "per_s"})
        per_s = value.get("per_s", 60)
        if whole(value.get("count")) and isinstance(per_s, int | float) and not isinstance(per_s, bool) and per_s > 0:
            return RateLimit(value["count"], round(per_s * 1000))
    raise bad_rules(where, f"must be a whole number >= 0 (a minute) or {{ count = N, per_s = S }}, got {value!r}")


def _only(table: Any, where: str, allowed: set[str]) -> None:
    if not isinstance(table, dict):
        raise bad_rules(where, "must be a table")
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise bad_rules(where, f"unknown key {unknown[0]!r} (allowed: {', '.join(sorted(allowed))})")


def _names(table: Mapping[str, Any], key: str, where: str, allowed: tuple[str, ...] | None) -> tuple[str, ...] | None:
    if key not in table:
        return None
    value = table[key]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise bad_rules(f"{where}.{key}", "must be a non-empty list of strings (leave it out for any)")
    if allowed is not None:
        unknown = [v for v in value if v not in allowed]
        if unknown:
            raise bad_rules(f"{where}.{key}", f"{unknown[0]!r} is not one of {', '.join(allowed)}")
    return tuple(value)


def _recipient(name: str, body: Any) -> Recipient:
    where = f"[recipients.{name}]"
    _only(body, where, {"email", "phone", "webhook", "push", "quiet_hours", "timezone"})
    if not isinstance(body.get("push", False), bool):
        raise bad_rules(where, "push must be true or false (true: the browsers this recipient subscribed)")
    for key in ("email", "phone", "webhook", "quiet_hours", "timezone"):
        if key in body and not (isinstance(body[key], str) and body[key].strip()):
            raise bad_rules(where, f"{key} must be a non-empty string")
    if "email" in body and "@" not in body["email"]:
        raise bad_rules(where, f"email {body['email']!r} is not an address")
    if "webhook" in body and not body["webhook"].startswith(("http://", "https://")):
        raise bad_rules(where, f"webhook {body['webhook']!r} is not an http(s) URL")
    if "phone" in body and not re.fullmatch(r"\+?[0-9 ()-]{3,20}", body["phone"]):
        raise bad_rules(where, f"phone {body['phone']!r} is not a phone number")
    quiet = (QuietHours.parse(body["quiet_hours"], body.get("timezone", "UTC"), where)
             if "quiet_hours" in body else None)
    return Recipient(name, body.get("email"), body.get("phone"), body.get("webhook"), quiet, body.get("push", False))


def _rule(index: int, body: Any, recipients: Mapping[str, Recipient]) -> Rule:
    where = f"[[rules]] #{index + 1}"
    _only(body, where, {"name", "tenants", "kinds", "severities", "sites", "tiers"})
    name = body.get("name")
    if not isinstance(name, str) or not name:
        raise bad_rules(where, "needs a name")
    where = f"rule {name!r}"
    tiers_body = body.get("tiers")
    if not isinstance(tiers_body, list) or not tiers_body:
        raise bad_rules(where, "needs at least one [[rules.tiers]]")
    tiers = tuple(_tier(f"{where} tier {i + 1}", t, recipients, last=i == len(tiers_body) - 1)
                  for i, t in enumerate(tiers_body))

    def any_of(key: str, allowed: tuple[str, ...] | None = None) -> frozenset[str] | None:
        names = _names(body, key, where, allowed)
        return None if names is None else frozenset(names)

    return Rule(name, tiers, any_of("tenants"), any_of("kinds", ALERT_KINDS), any_of("severities", SEVERITIES),
                any_of("sites"))


def _tier(where: str, body: Any, recipients: Mapping[str, Recipient], last: bool) -> Tier:
    _only(body, where, {"recipients", "channels", "escalate_after_s"})
    names = _names(body, "recipients", where, None)
    channels = _names(body, "channels", where, CHANNELS)
    if names is None or channels is None:
        raise bad_rules(where, "needs recipients and channels")
    for name in names:
        if name not in recipients:
            raise bad_rules(where, f"recipient {name!r} is not in [recipients]")
        for channel in channels:
            if recipients[name].address(channel) is None:
                raise bad_rules(where, f"recipient {name!r} has no {ADDRESS_FIELD[channel]} for channel {channel}")
    after = body.get("escalate_after_s")
    if after is None and not last:
        raise bad_rules(where, "needs escalate_after_s (every tier but the last)")
    if after is not None and (isinstance(after, bool) or not isinstance(after, int | float) or after <= 0):
        raise bad_rules(where, f"escalate_after_s must be a number of seconds above 0, got {after!r}")
    return Tier(names, channels, None if last or after is None else round(after * 1000))
