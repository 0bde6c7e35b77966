"""Alert rules: a validated event and the device's rule state in, new state and alerts out; pure.

    rule              fires on                                         re-arms when
    low_battery       Telemetry battery_pct < below_pct                battery_pct > rearm_above_pct
    high_temperature  TEMPERATURE reading value, or Telemetry          the temperature < rearm_below_c
                      temperature_c, > above_c
    smoke             SMOKE reading with a detected state or value > 0  a SMOKE reading without smoke
    system_degraded   SystemHealth status changes to one of statuses   (fires on every such change)
    device_silent     no event for after_minutes: ``silent_check``,    the device is heard again
                      called by either worker engine from a timer

Thresholds and severities come from ``rules_default.toml`` beside this module,
overridden key by key by the file given to ``load_rules``. Alerts that devices
send themselves (panic, SOS ...) are not rules: they pass through with their own
severity, so ``evaluate`` raises nothing for a DeviceAlert.

``RuleState`` is the state of one device (the worker keeps one per device id,
in memory and in the worker-state changelog) and turns into JSON and back. Every alert is a complete
guardstream.DeviceAlert record whose ``event_id`` is a UUIDv5 of the cause's
event_id and the rule name: replaying a topic raises alerts with the same ids,
which the sink's unique key then drops.
"""

from __future__ import annotations

import tomllib
import typing
import uuid
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, fields, replace
from functools import cache
from pathlib import Path
from typing import Any

from guardstream.errors import InputError
from guardstream.records import SENSOR_READING, SYSTEM_HEALTH, TELEMETRY, DeviceAlert, device_alert
from guardstream.streams.validation import HEALTH_STATUSES, SEVERITIES

DEFAULT_RULES_PATH = Path(__file__).resolve().parent / "rules_default.toml"
ALERT_ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:guardstream:alert")
MAX_MESSAGE_CHARS = 500  # DeviceAlert.message


def _bad_rules(detail: str) -> InputError:
    return InputError(f"rules: {detail}", reason="bad_rules")


def _check_severity(section: str, severity: str) -> None:
    if severity not in SEVERITIES:
        raise _bad_rules(f"{section}.severity {severity!r} is not one of {', '.join(SEVERITIES)}")


@dataclass(frozen=True)
class LowBattery:
    enabled: bool
    below_pct: float
    rearm_above_pct: float
    severity: str

    def __post_init__(self) -> None:
        _check_severity("low_battery", self.severity)
        if not 0 <= self.below_pct < self.rearm_above_pct <= 100:
            raise _bad_rules("low_battery needs 0 <= below_pct < rearm_above_pct <= 100")


@dataclass(frozen=True)
class HighTemperature:
    enabled: bool
    above_c: float
    rearm_below_c: float
    severity: str

    def __post_init__(self) -> None:
        _check_severity("high_temperature", self.severity)
        if not self.rearm_below_c < self.above_c:
            raise _bad_rules("high_temperature needs rearm_below_c < above_c")


@dataclass(frozen=True)
class Smoke:
    enabled: bool
    detected_states: tuple[str, ...]
    severity: str

    def __post_init__(self) -> None:
        _check_severity("smoke", self.severity)
        # validation lower-cases sensor states, so the rule compares lower case
        object.__setattr__(self, "detected_states", tuple(s.lower() for s in self.detected_states))


@dataclass(frozen=True)
class DeviceSilent:
    enabled: bool
    after_minutes: float
    severity: str

    def __post_init__(self) -> None:
        _check_severity("device_silent", self.severity)
        if not self.after_minutes > 0:
            raise _bad_rules("device_silent.after_minutes must be above 0")

    @property
    def after_ms(self) -> int:
        return round(self.after_minutes * 60_000)


@dataclass(frozen=True)
class SystemDegraded:
    enabled: bool
    statuses: tuple[str, ...]
    severity: str

    def __post_init__(self) -> None:
        _check_severity("system_degraded", self.severity)
        unknown = set(self.statuses) - set(HEALTH_STATUSES)
        if unknown:
            raise _bad_rules(f"system_degraded.statuses: {sorted(unknown)} not in {', '.join(HEALTH_STATUSES)}")


@dataclass(frozen=True)
class Rules:
    low_battery: LowBattery
    high_temperature: HighTemperature
    smoke: Smoke
    device_silent: DeviceSilent
    system_degraded: SystemDegraded


# -- loading ---------------------------------------------------------------------------------

def load_rules(path: str | Path | None = None) -> Rules:
    """The default rules, overridden by the TOML file at ``path`` when given."""
    if path is None:
        return default_rules()
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise _bad_rules(f"cannot read {path}: {exc.strerror}") from exc
    return parse_rules(text)


@cache
def default_rules() -> Rules:
    return parse_rules("")


def parse_rules(text: str) -> Rules:
    """The default rules, overridden key by key by the TOML ``text``."""
    tables = _toml(DEFAULT_RULES_PATH.read_text(encoding="utf-8"))
    for section, table in _toml(text).items():
        if section not in tables:
            raise _bad_rules(f"unknown section [{section}] (known: {', '.join(tables)})")
        if not isinstance(table, dict):
            raise _bad_rules(f"{section} must be a table")
        tables[section] = {**tables[section], **table}
    hints = typing.get_type_hints(Rules)
    return Rules(**{f.name: _section(hints[f.name], f.name, tables.get(f.name, {})) for f in fields(Rules)})


def _toml(text: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _bad_rules(f"not TOML: {exc}") from exc


def _section(cls: type, section: str, table: Mapping[str, Any]) -> Any:
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(table) - set(hints))
    if unknown:
        raise _bad_rules(f"unknown key {section}.{unknown[0]} (known: {', '.join(hints)})")
    values = {}
    for key, hint in hints.items():
        if key not in table:
            raise _bad_rules(f"{section}.{key} is missing")
        values[key] = _typed(f"{section}.{key}", table[key], hint)
    return cls(**values)


def _typed(name: str, value: Any, hint: Any) -> Any:
    if hint is bool and isinstance(value, bool):
        return value
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is str and isinstance(value, str):
        return value
    if hint == tuple[str, ...] and isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    words = {bool: "true or false", float: "a number", str: "a string"}.get(hint, "a list of strings")
    raise _bad_rules(f"{name} must be {words}")


# -- state ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class RuleState:
    """One device's rule state: which rules fired and wait to re-arm, its last health status."""

    latched: frozenset[str] = frozenset()
    last_status: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; ``from_dict`` gives back an equal state."""
        return {"latched": sorted(self.latched), "last_status": self.last_status}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RuleState:
        return cls(frozenset(data.get("latched", ())), data.get("last_status"))


def _episode(state: RuleState, rule: str, firing: bool, safe: bool) -> tuple[RuleState, bool]:
    """Edge trigger with hysteresis: fire on ``firing`` unless latched; ``safe`` re-arms."""
    if rule in state.latched:
        return (replace(state, latched=state.latched - {rule}) if safe else state), False
    if firing:
        return replace(state, latched=state.latched | {rule}), True
    return state, False


# -- evaluation ----------------------------------------------------------------------------

Alerts = list[DeviceAlert]


def evaluate(event_schema: str, record: dict[str, Any], state: RuleState | None,
             rules: Rules) -> tuple[RuleState, Alerts]:
    """Apply every rule to one validated event of its device; the new state and the alerts raised."""
    check = _CHECKS.get(event_schema)
    state = state or RuleState()
    return (state, []) if check is None else check(record, state, rules)


def alert_event_id(cause_event_id: str, rule: str) -> str:
    """The event_id of the alert ``rule`` raises for the event ``cause_event_id``: same inputs, same id."""
    return str(uuid.uuid5(ALERT_ID_NAMESPACE, f"{rule}\n{cause_event_id}"))


def _alert(cause: Mapping[str, Any], rule: str, kind: str, severity: str, message: str) -> DeviceAlert:
    """The alert ``rule`` raises for the event ``cause``: same device, same times."""
    return device_alert(event_id=alert_event_id(cause["event_id"], rule), tenant=cause["tenant"],
                        device_id=cause["device_id"], ts_ms=cause["ts_ms"], received_ms=cause["received_ms"],
                        kind=kind, severity=severity, lat=None, lon=None, message=message[:MAX_MESSAGE_CHARS],
                        rule=rule, cause_event_id=cause["event_id"])


def _telemetry(record: dict[str, Any], state: RuleState, rules: Rules) -> tuple[RuleState, Alerts]:
    state, battery = _low_battery(record, state, rules.low_battery)
    state, heat = _high_temperature(record, record["temperature_c"], state, rules.high_temperature)
    return state, battery + heat


def _sensor_reading(record: dict[str, Any], state: RuleState, rules: Rules) -> tuple[RuleState, Alerts]:
    if record["kind"] == "SMOKE":
        return _smoke(record, state, rules.smoke)
    if record["kind"] == "TEMPERATURE":
        return _high_temperature(record, record["value"], state, rules.high_temperature)
    return state, []


def _low_battery(record: dict[str, Any], state: RuleState, rule: LowBattery) -> tuple[RuleState, Alerts]:
    pct = record["battery_pct"]
    if not rule.enabled or pct is None:
        return state, []
    state, fired = _episode(state, "low_battery", pct < rule.below_pct, pct > rule.rearm_above_pct)
    message = f"battery at {pct:g} %, below {rule.below_pct:g} %"
    return state, [_alert(record, "low_battery", "LOW_BATTERY", rule.severity, message)] if fired else []


def _high_temperature(record: dict[str, Any], celsius: float | None, state: RuleState,
                      rule: HighTemperature) -> tuple[RuleState, Alerts]:
    if not rule.enabled or celsius is None:
        return state, []
    state, fired = _episode(state, "high_temperature", celsius > rule.above_c, celsius < rule.rearm_below_c)
    message = f"temperature {celsius:g} °C, above {rule.above_c:g} °C"
    return state, [_alert(record, "high_temperature", "HIGH_TEMPERATURE", rule.severity, message)] if fired else []


def _smoke(record: dict[str, Any], state: RuleState, rule: Smoke) -> tuple[RuleState, Alerts]:
    reading_state, value = record["state"], record["value"]
    if not rule.enabled or (reading_state is None and value is None):
        return state, []
    detected = (reading_state or "").lower() in rule.detected_states or (value is not None and value > 0)
    state, fired = _episode(state, "smoke", detected, not detected)
    site = f" at site {record['site_id']}" if record["site_id"] else ""
    return state, [_alert(record, "smoke", "SMOKE", rule.severity, f"smoke detected{site}")] if fired else []


def _system_health(record: dict[str, Any], state: RuleState, rules: Rules) -> tuple[RuleState, Alerts]:
    rule, status = rules.system_degraded, record["status"]
    previous, state = state.last_status, replace(state, last_status=status)
    if not rule.enabled or status not in rule.statuses or status == previous:
        return state, []
    detail = f": {record['detail']}" if record["detail"] else ""
    message = f"{record['device_id']} reports {status}{detail}"
    return state, [_alert(record, "system_degraded", "SYSTEM_DEGRADED", rule.severity, message)]


_CHECKS: dict[str, Callable[[dict[str, Any], RuleState, Rules], tuple[RuleState, Alerts]]] = {
    TELEMETRY: _telemetry,
    SENSOR_READING: _sensor_reading,
    SYSTEM_HEALTH: _system_health,
    # A DeviceAlert is absent on purpose: a device's own alert passes through as it is.
}


def silent_devices(last_seen: Mapping[str, tuple[str, int]], now_ms: int, already_alerted: Mapping[str, int],
                   rules: Rules | None = None) -> Alerts:
    """DEVICE_SILENT alerts for devices not heard from for ``device_silent.after_minutes``.

    ``last_seen`` maps a device id to (tenant, epoch ms of its last event);
    ``already_alerted`` maps a device id to the last-seen ms it was alerted for.
    The caller records ``already_alerted[device] = last_seen[device][1]`` for
    every alert returned: a device is alerted again only once it has been heard
    from since, so nothing needs clearing when it comes back. The caller drops the
    devices :func:`forgotten_devices` names from ``last_seen`` first.
    """
    rule = (rules or default_rules()).device_silent
    if not rule.enabled:
        return []
    alerts = []
    for device_id in sorted(last_seen):
        tenant, last_ms = last_seen[device_id]
        if now_ms - last_ms < rule.after_ms or already_alerted.get(device_id) == last_ms:
            continue
        # No event caused it, so none is named; the id comes from the silence: one device, one last event.
        alerts.append(device_alert(
            event_id=alert_event_id(f"{device_id}@{last_ms}", "device_silent"), tenant=tenant, device_id=device_id,
            ts_ms=last_ms + rule.after_ms, received_ms=now_ms, kind="DEVICE_SILENT", severity=rule.severity,
            lat=None, lon=None, message=f"no event for {rule.after_minutes:g} minutes", rule="device_silent",
            cause_event_id=None))
    return alerts


def forgotten_devices(last_seen: Mapping[str, tuple[str, int]], now_ms: int, horizon_ms: int,
                      registered: Collection[str] = ()) -> list[str]:
    """The devices the silent-device check forgets: not heard from for ``horizon_ms``.

    Without this every device id ever seen stayed in memory, and any id a publisher
    invented once raised a DEVICE_SILENT alert after ``after_minutes``, forever
    growing. A device is therefore watched while it is *recently active* (heard from
    within the horizon, ``GUARDSTREAM_WORKER_DEVICE_HORIZON_S``) and forgotten after,
    until it is heard from again. ``registered`` (the device registry's enabled devices)
    are never forgotten, however long they are silent.
    """
    return [device for device, (_, last_ms) in last_seen.items()
            if now_ms - last_ms >= horizon_ms and device not in registered]


@dataclass(frozen=True)
class SilentCheck:
    """What one run of the silent-device check decided: devices to forget, alerts to send."""

    forgotten: list[str]  # drop from last_seen and the alerted marks, evict their state
    alerts: Alerts  # DEVICE_SILENT alerts, in device order
    alerted: dict[str, int]  # device -> the last-seen ms it is now alerted for (the caller's marks to set)


def silent_check(last_seen: Mapping[str, tuple[str, int]], now_ms: int, already_alerted: Mapping[str, int],
                 horizon_ms: int, registered: Collection[str] = (), rules: Rules | None = None) -> SilentCheck:
    """The silent-device check of both worker engines, over plain data: who is forgotten
    (:func:`forgotten_devices`), then who of the rest is silent (:func:`silent_devices`).

    Changes nothing: the caller applies the result (forgets, evicts, marks, sends)."""
    forgotten = forgotten_devices(last_seen, now_ms, horizon_ms, registered)
    gone = set(forgotten)
    watched = {device: seen for device, seen in last_seen.items() if device not in gone} if gone else last_seen
    alerts = silent_devices(watched, now_ms, already_alerted, rules)
    return SilentCheck(forgotten, alerts, {a["device_id"]: watched[a["device_id"]][1] for a in alerts})
