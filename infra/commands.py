"""Foundation subcommands: up, topics, schemas, db, settings.

Handlers import their dependencies when they run, so building the parser stays cheap.
"""

from __future__ import annotations

import argparse
import os
import sys

from guardstream.settings import Settings

def _settings() -> Settings:
    return Settings.from_env()


# -- topics -------------------------------------------------------------------------

def cmd_topics_apply(args: argparse.Namespace) -> int:
    from guardstream.infra import topics
    changes = topics.apply(_settings())
    if not changes:
        print("topics: nothing changed; the cluster matches the catalog")
    for change in changes:
        print(change)
    return 1 if any(c.action == "drift" for c in changes) else 0


def cmd_topics_create(args: argparse.Namespace) -> int:
    from guardstream.infra import topics
    change = topics.create_like(_settings(), args.name, args.like)
    print(change if change is not None else f"topics: {args.name} exists already; left as it is")
    return 0


def cmd_topics_list(args: argparse.Namespace) -> int:
    from guardstream.catalog import TOPICS
    from guardstream.infra import topics
    from guardstream.infra.render import topics_table
    statuses = None if args.catalog else topics.describe(_settings())
    topics_table(TOPICS.all(), statuses)
    return 0


# -- schemas ------------------------------------------------------------------------

def cmd_schemas_check(args: argparse.Namespace) -> int:
    from pathlib import Path
    from guardstream.schemas import check
    from guardstream.schemas.contracts import EXAMPLES_DIR, REGISTRY_FILE, SCHEMA_DIR
    from guardstream.schemas.registry import FileRegistry
    schema_dir = Path(args.schemas) if args.schemas else SCHEMA_DIR
    examples = Path(args.examples) if args.examples else (schema_dir.parent / "examples" if args.schemas else EXAMPLES_DIR)
    registry = FileRegistry.load(Path(args.registry) if args.registry else REGISTRY_FILE)
    baseline = FileRegistry.load(Path(args.baseline)) if args.baseline else None
    problems = check.check_all(schema_dir, examples, registry, baseline)
    for problem in problems:
        print(problem)
    count = len(list(schema_dir.glob("*.avsc")))
    print(f"schemas check: {count} schemas, {len(problems)} problem(s)", file=sys.stderr)
    return 1 if problems else 0


def cmd_schemas_register(args: argparse.Namespace) -> int:
    from guardstream.schemas import check
    from guardstream.schemas.contracts import current_contracts
    from guardstream.schemas.registry import FileRegistry, HttpRegistry
    settings = _settings()
    if args.local or not settings.schema_registry_url:
        changed = check.register_locally()
        print("\n".join(changed) if changed else "registry file: nothing to register")
        return 0
    remote = HttpRegistry(settings.schema_registry_url)
    local = FileRegistry.load()
    for name, contract in current_contracts().items():
        remote.set_compatibility(name, local.compatibility_of(name))
        print(f"{name}: id {remote.register(name, contract.schema)}")
    return 0


# -- database, stack ----------------------------------------------------------------

def cmd_db_migrate(args: argparse.Namespace) -> int:
    from guardstream.infra.migrate import migrate
    applied = migrate(_settings().database_url)
    print("\n".join(f"applied {m.version:04d}_{m.name}" for m in applied) or "database: up to date")
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    from guardstream.infra.render import stack_report
    from guardstream.infra.stack import bring_up
    from guardstream.infra.supervisor import Supervisor
    from guardstream.lifecycle import install_stop_handlers
    settings = _settings()
    supervisor = Supervisor()
    install_stop_handlers(supervisor.stopping.set)
    stack = bring_up(settings, os.environ, supervisor, stack_report,
                     simulate_devices=args.simulate, simulate_rate=args.rate)
    try:
        supervisor.run_until_stopped()
    finally:
        supervisor.log("up", "stopping")
        supervisor.stop()
        stack.stop_servers()
        stack.forget()
        supervisor.log("up", "stopped")
    return 0


def cmd_env(args: argparse.Namespace) -> int:
    """`export` lines naming the running local stack, for tools that are not guardstream commands."""
    import shlex
    from guardstream.local_stack import no_stack_hint, running_stack, state_dir_of
    state = state_dir_of(os.environ)
    stack = running_stack(state.resolve())
    if stack is None:
        print(f"guardstream: {no_stack_hint(state)}", file=sys.stderr)
        return 1
    print(f"# the local stack of `guardstream up` (pid {stack.pid}), state in {state}")
    print(f"export GUARDSTREAM_STATE_DIR={shlex.quote(str(state.resolve()))}")
    for name, value in stack.addresses.items():
        print(f"export {name}={shlex.quote(value)}")
    return 0


def cmd_settings(args: argparse.Namespace) -> int:
    from guardstream.infra.render import settings_table
    settings_table(_settings())
    return 0


def cmd_mqtt_acl(args: argparse.Namespace) -> int:
    from pathlib import Path

    from guardstream.console import emit_table
    from guardstream.infra import mqtt_auth
    from guardstream.schemas.codec import Codec
    from guardstream.schemas.registry import registry_from_settings
    from guardstream.streams import device_admin
    settings = _settings()
    user, password = mqtt_auth.service_user_of(settings, args.service_user)
    registry = device_admin.current(settings, Codec(registry_from_settings(settings)))
    out = Path(args.out) if args.out else mqtt_auth.auth_dir(settings)
    report = mqtt_auth.write_files(out, registry, settings.bridge_rules, user, password)
    print(f"{report.acl}: {report.devices} device(s) and the service user {user}")
    if report.passwd is None:
        print("mosquitto_passwd not found: no password file written; provision the devices' credentials "
              "yourself (README: Locking the broker down)")
    else:
        print(f"{report.passwd}: {len(report.added)} device(s) added, {len(report.removed)} removed")
    if report.credentials:
        print(f"{report.credentials}: the new passwords, once (mode 0600): hand them to the devices, then delete it")
    if report.refused:
        emit_table("devices left without MQTT access", ["device_id", "why"], [list(r) for r in report.refused])
    if args.reload:
        print(f"mosquitto (pid {mqtt_auth.reload_broker(settings)}) reloads both files")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    up = sub.add_parser("up", help="run the whole pipeline locally (embedded Kafka, MQTT, PostgreSQL)")
    up.add_argument("--simulate", type=int, default=0, metavar="N",
                    help="also run a simulated fleet of N devices, with the demo fences imported")
    up.add_argument("--rate", type=float, default=100.0, metavar="R",
                    help="messages per second of the simulated fleet (default: 100)")
    up.set_defaults(handler=cmd_up, own_stack_lookup=True)

    # one_shot: runs once and exits; its failure is one line, so client retry logs are hidden
    topics = sub.add_parser("topics", help="the topic catalog on the cluster")
    topics.set_defaults(one_shot=True)
    topics = topics.add_subparsers(
        dest="action", required=True, metavar="ACTION")
    topics.add_parser("apply", help="create or update topics; report drift").set_defaults(handler=cmd_topics_apply)
    create = topics.add_parser("create", help="a topic shaped like a catalog topic (a replay target, a copy)")
    create.add_argument("name")
    create.add_argument("--like", metavar="TOPIC", help="the catalog topic whose partitions and configs it takes "
                                                         "(default: NAME's own, when NAME is in the catalog)")
    create.set_defaults(handler=cmd_topics_create)
    listing = topics.add_parser("list", help="topics with partitions and end offsets")
    listing.add_argument("--catalog", action="store_true", help="show the catalog only, without asking Kafka")
    listing.set_defaults(handler=cmd_topics_list)

    schemas = sub.add_parser("schemas", help="Avro contracts")
    schemas.set_defaults(one_shot=True)
    schemas = schemas.add_subparsers(
        dest="action", required=True, metavar="ACTION")
    chk = schemas.add_parser("check", help="parse, docs, examples, compatibility, stable ids (for CI)")
    chk.add_argument("--schemas", help="folder of .avsc files (default: the installed contracts)")
    chk.add_argument("--examples", help="folder of example payloads (default: beside --schemas)")
    chk.add_argument("--registry", help="registry file (default: schemas/registry.json)")
    chk.add_argument("--baseline", help="an earlier registry file: no registered id may have changed since")
    chk.set_defaults(handler=cmd_schemas_check)
    reg = schemas.add_parser("register", help="register the contracts (SCHEMA_REGISTRY_URL, or the file)")
    reg.add_argument("--local", action="store_true", help="record new versions in schemas/registry.json")
    reg.set_defaults(handler=cmd_schemas_register)

    db = sub.add_parser("db", help="PostgreSQL")
    db.set_defaults(one_shot=True)
    db = db.add_subparsers(dest="action", required=True, metavar="ACTION")
    db.add_parser("migrate", help="apply pending SQL migrations").set_defaults(handler=cmd_db_migrate)

    sub.add_parser("env", help="`export` lines with the running local stack's addresses, for other tools").set_defaults(
        handler=cmd_env, one_shot=True, own_stack_lookup=True)

    sub.add_parser("settings", help="show every setting, its variable and value").set_defaults(
        handler=cmd_settings, one_shot=True)

    mqtt = sub.add_parser("mqtt", help="the MQTT broker's access control")
    mqtt.set_defaults(one_shot=True)
    mqtt = mqtt.add_subparsers(dest="action", required=True, metavar="ACTION")
    acl = mqtt.add_parser("acl", help="write mosquitto's ACL and password files from the device registry")
    acl.add_argument("--out", help="folder of the files (default: GUARDSTREAM_STATE_DIR/mqtt/auth, the local stack's)")
    acl.add_argument("--service-user", help="user of the bridge and the command relay (default: MQTT_URL's user, "
                     "else guardstream)")
    acl.add_argument("--reload", action="store_true", help="then make the local stack's mosquitto read them (SIGHUP)")
    acl.set_defaults(handler=cmd_mqtt_acl)
