"""Subcommands of the stream worker: worker, fences."""

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
    from guardstream.streams.worker import run
    return run(component_settings(KAFKA))


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


def register(sub: argparse._SubParsersAction) -> None:
    sub.add_parser("worker", help="stream worker: validate, geofences, rules, routing").set_defaults(
        handler=cmd_worker)
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
