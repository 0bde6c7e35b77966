"""The guardstream command: one entry point, one subcommand per job.

Subcommands import what they need when they run, so ``guardstream --help`` and
the quick commands start fast. Errors reach the user at one place
(:func:`main`): a bad setting is one line naming the variable (exit 2), any
other guardstream error one line with its reason code (exit 1).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import MutableMapping, Sequence

from guardstream.errors import ConfigError, GuardstreamError, UnavailableError
from guardstream.local_stack import RunningStack, adopted, no_stack_hint, nothing_configured, running_stack, state_dir_of
from guardstream.timespec import time_values_attached

# Each module registers its own subcommands with `register(subparsers)`; to add a
# component's commands, add its module here.
COMMAND_MODULES = (
    "guardstream.infra.commands",
    "guardstream.infra.lag.commands",
    "guardstream.infra.ops.commands",
    "guardstream.connectors.cli",
    "guardstream.streams.cli",
    "guardstream.sinks.commands",
    "guardstream.gateway.cli",
    "guardstream.notifier.commands",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="guardstream", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """The command line as the subcommands read it; a relative time (``--from -15m``) is its option's value."""
    return build_parser().parse_args(time_values_attached(argv))


def _configure_logging(one_shot: bool) -> None:
    level = os.environ.get("GUARDSTREAM_LOG_LEVEL", "info").upper()
    logging.basicConfig(level=getattr(logging, level, logging.INFO), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if one_shot and level != "DEBUG":
        # a one-shot command reports a failure itself, in one line; the client's retries are noise
        logging.getLogger("guardstream.librdkafka").setLevel(logging.CRITICAL)


def _find_local_stack(environ: MutableMapping[str, str]) -> RunningStack | None:
    """The running ``guardstream up`` of this state directory, its addresses adopted into ``environ``
    for every variable not set there; said on stderr when it supplied any."""
    stack = running_stack(state_dir_of(environ).resolve())
    supplied = adopted(environ, stack)
    if stack is not None and supplied:
        environ.update(supplied)
        print(f"guardstream: using the local stack of `guardstream up` (pid {stack.pid}, "
              f"state in {state_dir_of(environ)})", file=sys.stderr)
    return stack


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    _configure_logging(getattr(args, "one_shot", False))
    stack = None if getattr(args, "own_stack_lookup", False) else _find_local_stack(os.environ)
    try:
        return args.handler(args)
    except ConfigError as exc:
        print(f"guardstream: bad setting {exc}", file=sys.stderr)
        return 2
    except UnavailableError as exc:
        hint = (f" ({no_stack_hint(state_dir_of(os.environ))})"
                if nothing_configured(os.environ, stack) else "")
        print(f"guardstream: {exc.reason}: {exc.detail}{hint}", file=sys.stderr)
        return 1
    except GuardstreamError as exc:
        print(f"guardstream: {exc.reason}: {exc.detail}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # the reader of our output went away (`| head`): stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
