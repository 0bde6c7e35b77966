"""A consumer group's status from a sliding window of offsets; pure, no I/O.

After Burrow's "Consumer Lag Evaluation Rules": no lag threshold to tune; a
partition is judged by how its committed offset and lag moved over the last N
commits, and a group takes the worst status of its partitions.

What counts as a commit. Burrow reads every commit from ``__consumer_offsets``;
the Admin API only shows the offset committed last. So the window takes one
entry per collection while the group has live members (a live consumer commits
all along, like the commits Burrow sees), and otherwise only when the committed
offset moved (a commit certainly happened). An offset that moves backwards (a
reset for a replay) starts the window afresh instead of reading as an error.

The rules, for one partition, in order; the first that applies decides:

=====  ==========================================================  ======
rule   condition                                                   status
=====  ==========================================================  ======
1      the current lag is zero                                     OK
2      now - last commit > last commit - first commit, i.e. no     STOP
       commit for longer than the window spans
3      some commit in the window had zero lag                      OK
4      the window is not full yet: no trend to judge               OK
5      the committed offset never changed over the window          STALL
6      the lag never decreased over the window                     WARN
7      otherwise                                                   OK
=====  ==========================================================  ======

Two departures from Burrow, both deliberate. Rule 2 comes before rule 3, so a
consumer that died while caught up reads STOP once records pile up behind it
(Burrow keeps it OK for as long as the zero-lag commit stays in the window).
Rules 5 and 6 wait for a full window, so an exporter that just started does not
call every lagging partition stalled on its first look. ERR is a group-level
verdict: the group's offsets or state could not be read.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum


class Status(StrEnum):
    OK = "OK"
    WARN = "WARN"  # moving, but not catching up
    STALL = "STALL"  # live, committing, not moving
    STOP = "STOP"  # no commit for longer than the window spans
    ERR = "ERR"  # the group could not be evaluated


# worst last: a group shows the worst status among its partitions
SEVERITY: tuple[Status, ...] = (Status.OK, Status.WARN, Status.STALL, Status.STOP, Status.ERR)


@dataclass(frozen=True)
class Commit:
    """One entry of a partition's window."""

    offset: int
    lag: int
    at: float  # seconds since the epoch, when it was observed


Window = tuple[Commit, ...]  # oldest first


def advance(window: Window, seen: Commit, *, live: bool, size: int) -> Window:
    """The window after one collection that saw the committed offset and lag in ``seen``.

    ``live``: the group has members. Keeps at most ``size`` entries.
    """
    if window and seen.offset < window[-1].offset:
        return (seen,)
    if window and not live and seen.offset == window[-1].offset:
        return window
    return (window + (seen,))[-size:]


def partition_status(window: Window, lag: int, now: float, size: int) -> Status:
    """The status of one partition whose current lag is ``lag`` (see the rules above)."""
    if lag <= 0 or not window:
        return Status.OK
    first, last = window[0], window[-1]
    if now - last.at > last.at - first.at:
        return Status.STOP
    if any(commit.lag <= 0 for commit in window):
        return Status.OK
    if len(window) < size:
        return Status.OK
    pairs = list(zip(window, window[1:]))
    if all(later.offset == earlier.offset for earlier, later in pairs):
        return Status.STALL
    if all(later.lag >= earlier.lag for earlier, later in pairs):
        return Status.WARN
    return Status.OK


def worst(statuses: Iterable[Status]) -> Status:
    """A group's status: the worst of its partitions' (OK when it has none)."""
    return max(statuses, key=SEVERITY.index, default=Status.OK)
