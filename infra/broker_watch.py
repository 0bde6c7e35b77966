"""``guardstream up`` tells its operator when the embedded broker has slowed with what it stores.

tansu 0.6's memory store keeps every produced batch as an object and, at each
fetch that finds new records in a partition, lists every object the partition
ever stored; it deletes none (no retention; ``DeleteRecords`` is
unimplemented). Its CPU therefore grows with its uptime at any steady load,
the batch rate rather than the message rate driving it: at 100 msg/s in the
bench's pipeline it added about half a core a minute, and ``guardstream up
--simulate 50`` had it at 1.5 cores after six minutes (README, "The embedded
broker slows as it fills"). Nothing in the pipeline fails, it just gets slow
and takes the machine; so the stack says so, once per broker process, with
what to do about it.

:func:`advice` is the pure decision, :class:`BrokerWatch` the thread that samples
the broker's CPU (``/proc``) and writes the advice to the console.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from guardstream.infra.process_cpu import cpu_seconds, uptime_seconds
from guardstream.infra.supervisor import Supervisor

WATCH_EVERY_S = 60.0
BUSY_SHARE = 0.75  # of one core, over the last interval
BROKER = "kafka"  # the embedded broker's name among the supervisor's children


@dataclass(frozen=True)
class Sample:
    pid: int
    cpu_s: float  # the process's CPU time so far
    at_s: float  # time.monotonic() when read
    uptime_s: float  # how long the process had run then


def advice(previous: Sample, current: Sample, warned_pid: int | None, busy_share: float = BUSY_SHARE) -> str | None:
    """The line to show when the broker ``current`` describes was busy since ``previous``, unless
    that broker process was warned about already; None otherwise. Samples of two different
    processes (the broker was restarted in between) compare nothing."""
    if previous.pid != current.pid or current.pid == warned_pid or current.at_s <= previous.at_s:
        return None
    share = (current.cpu_s - previous.cpu_s) / (current.at_s - previous.at_s)
    if share < busy_share:
        return None
    minutes = current.uptime_s / 60
    return (f"the embedded broker used {share:.0%} of a core over the last {current.at_s - previous.at_s:.0f} s, "
            f"{minutes:.0f} min after it started. tansu 0.6's memory store lists every batch it ever stored at "
            "each fetch and deletes none, so it slows as it fills, whatever the message rate (README: \"The "
            "embedded broker slows as it fills\"). Restart `guardstream up` to start it empty (PostgreSQL keeps "
            "the history; fences, devices and worker state are restored), or point KAFKA_BOOTSTRAP_SERVERS at a "
            "Kafka cluster")


class BrokerWatch:
    """Samples the supervisor's ``kafka`` child every ``every_s`` and logs :func:`advice` under its name."""

    def __init__(self, supervisor: Supervisor, every_s: float = WATCH_EVERY_S,
                 busy_share: float = BUSY_SHARE) -> None:
        self.supervisor, self.every_s, self.busy_share = supervisor, every_s, busy_share
        self.samples = 0  # taken so far
        self._thread = threading.Thread(target=self._run, name="broker-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _sample(self) -> Sample | None:
        pid = self.supervisor.pid(BROKER)
        if pid is None:
            return None
        sample = Sample(pid, cpu_seconds(pid), time.monotonic(), uptime_seconds(pid))
        self.samples += 1
        return sample

    def _run(self) -> None:
        previous = self._sample()
        warned: int | None = None
        while not self.supervisor.stopping.wait(self.every_s):
            current = self._sample()
            if current is None:
                continue
            line = advice(previous, current, warned, self.busy_share) if previous else None
            if line is not None:
                self.supervisor.log(BROKER, line)
                warned = current.pid
            previous = current
