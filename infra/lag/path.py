"""Where messages queue along the whole path, and the first stage that is behind; pure, no I/O.

A message waits, in order: in the MQTT broker (mosquitto's store, ``connectors/broker_queue.py``),
in the bridge's window of unconfirmed messages (one per lane), then in Kafka for each consumer
group (the worker on the raw topics first, then the sink, gateway and notifier on the events).
:func:`path_stages` lines the figures up in that order; :func:`first_behind` names the first
stage that is behind, which is where an operator looks first: everything after it waits on it
or is fine, and a stage before it would be behind too if the blockage had reached it.

A stage is behind when (:func:`is_behind`):

* the MQTT broker holds more messages than the bridge windows can have in flight (the rest
  waits in the broker's queue);
* a bridge lane's window is full (it has stopped reading from MQTT), or its oldest message
  has waited for Kafka ``max_age_s`` or more;
* a consumer group's oldest unconsumed record is ``max_age_s`` old or more, or its status is
  STALL, STOP or ERR (Burrow's rules, ``burrow.py``).

A stage whose figures were not reported (a broker other than mosquitto, a bridge whose
/metrics could not be read) is shown as such and never judged.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .burrow import Status
from .snapshot import Snapshot

# Behind from this age on: well under the minute after which positions are stale (the
# Prometheus rule GuardstreamPositionsStale), and over what a healthy pipeline shows (tens of ms).
BEHIND_AGE_S = 10.0
FAILING = frozenset({Status.STALL, Status.STOP, Status.ERR})


@dataclass(frozen=True)
class BridgeWindow:
    """One bridge lane's window, as its /metrics reported it."""

    source: str  # the bridge's /metrics URL
    lane: str
    messages: int
    capacity: int
    oldest_age_s: float
    producer_queue: int | None = None


@dataclass(frozen=True)
class StageQueue:
    """One stage's queue. ``queued`` None: not reported, so not judged."""

    stage: str  # "mqtt broker", "bridge main", "group guardstream-worker"
    queued: int | None
    limit: int | None = None  # queued past this (broker) or at it (bridge window) is behind
    age_s: float | None = None  # how long the oldest waiting message has waited
    status: Status | None = None  # a consumer group's Burrow status
    note: str = ""


def is_behind(stage: StageQueue, max_age_s: float = BEHIND_AGE_S) -> bool:
    """Whether ``stage`` is behind (see the module's docstring)."""
    if stage.queued is None:
        return False
    if stage.status in FAILING:
        return True
    if stage.age_s is not None and stage.age_s >= max_age_s:
        return True
    if stage.limit is None:
        return False
    if stage.stage.startswith("bridge"):
        return stage.queued >= stage.limit
    return stage.queued > stage.limit


def first_behind(stages: Iterable[StageQueue], max_age_s: float = BEHIND_AGE_S) -> StageQueue | None:
    """The first stage along the path that is behind; None when none is."""
    return next((s for s in stages if is_behind(s, max_age_s)), None)


def _group_rank(topics: set[str], raw_topics: frozenset[str]) -> int:
    """Groups reading raw topics (the worker) come before those reading what the worker wrote."""
    return 0 if topics & raw_topics else 1


def path_stages(broker_queued: int | None, windows: Sequence[BridgeWindow], snapshot: Snapshot,
                raw_topics: frozenset[str]) -> list[StageQueue]:
    """Every stage's queue in the order a message passes them.

    ``broker_queued``: the MQTT broker's queued messages (None: not reported). ``windows``: the
    bridge lanes read from the bridges' /metrics (none: none could be read). The broker's limit
    is what the bridge windows can hold in flight; unknown without them.
    """
    capacity = sum(w.capacity for w in windows) if windows else None
    stages = [StageQueue("mqtt broker", broker_queued, capacity,
                         note="" if broker_queued is not None else "not reported (mosquitto $SYS only)")]
    if windows:
        stages += [StageQueue(f"bridge {w.lane}", w.messages, w.capacity, w.oldest_age_s,
                              note="" if w.producer_queue is None else f"producer queue {w.producer_queue}")
                   for w in windows]
    else:
        stages.append(StageQueue("bridge", None, note="/metrics not read"))
    groups: dict[str, list] = {}
    for row in snapshot.lags:
        groups.setdefault(row.group, []).append(row)
    ordered = sorted(snapshot.groups, key=lambda g: (_group_rank({r.topic for r in groups.get(g, [])}, raw_topics), g))
    for group in ordered:
        rows = groups.get(group, [])
        ages = [r.lag_seconds for r in rows if r.lag_seconds is not None]
        stages.append(StageQueue(f"group {group}", sum(r.lag for r in rows), None, max(ages) if ages else None,
                                 snapshot.groups[group]))
    return stages


PATH_COLUMNS = ["stage", "queued", "limit", "oldest_s", "status", "behind"]


def path_rows(stages: Sequence[StageQueue], max_age_s: float = BEHIND_AGE_S) -> list[list[str]]:
    """Rows under :data:`PATH_COLUMNS`."""
    def text(value: object) -> str:
        return "" if value is None else f"{value:.1f}" if isinstance(value, float) else str(value)
    return [[s.stage, "-" if s.queued is None else str(s.queued), text(s.limit), text(s.age_s),
             s.status.value if s.status else s.note, "BEHIND" if is_behind(s, max_age_s) else ""]
            for s in stages]


def verdict(stages: Sequence[StageQueue], max_age_s: float = BEHIND_AGE_S) -> str:
    """One line naming the first stage behind."""
    first = first_behind(stages, max_age_s)
    if first is None:
        return "no stage is behind"
    return f"first stage behind: {first.stage}"
