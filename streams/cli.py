"""Subcommands of the stream worker: worker, fences, devices."""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from guardstream.settings import Settings
from guardstream.transport import KAFKA, component_settings


def _codec(settings: Settings):
    from guardstream.schemas.codec import Codec
    from guardstream.schemas.registry import registry_from_settings
    return Codec(registry_from_settings(settings))


def cmd_worker(args: argparse.Namespace) -> int:
    settings = component_settings(KAFKA)
    if args.engine:
        settings = settings.replace(worker_engine=args.engine)
    if settings.worker_engine == "faust":
        from guardstream.streams.faust_engine import run as run_faust
        return run_faust(settings)
    from guardstream.streams.worker import run
    return run(settings)


def cmd_fences_import(args: argparse.Namespace) -> int:
    from guardstream.streams import fence_admin
    settings = Settings.from_env()
    records = fence_admin.import_file(settings, _codec(settings), Path(args.file), args.tenant)
    per_tenant = Counter(record["tenant"] for record in records)
    print(f"imported {len(records)} fence(s): " + ", ".join(f"{count} for tenant {tenant}"
                                                            for tenant, count in sorted(per_tenant.items())))
    return 0


def cmd_fences_list(args: argparse.Namespace) -> int:
    import json
    from guardstream.catalog import TOPICS
    from guardstream.console import emit_table
    from guardstream.streams import fence_admin
    settings = Settings.from_env()
    fences = fence_admin.current(settings, _codec(settings))
    rows = [[f["fence_id"], f["tenant"], f["name"], f["kind"], json.loads(f["geometry"])["type"],
             "" if f["radius_m"] is None else f"{f['radius_m']:g}", str(f["updated_ms"])]
            for f in sorted(fences.values(), key=lambda f: (f["tenant"], f["fence_id"]))
            if args.tenant in (None, f["tenant"])]
    emit_table(TOPICS.geofences.name, ["id", "tenant", "name", "kind", "geometry", "radius_m", "updated_ms"], rows)
    return 0


def cmd_fences_delete(args: argparse.Namespace) -> int:
    from guardstream.streams import fence_admin
    fence_admin.delete(Settings.from_env(), args.fence_id)
    print(f"deleted {args.fence_id}")
    return 0


def cmd_devices_import(args: argparse.Namespace) -> int:
    from guardstream.catalog import TOPICS
    from guardstream.console import emit_table
    from guardstream.errors import InputError
    from guardstream.streams import device_admin
    settings = Settings.from_env()
    path = Path(args.file)
    records, problems = device_admin.read_file(path, args.format)
    if problems:
        emit_table(f"{path}: {len(problems)} bad row(s); nothing imported", ["row", "device_id", "reason", "detail"],
                   [[str(p.row), p.device_id, p.reason, p.detail] for p in problems])
        raise InputError(f"{len(problems)} bad row(s) in {path}; nothing written", reason="bad_rows")
    device_admin.write(settings, _codec(settings), records)
    tenants = sorted({r["tenant"] for r in records})
    emit_table(TOPICS.devices.name, ["tenant", "imported", "disabled"],
               [[t, str(sum(r["tenant"] == t for r in records)),
                 str(sum(r["tenant"] == t and not r["enabled"] for r in records))] for t in tenants])
    print(f"imported {len(records)} device(s) for {len(tenants)} tenant(s)")
    return 0


def cmd_devices_list(args: argparse.Namespace) -> int:
    from guardstream.catalog import TOPICS
    from guardstream.console import emit_table
    from guardstream.streams import device_admin
    settings = Settings.from_env()
    devices = device_admin.current(settings, _codec(settings))
    rows = [[d["device_id"], d["tenant"], d["kind"], d["site_id"] or "", "yes" if d["enabled"] else "no",
             str(d["updated_ms"])]
            for d in sorted(devices.values(), key=lambda d: (d["tenant"], d["device_id"]))
            if args.tenant in (None, d["tenant"])]
    emit_table(TOPICS.devices.name, ["id", "tenant", "kind", "site", "enabled", "updated_ms"], rows)
    return 0


def cmd_devices_enable(args: argparse.Namespace) -> int:
    from guardstream.streams import device_admin
    settings = Settings.from_env()
    device_admin.set_enabled(settings, _codec(settings), args.device_id, args.enabled)
    print(f"{'enabled' if args.enabled else 'disabled'} {args.device_id}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    worker = sub.add_parser("worker", help="stream worker: validate, geofences, rules, routing")
    worker.add_argument("--engine", choices=("batch", "faust"),
                        help="batch (default) or faust agents; overrides GUARDSTREAM_WORKER_ENGINE")
    worker.set_defaults(handler=cmd_worker)
    fences = sub.add_parser("fences", help="geofences on the compacted geofences topic")
    fences.set_defaults(one_shot=True)
    actions = fences.add_subparsers(dest="action", required=True, metavar="ACTION")
    imp = actions.add_parser("import", help="import a GeoJSON FeatureCollection (each feature's `tenant` "
                                            "property, else --tenant)")
    imp.add_argument("file")
    imp.add_argument("--tenant", help="tenant of the features whose properties name none")
    imp.set_defaults(handler=cmd_fences_import)
    listing = actions.add_parser("list", help="every live fence")
    listing.add_argument("--tenant")
    listing.set_defaults(handler=cmd_fences_list)
    delete = actions.add_parser("delete", help="delete a fence (a tombstone)")
    delete.add_argument("fence_id")
    delete.set_defaults(handler=cmd_fences_delete)
    _register_devices(sub)


def _register_devices(sub: argparse._SubParsersAction) -> None:
    from guardstream.catalog import TOPICS
    # the command is named after its topic
    devices = sub.add_parser(TOPICS.devices.name, help="the device registry on the compacted devices topic")
    devices.set_defaults(one_shot=True)
    actions = devices.add_subparsers(dest="action", required=True, metavar="ACTION")
    imp = actions.add_parser("import", help="register devices from a CSV or JSON file (a tenant per row)")
    imp.add_argument("file")
    imp.add_argument("--format", choices=("csv", "json"), help="default: from the file name")
    imp.set_defaults(handler=cmd_devices_import)
    listing = actions.add_parser("list", help="every registered device")
    listing.add_argument("--tenant")
    listing.set_defaults(handler=cmd_devices_list)
    for name, enabled, what in (("disable", False, "refuse the device's records from now on"),
                                ("enable", True, "accept the device's records again")):
        action = actions.add_parser(name, help=what)
        action.add_argument("device_id")
        action.set_defaults(handler=cmd_devices_enable, enabled=enabled)
