"""CPU time and age of a process, read from ``/proc`` (Linux)."""

from __future__ import annotations

import os

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int, children: bool = False) -> float:
    """User + system CPU of ``pid`` (0.0 when it is gone); with ``children``, also of its live
    and exited children."""
    try:
        fields = _stat(pid)
    except OSError:
        return 0.0
    total = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of proc(5))
    if children:
        total += int(fields[13]) + int(fields[14])  # cutime, cstime: children it has reaped
        for child in _children(pid):
            try:
                child_fields = _stat(child)
            except OSError:
                continue
            total += int(child_fields[11]) + int(child_fields[12])
    return total / CLK_TCK


def uptime_seconds(pid: int) -> float:
    """How long ``pid`` has run (0.0 when it is gone)."""
    try:
        started_ticks = int(_stat(pid)[19])  # starttime (field 22 of proc(5)), in ticks since boot
        with open("/proc/uptime") as f:
            since_boot = float(f.read().split()[0])
    except OSError:
        return 0.0
    return max(0.0, since_boot - started_ticks / CLK_TCK)


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if int(_stat(int(entry))[1]) == pid:
                    out.append(int(entry))
            except (OSError, IndexError, ValueError):
                continue
    return out
