"""Subcommands ``lag-exporter`` (a long-running component) and ``lag`` (a table)."""

from __future__ import annotations

import argparse
import sys
import threading
from typing import TYPE_CHECKING

from guardstream.settings import Settings
from guardstream.transport import KAFKA, component_settings

if TYPE_CHECKING:
    from .collect import LagCollector
    from .path import StageQueue
    from .snapshot import Snapshot


def cmd_lag_exporter(args: argparse.Namespace) -> int:
    from .exporter import run
    return run(component_settings(KAFKA))


def cmd_lag(args: argparse.Namespace) -> int:
    from guardstream.console import emit_table
    from .collect import LagCollector
    from .exporter import collection_interval_s
    from .table import COLUMNS, lag_rows
    settings = Settings.from_env()
    collector = LagCollector(settings, group=args.group)
    try:
        if args.watch:
            return _watch(collector, collection_interval_s(settings), settings if args.group is None else None)
        snapshot = collector.collect()
        if args.group is None:
            emit_path(settings, snapshot)
        emit_table("guardstream consumer lag", COLUMNS, lag_rows(snapshot))
        return 0
    finally:
        collector.close()


def path_of(settings: Settings, snapshot: Snapshot) -> list[StageQueue]:
    """The whole path's queues, MQTT broker to consumer groups, read now."""
    from guardstream.catalog import TOPICS
    from .path import path_stages
    from .sources import bridge_urls, read_broker_queued, read_windows
    return path_stages(read_broker_queued(settings), read_windows(bridge_urls(settings)), snapshot,
                       frozenset(t.name for t in TOPICS.raw()))


def emit_path(settings: Settings, snapshot: Snapshot) -> None:
    """The whole path's queues and the first stage behind, as a table and a line."""
    from guardstream.console import emit_table
    from .path import PATH_COLUMNS, path_rows, verdict
    stages = path_of(settings, snapshot)
    emit_table("guardstream pipeline queues", PATH_COLUMNS, path_rows(stages))
    print(verdict(stages), flush=True)


def _watch(collector: LagCollector, interval_s: float, path_settings: Settings | None) -> int:
    """Refresh every interval until Ctrl-C; the status windows fill as the refreshes go by. With
    ``path_settings``, the whole path's queues above the lag table."""
    from rich.console import Console, Group
    from rich.live import Live
    from .path import PATH_COLUMNS, path_rows, verdict
    from .table import path_table
    from guardstream.console import emit_table
    from guardstream.errors import UnavailableError
    from .table import COLUMNS, lag_rows, lag_table
    console = Console()
    pause = threading.Event()  # never set: waits out the interval, and Ctrl-C still interrupts
    title = f"guardstream consumer lag (every {interval_s:g}s; Ctrl-C stops)"
    try:
        with Live(console=console, auto_refresh=False) if console.is_terminal else _NoLive() as live:
            while True:
                caption = None
                try:
                    snapshot = collector.collect()
                except UnavailableError as exc:
                    snapshot, caption = collector.snapshot, f"last collection failed: {exc.detail}"
                stages = path_of(path_settings, snapshot) if path_settings is not None else None
                if live is None:
                    if caption:
                        print(caption, file=sys.stderr)
                    if stages is not None:
                        emit_table("guardstream pipeline queues", PATH_COLUMNS, path_rows(stages))
                        print(verdict(stages))
                    emit_table(title, COLUMNS, lag_rows(snapshot))
                    print(flush=True)
                else:
                    table = lag_table(snapshot, title, caption)
                    live.update(table if stages is None else Group(path_table(stages), table), refresh=True)
                pause.wait(interval_s)
    except KeyboardInterrupt:
        return 0


class _NoLive:
    """Stands in for rich's Live when the output is a pipe: each refresh prints a new table."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        sys.stdout.flush()


def register(sub: argparse._SubParsersAction) -> None:
    sub.add_parser("lag-exporter", help="serve consumer lag, lag in seconds and group status on /metrics") \
        .set_defaults(handler=cmd_lag_exporter)
    lag = sub.add_parser("lag", help="where messages queue (MQTT broker, bridge window, each consumer group) and "
                                     "the first stage behind; consumer lag per group, topic and partition")
    lag.add_argument("--group", help="this consumer group only")
    lag.add_argument("--watch", action=_Watch,
                     help="refresh every GUARDSTREAM_LAG_INTERVAL_S until Ctrl-C; statuses build up as it runs")
    lag.set_defaults(handler=cmd_lag, watch=False, one_shot=True)


class _Watch(argparse.Action):
    """``--watch`` runs for as long as one likes: not one-shot, so the client's logs stay on."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: object, option_string: str | None = None) -> None:
        namespace.watch = True
        namespace.one_shot = False
