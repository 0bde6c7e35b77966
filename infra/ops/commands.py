"""Operator subcommands: ``tail``, ``replay``, ``health`` and ``dlq inspect`` / ``dlq replay``.

Handlers import their dependencies when they run, so building the parser stays cheap.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from typing import TYPE_CHECKING

from guardstream.errors import InputError
from guardstream.settings import Settings

if TYPE_CHECKING:
    from guardstream.schemas.codec import Codec

    from .dlq import Selection
    from .replay_plan import Checkpoint


def _now_ms() -> int:
    return int(time.time() * 1000)


def _codec(settings: Settings) -> Codec:
    from guardstream.schemas.codec import Codec
    from guardstream.schemas.registry import registry_from_settings
    return Codec(registry_from_settings(settings))


# -- tail ----------------------------------------------------------------------------------

def cmd_tail(args: argparse.Namespace) -> int:
    from .positions import DEFAULT_LAST, StartAt, parse_offset
    from .records import parse_filters
    from .tail import LineWriter, TailRequest, tail
    from guardstream.timespec import parse_time
    settings = Settings.from_env()
    if args.from_beginning:
        start = StartAt(last=None, beginning=True)
    elif args.from_time:
        start = StartAt(last=None, time_ms=parse_time(args.from_time, _now_ms()))
    elif args.offset:
        start = StartAt(last=None, offsets=dict(parse_offset(o) for o in args.offset))
    else:
        start = StartAt(last=DEFAULT_LAST if args.last is None else args.last)
    request = TailRequest(args.topic, start, args.follow, parse_filters(args.filter or []), args.max)
    writer = LineWriter(args.format, sys.stdout, follow=args.follow)
    try:
        for shown in tail(settings, _codec(settings), request):
            writer.write(shown)
    except KeyboardInterrupt:
        pass  # Ctrl-C is how a follower ends
    sys.stdout.flush()
    return 0


# -- replay --------------------------------------------------------------------------------

def cmd_replay(args: argparse.Namespace) -> int:
    if bool(args.into) == bool(args.group):
        raise InputError("name one target: --into TOPIC, or --group G --reset-offsets", reason="bad_arguments")
    if args.group:
        if args.create:
            raise InputError("--create makes the --into topic; a group's offsets need no topic made",
                             reason="bad_arguments")
        if not args.reset_offsets:
            raise InputError("--group moves a group's offsets: add --reset-offsets", reason="bad_arguments")
        if args.to:
            raise InputError("--to has no meaning with --group: the group reads on from --from",
                             reason="bad_arguments")
        return _reset(args)
    if args.reset_offsets:
        raise InputError("--reset-offsets needs --group", reason="bad_arguments")
    return _copy(args)


def _reset(args: argparse.Namespace) -> int:
    from guardstream.console import emit_table
    from .replay import reset_group
    rows = reset_group(Settings.from_env(), args.topic, args.group, args.from_time, dry_run=args.dry_run)
    verb = "would move" if args.dry_run else "moved"
    emit_table(f"consumer group {args.group} on {args.topic} ({verb})", ["partition", "committed", "new"],
               [[str(r.partition), "" if r.current is None else str(r.current), str(r.new)] for r in rows])
    print(f"{args.group}: {verb} the offsets of {len(rows)} partition(s) of {args.topic} to {args.from_time}",
          file=sys.stderr)
    return 0


def _copy(args: argparse.Namespace) -> int:
    from .replay import CopyRequest, copy, plan_copy
    settings = Settings.from_env()
    request = CopyRequest(args.topic, args.into, args.from_time, args.to, args.chunk_size, args.max_rate,
                          args.restart)
    if args.create and not args.dry_run:
        from guardstream.infra.topics import create_like
        from .replay import refuse_target
        refuse_target(args.topic, args.into)
        created = create_like(settings, args.into, args.topic)
        if created is not None:
            print(f"replay: created {created.topic} like {args.topic}", file=sys.stderr)
    if args.dry_run:
        checkpoint, resumed = plan_copy(settings, request, _now_ms())
        _print_plan(checkpoint, resumed)
        return 0
    stopping = threading.Event()
    _stop_between_records(stopping)
    result = copy(settings, request, stopping)
    cp = result.checkpoint
    if cp.extra.get("set_aside"):
        print(f"replay {cp.id}: an earlier run's checkpoint was of topics recreated since; set aside, "
              "the range is copied afresh", file=sys.stderr)
    if result.already_done:
        print(f"replay {cp.id}: already finished ({cp.copied} records copied into {cp.into}); "
              f"--restart copies the range again")
        return 0
    found = f", {result.found_copied} found already copied by the interrupted run" if result.found_copied else ""
    if result.interrupted:
        print(f"replay {cp.id}: stopped after {cp.copied} records; run the same command again to resume "
              f"(checkpoint {result.path})")
        return 130
    print(f"replay {cp.id}: copied {cp.copied} records of {cp.source} ({_window(cp)}) into {cp.into}"
          f"{' (resumed)' if result.resumed else ''}{found}; {cp.outside} in the offset range but outside "
          f"the time range; checkpoint {result.path}")
    return 0


def _stop_between_records(stopping: threading.Event) -> None:
    """Ctrl-C or SIGTERM: finish the record at hand, wait for the acknowledgements, record the
    checkpoint, exit. A second one stops at once (the next run still resumes exactly, from the
    destination's replay.source headers)."""
    import signal

    def handler(signum: int, frame: object) -> None:
        if stopping.is_set():
            raise KeyboardInterrupt
        stopping.set()
        print("replay: stopping after the record at hand (again: at once)", file=sys.stderr)

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def _window(cp: Checkpoint) -> str:
    from guardstream.timespec import iso
    return f"{iso(cp.from_ms)} .. {iso(cp.to_ms) if cp.to_ms is not None else 'the end at start'}"


def _print_plan(cp: Checkpoint, resumed: bool) -> None:
    from guardstream.console import emit_table
    rows = [[str(p), str(first), str(end), str(max(0, end - first)), str(max(0, end - cp.positions[p]))]
            for p, (first, end) in sorted(cp.ranges.items())]
    emit_table(f"replay {cp.id}: {cp.source} -> {cp.into}", ["partition", "first", "end", "records", "left"], rows)
    state = "an earlier run finished" if cp.done else ("an earlier run stopped; it resumes" if resumed else "new")
    print(f"replay {cp.id} ({state}): would copy up to {cp.remaining()} of {cp.total()} records of {cp.source} "
          f"stamped {_window(cp)} into {cp.into}", file=sys.stderr)


# -- health ---------------------------------------------------------------------------------

def cmd_health(args: argparse.Namespace) -> int:
    from .checks import exit_code, line
    from .health import all_checks, run
    from guardstream.local_stack import no_stack_hint, nothing_configured, running_stack
    settings = Settings.from_env()
    if nothing_configured(os.environ, running_stack(settings.state_dir.resolve())):
        print(f"guardstream: {no_stack_hint(settings.state_dir)}; checking the defaults", file=sys.stderr)
    results = run(all_checks(settings, args.timeout), args.timeout)
    width = max(len(r.name) for r in results)
    console = None
    if sys.stdout.isatty():
        from rich.console import Console
        console = Console(highlight=False)
    for result in results:
        text = line(result, width)
        if console is not None:
            from rich.text import Text
            styled = Text(text)
            styled.stylize("green" if result.ok else "bold red", 0, 4)
            console.print(styled)
        else:
            print(text)
    return exit_code(results)


# -- dlq ------------------------------------------------------------------------------------

def _selection(args: argparse.Namespace) -> Selection:
    from .dlq import Selection
    from guardstream.timespec import parse_time
    return Selection(args.stage, args.reason, parse_time(args.since, _now_ms()) if args.since else None)


def cmd_dlq_inspect(args: argparse.Namespace) -> int:
    from guardstream.console import emit_table
    from .dead_letters import LETTER_COLUMNS, SUMMARY_COLUMNS, letter_row, summary_rows
    from .dlq import inspect
    settings = Settings.from_env()
    inspection, latest = inspect(settings, _codec(settings), _selection(args), args.max)
    emit_table("dead letters by stage and reason", SUMMARY_COLUMNS, summary_rows(inspection.letters))
    print()
    emit_table(f"the latest {len(latest)} of {inspection.count} dead letters", LETTER_COLUMNS,
               [letter_row(letter) for letter in latest])
    if inspection.undecodable:
        print(f"{inspection.undecodable} record(s) of the dead-letter topics are not DeadLetter records",
              file=sys.stderr)
    return 0


def cmd_dlq_replay(args: argparse.Namespace) -> int:
    from .dlq import replay
    settings = Settings.from_env()
    outcome = replay(settings, _codec(settings), _selection(args), dry_run=args.dry_run)
    verb = "would re-inject" if args.dry_run else "re-injected"
    if outcome.set_aside:
        print(f"dlq {args.stage}: the checkpoint {outcome.checkpoint} was of an earlier incarnation of the "
              "dead-letter topic (recreated since); set aside")
    total = sum(outcome.sent.values())
    targets = ", ".join(f"{topic} {count}" for topic, count in sorted(outcome.sent.items()))
    print(f"dlq {args.stage}: {verb} {total} dead letter(s){': ' + targets if targets else ''}")
    for why, count in sorted(outcome.skipped.items()):
        print(f"dlq {args.stage}: skipped {count} ({why.replace('_', ' ')})")
    return 0


# -- registration ---------------------------------------------------------------------------

def register(sub: argparse._SubParsersAction) -> None:
    _register_tail(sub)
    _register_replay(sub)
    health = sub.add_parser("health", help="check Kafka, MQTT, PostgreSQL, schemas and every component's /readyz")
    health.add_argument("--timeout", type=float, default=2.5, metavar="S", help="seconds per check (default 2.5)")
    health.set_defaults(handler=cmd_health, one_shot=True)
    _register_dlq(sub)


def _register_tail(sub: argparse._SubParsersAction) -> None:
    tail = sub.add_parser("tail", help="print a topic's records, decoded, one per line",
                          description="Without a position: the last 10 records of each partition (--last N), "
                                      "then stop at the end as it was at start, or follow with --follow.")
    tail.add_argument("topic")
    where = tail.add_mutually_exclusive_group()
    where.add_argument("--from-beginning", action="store_true", help="from each partition's oldest record")
    where.add_argument("--from", dest="from_time", metavar="TIME",
                       help="from a time: -15m, -2h, -1d, ISO-8601 (UTC unless an offset is given), epoch ms")
    where.add_argument("--offset", action="append", metavar="P:O",
                       help="partition P from offset O (repeat for several partitions; only those are read)")
    where.add_argument("--last", type=_non_negative, metavar="N", help="the last N records of each partition")
    tail.add_argument("--follow", "-f", action="store_true", help="keep printing new records until Ctrl-C")
    tail.add_argument("--filter", action="extend", nargs="+", metavar="FIELD=VALUE",
                      help="keep records whose top-level value FIELD equals VALUE (key=VALUE: the record key); "
                           "several filters must all match")
    tail.add_argument("--format", choices=("json", "table"), default="json", help="JSON lines (default) or a table")
    tail.add_argument("--max", type=_non_negative, metavar="N", help="stop after N records")
    tail.set_defaults(handler=cmd_tail, one_shot=True)


def _register_replay(sub: argparse._SubParsersAction) -> None:
    replay = sub.add_parser(
        "replay", help="copy a time range into another topic, or move a group's offsets to a time")
    replay.add_argument("--topic", required=True, help="the source topic")
    replay.add_argument("--from", dest="from_time", required=True, metavar="TIME",
                        help="-15m, -2h, -1d, ISO-8601 (UTC unless an offset is given), epoch ms")
    replay.add_argument("--to", metavar="TIME", help="copy records stamped before this (default: up to the end "
                                                      "as it is when the replay starts)")
    replay.add_argument("--into", metavar="TOPIC", help="copy into this topic (never the source)")
    replay.add_argument("--create", action="store_true",
                        help="create the --into topic shaped like the source (a catalog topic) when it is missing")
    replay.add_argument("--group", metavar="G", help="with --reset-offsets: the consumer group to move")
    replay.add_argument("--reset-offsets", action="store_true", help="move the group's offsets on --topic to --from")
    replay.add_argument("--dry-run", action="store_true", help="show what would be copied or moved, change nothing")
    replay.add_argument("--chunk-size", type=_positive, default=1000, metavar="N",
                        help="records per acknowledged, checkpointed chunk (default 1000)")
    replay.add_argument("--max-rate", type=float, metavar="R", help="copy at most R records per second")
    replay.add_argument("--restart", action="store_true",
                        help="forget an earlier run with the same arguments and copy the range again")
    replay.set_defaults(handler=cmd_replay, one_shot=True)


def _register_dlq(sub: argparse._SubParsersAction) -> None:
    from .dead_letters import STAGES
    dlq = sub.add_parser("dlq", help="dead letters: inspect, re-inject after a fix")
    dlq.set_defaults(one_shot=True)
    actions = dlq.add_subparsers(dest="action", required=True, metavar="ACTION")
    inspect = actions.add_parser("inspect", help="counts per stage and reason, and the latest dead letters")
    inspect.add_argument("--stage", choices=STAGES)
    inspect.add_argument("--max", type=_non_negative, default=20, metavar="N",
                         help="show the latest N dead letters (default 20); the counts cover all")
    replay = actions.add_parser("replay", help="re-inject the selected dead letters' payloads into their source")
    replay.add_argument("--stage", choices=STAGES, required=True)
    replay.add_argument("--dry-run", action="store_true", help="show what would be re-injected")
    for each in (inspect, replay):
        each.add_argument("--reason", help="this reason code only (e.g. out_of_range)")
        each.add_argument("--since", metavar="TIME", help="refused at or after TIME (-2h, ISO-8601, epoch ms)")
    inspect.set_defaults(handler=cmd_dlq_inspect)
    replay.set_defaults(handler=cmd_dlq_replay)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
    return value
