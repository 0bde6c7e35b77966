"""Progress of a long copy: a rich bar with rate and ETA on a terminal, plain lines otherwise."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class PlainProgress:
    """A line on ``out`` at most every ``every_s`` seconds (and at the end): done/total, rate, ETA."""

    def __init__(self, what: str, total: int, out: TextIO = sys.stderr, every_s: float = 5.0) -> None:
        self._what = what
        self._total = total
        self._out = out
        self._every_s = every_s
        self._done = 0
        self._started = time.monotonic()
        self._last_line = self._started

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self._line()

    def advance(self, count: int) -> None:
        self._done += count
        now = time.monotonic()
        if now - self._last_line >= self._every_s:
            self._last_line = now
            self._line()

    def _line(self) -> None:
        elapsed = max(1e-6, time.monotonic() - self._started)
        rate = self._done / elapsed
        left = max(0, self._total - self._done)
        eta = f"{left / rate:.0f}s" if rate > 0 else "?"
        share = f" ({100 * self._done / self._total:.0f}%)" if self._total else ""
        print(f"{self._what}: {self._done}/{self._total} records{share}, {rate:.0f}/s, ETA {eta}",
              file=self._out, flush=True)


class RichProgress:
    def __init__(self, what: str, total: int) -> None:
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)
        self._progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
            TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            console=Console(file=sys.stderr))
        self._task = self._progress.add_task(what, total=total, rate="")

    def __enter__(self) -> RichProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def advance(self, count: int) -> None:
        self._progress.advance(self._task, count)
        speed = self._progress.tasks[0].speed
        self._progress.update(self._task, rate=f"{speed:,.0f} rec/s" if speed else "")


def progress_for(what: str, total: int) -> PlainProgress | RichProgress:
    return RichProgress(what, total) if sys.stderr.isatty() else PlainProgress(what, total)
