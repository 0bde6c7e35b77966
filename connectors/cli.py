"""Subcommands of the connectors: bridge, commands (relay), simulate."""

from __future__ import annotations

import argparse
import math
import threading
from collections.abc import Callable

from guardstream.settings import Settings
from guardstream.transport import KAFKA, MQTT, component_settings


def cmd_bridge(args: argparse.Namespace) -> int:
    from guardstream.connectors.bridge import run
    return run(component_settings(KAFKA, MQTT))


def cmd_commands(args: argparse.Namespace) -> int:
    from guardstream.connectors.device_commands import run
    return run(component_settings(KAFKA, MQTT))


def _positive(kind: type) -> Callable[[str], object]:
    def parse(text: str) -> object:
        value = kind(text)
        if not (value > 0 and math.isfinite(value)):
            raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
        return value
    parse.__name__ = kind.__name__  # argparse names the type in its error message
    return parse


def _share(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def cmd_simulate(args: argparse.Namespace) -> int:
    from guardstream.connectors import simulator
    options = simulator.SimulateOptions(
        devices=args.devices, rate=args.rate, seed=args.seed, duration_s=args.duration,
        malformed_share=args.malformed, qos_override=args.qos_override, id_prefix=args.id_prefix)
    if args.dry_run is not None:
        return simulator.dry_run(options, args.dry_run)
    from guardstream.lifecycle import install_stop_handlers
    stop = threading.Event()
    install_stop_handlers(stop.set)
    return simulator.run(Settings.from_env(), options, stop)


def _register_simulate(sub: argparse._SubParsersAction) -> None:
    sim = sub.add_parser("simulate", help="a simulated device fleet publishing over MQTT (demo fences of "
                         "connectors/demo_fences.geojson)")
    sim.add_argument("--devices", type=_positive(int), default=100, help="devices: 40%% guards, 30%% radios "
                     "and trackers, 30%% site sensors (default: 100)")
    sim.add_argument("--rate", type=_positive(float), default=100.0,
                     help="messages per second, all devices together (default: 100)")
    sim.add_argument("--seed", type=int, default=1, help="same seed, same messages (default: 1)")
    sim.add_argument("--duration", type=_positive(float), metavar="SECONDS",
                     help="stop after this many seconds (default: run until Ctrl-C)")
    sim.add_argument("--malformed", type=_share, default=0.01, metavar="SHARE",
                     help="share of malformed payloads, 0..1 (default: 0.01)")
    sim.add_argument("--qos-override", type=int, choices=(0, 1, 2), metavar="QOS",
                     help="publish everything at this QoS (default: per topic, as the bridge rules say)")
    sim.add_argument("--id-prefix", default="sim", metavar="PREFIX",
                     help="prefix of device and component ids (default: sim)")
    sim.add_argument("--dry-run", type=_positive(int), metavar="LINES",
                     help="print this many messages (topic, QoS, payload) and exit without connecting")
    sim.set_defaults(handler=cmd_simulate)


def register(sub: argparse._SubParsersAction) -> None:
    sub.add_parser("bridge", help="MQTT -> Kafka bridge (at-least-once)").set_defaults(handler=cmd_bridge)
    sub.add_parser("commands", help="Kafka commands.device -> MQTT device/{id}/cmd").set_defaults(
        handler=cmd_commands)
    _register_simulate(sub)
