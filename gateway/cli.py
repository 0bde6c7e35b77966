"""``guardstream gateway``: the WebSocket gateway and the live dashboard."""

from __future__ import annotations

import argparse

from guardstream.transport import GATEWAY, KAFKA, component_settings


def cmd_gateway(args: argparse.Namespace) -> int:
    from guardstream.gateway.server import run
    return run(component_settings(KAFKA, GATEWAY))


def register(sub: argparse._SubParsersAction) -> None:
    sub.add_parser("gateway", help="WebSocket gateway (JWT, tenants, resume) and the live dashboard").set_defaults(
        handler=cmd_gateway)
