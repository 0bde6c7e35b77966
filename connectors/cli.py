"""Subcommands of the connectors: bridge, commands (relay), simulate."""

from __future__ import annotations

import argparse

from guardstream.infra.settings import Settings


def cmd_bridge(args: argparse.Namespace) -> int:
    from guardstream.connectors.bridge import run
    return run(Settings.from_env())


def cmd_commands(args: argparse.Namespace) -> int:
    from guardstream.connectors.device_commands import run
    return run(Settings.from_env())


def register(sub: argparse._SubParsersAction) -> None:
    sub.add_parser("bridge", help="MQTT -> Kafka bridge (at-least-once)").set_defaults(handler=cmd_bridge)
    sub.add_parser("commands", help="Kafka commands.device -> MQTT device/{id}/cmd").set_defaults(
        handler=cmd_commands)
