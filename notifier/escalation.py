"""Escalation of one alert through its rule's tiers, as a transition table; pure, no I/O.

An alert is NEW (no row yet), NOTIFYING (a tier was notified and the next one waits for
its time), EXHAUSTED (the last tier was notified; nothing more is due) or STOPPED (an
operator acknowledged, resolved or called it a false alarm). ``TRANSITIONS`` is the whole
behaviour; ``transition_table_markdown()`` prints it for ``docs/notify-escalation.md``.

Entries marked ``UntilLast`` notify the next tier and take their ``reached`` step when that
tier is the rule's last. A pair missing from the table is a bug (``KeyError``): a timer
fires only for NOTIFYING alerts. An action may come before its alert (the two topics are
read by one consumer but are independent): the alert is then STOPPED before it was seen,
and notifies nobody when it comes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType


class State(StrEnum):
    NEW = "NEW"
    NOTIFYING = "NOTIFYING"
    EXHAUSTED = "EXHAUSTED"
    STOPPED = "STOPPED"


class Event(StrEnum):
    ALERT = "ALERT"  # the alert was read from events.critical (again, after a replay)
    DUE = "DUE"  # the current tier's escalate_after has passed
    STOP = "STOP"  # ACKNOWLEDGE, RESOLVE or FALSE_ALARM on alerts.actions


class Effect(StrEnum):
    NOTIFY_NEXT = "notify the next tier"
    CANCEL_UNSENT = "cancel notifications not sent yet"


@dataclass(frozen=True)
class Step:
    next: State
    effect: Effect | None = None


@dataclass(frozen=True)
class UntilLast:
    """Notify the next tier: ``below`` while more tiers follow it, ``reached`` when it is the last."""

    below: Step
    reached: Step


_S, _E = State, Event
_NEXT_TIER = UntilLast(below=Step(_S.NOTIFYING, Effect.NOTIFY_NEXT), reached=Step(_S.EXHAUSTED, Effect.NOTIFY_NEXT))

TRANSITIONS: Mapping[tuple[State, Event], Step | UntilLast] = MappingProxyType({
    # state          event       step
    (_S.NEW, _E.ALERT): _NEXT_TIER,
    (_S.NEW, _E.STOP): Step(_S.STOPPED),
    (_S.NOTIFYING, _E.ALERT): Step(_S.NOTIFYING),
    (_S.NOTIFYING, _E.DUE): _NEXT_TIER,
    (_S.NOTIFYING, _E.STOP): Step(_S.STOPPED, Effect.CANCEL_UNSENT),
    (_S.EXHAUSTED, _E.ALERT): Step(_S.EXHAUSTED),
    (_S.EXHAUSTED, _E.DUE): Step(_S.EXHAUSTED),
    (_S.EXHAUSTED, _E.STOP): Step(_S.STOPPED, Effect.CANCEL_UNSENT),
    (_S.STOPPED, _E.ALERT): Step(_S.STOPPED),
    (_S.STOPPED, _E.DUE): Step(_S.STOPPED),
    (_S.STOPPED, _E.STOP): Step(_S.STOPPED),
})


def step(state: State, event: Event, tier: int, tiers: int) -> tuple[Step, int]:
    """(the step taken, the tier notified after it) for an alert at ``tier`` (0: none yet) of ``tiers``."""
    entry = TRANSITIONS[(state, event)]
    if isinstance(entry, UntilLast):
        tier += 1
        return (entry.reached if tier >= tiers else entry.below), tier
    return entry, tier


def _describe(entry: Step | UntilLast) -> str:
    def one(s: Step) -> str:
        return f"{s.next}" + (f", {s.effect}" if s.effect else "")
    if isinstance(entry, UntilLast):
        return f"{one(entry.below)}; on the last tier: {one(entry.reached)}"
    return one(entry)


def transition_table_markdown() -> str:
    lines = ["# Notification escalation", "",
             "Generated from `notifier/escalation.py` (`TRANSITIONS`); "
             "`python -m guardstream.notifier.escalation` rewrites it.", "",
             "| state | event | next state, effect |", "| --- | --- | --- |"]
    lines += [f"| {state} | {event} | {_describe(entry)} |" for (state, event), entry in TRANSITIONS.items()]
    lines += ["", "A pair not in the table is a bug: a timer fires only for NOTIFYING alerts, and NEW has no timer.",
              ""]
    return "\n".join(lines)


if __name__ == "__main__":
    from pathlib import Path
    (Path(__file__).resolve().parents[1] / "docs" / "notify-escalation.md").write_text(transition_table_markdown())
