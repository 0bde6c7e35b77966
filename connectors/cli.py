"""Subcommands of the connectors: bridge, commands (relay), simulate."""

from __future__ import annotations

import argparse

from guardstream.infra.settings import Settings


def cmd_bridge(args: argparse.Namespace) -> int:
    from guardstream.connectors.bridge import run
    return run(Settings.from_env())


def register(sub: argparse._SubParsersAction) -> None:
    sub.add_parser("bridge", help="MQTT -> Kafka bridge (at-least-once)").set_defaults(handler=cmd_bridge)
