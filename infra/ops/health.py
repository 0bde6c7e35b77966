"""``guardstream health``: Kafka, MQTT, PostgreSQL, schemas and every component's /readyz, concurrently.

Each check has a short timeout (``TIMEOUT_S``) and reports OK or FAIL with a
detail and its latency. Component endpoints come from
``GUARDSTREAM_HEALTH_ENDPOINTS`` and, while ``guardstream up`` runs, from the
``stack.json`` it writes in the state directory.
"""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor, wait

from guardstream.errors import GuardstreamError
from guardstream.settings import Settings

from .checks import Check, CheckFailed, CheckResult, component_checks, parse_endpoints, stack_endpoints
from .state_files import load_json

TIMEOUT_S = 2.5


def all_checks(settings: Settings, timeout_s: float = TIMEOUT_S) -> list[Check]:
    from guardstream.local_stack import STACK_FILE, pid_alive
    checks = [Check("kafka", lambda: kafka(settings, timeout_s)),
              Check("mqtt", lambda: mqtt(settings, timeout_s)),
              Check("postgres", lambda: postgres(settings, timeout_s)),
              Check("schemas", lambda: schemas(settings, timeout_s))]
    try:
        stack = load_json(settings.state_dir / STACK_FILE)
    except GuardstreamError:
        stack = None  # an unreadable file of a stack long gone checks nothing
    for name, url in component_checks(parse_endpoints(settings.health_endpoints), stack_endpoints(stack, pid_alive)):
        checks.append(Check(name, lambda url=url: readyz(url, timeout_s)))
    return checks


def run(checks: list[Check], timeout_s: float = TIMEOUT_S) -> list[CheckResult]:
    """Every check at once; a check still running past ``timeout_s`` + 1 s fails as such."""
    results: dict[str, CheckResult] = {}
    pool = ThreadPoolExecutor(max_workers=max(1, len(checks)), thread_name_prefix="health")
    futures = {pool.submit(_timed, check): check for check in checks}
    started = time.monotonic()
    done, _ = wait(futures, timeout=timeout_s + 1.0)
    for future, check in futures.items():
        if future in done:
            results[check.name] = future.result()
        else:
            results[check.name] = CheckResult(check.name, False, f"no answer within {timeout_s:g}s",
                                              time.monotonic() - started)
    pool.shutdown(wait=False, cancel_futures=True)
    return [results[check.name] for check in checks]


def _timed(check: Check) -> CheckResult:
    started = time.monotonic()
    try:
        detail, ok = check.run(), True
    except GuardstreamError as exc:
        detail, ok = exc.detail, False
    return CheckResult(check.name, ok, detail, time.monotonic() - started)


# -- the checks ------------------------------------------------------------------------

def kafka(settings: Settings, timeout_s: float) -> str:
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient
    from guardstream.catalog import TOPICS
    from guardstream.kafka import admin_config, error_text
    try:
        metadata = AdminClient(admin_config(settings, "guardstream-health")).list_topics(timeout=timeout_s)
    except KafkaException as exc:
        raise CheckFailed(f"{settings.kafka_bootstrap_servers} unreachable: {error_text(exc)}") from exc
    missing = [t.name for t in TOPICS.all() if t.name not in metadata.topics]
    brokers = len(metadata.brokers)
    if missing:
        raise CheckFailed(f"{brokers} broker(s); {len(missing)} catalog topic(s) missing ({', '.join(missing[:3])}"
                          f"{', ...' if len(missing) > 3 else ''}): run `guardstream topics apply`")
    return f"{brokers} broker(s), {len(metadata.topics)} topics, every catalog topic present"


def mqtt(settings: Settings, timeout_s: float) -> str:
    from guardstream.connectors.mqtt import connect, endpoint, new_client
    answered = threading.Event()
    outcome: dict[str, object] = {}

    def on_connect(client: object, userdata: object, flags: object, reason: object, properties: object) -> None:
        outcome["reason"] = reason
        answered.set()

    client = new_client(settings, f"guardstream-health-{os.getpid()}-{threading.get_ident()}")
    client.on_connect = on_connect
    ep = endpoint(settings)
    connect(client, settings, keepalive=10)
    client.loop_start()
    try:
        if not answered.wait(timeout_s):
            raise CheckFailed(f"{ep.host}:{ep.port}: no CONNACK within {timeout_s:g}s")
        reason = outcome["reason"]
        if getattr(reason, "is_failure", False):
            raise CheckFailed(f"{ep.host}:{ep.port} refused the connection: {reason}")
        return f"{ep.host}:{ep.port} accepted a connection (MQTT {settings.mqtt_protocol})"
    finally:
        client.disconnect()
        client.loop_stop()


def postgres(settings: Settings, timeout_s: float) -> str:
    import psycopg
    from guardstream.infra.migrate import load_migrations, pending
    try:
        with psycopg.connect(settings.database_url, connect_timeout=max(1, round(timeout_s)),
                             options=f"-c statement_timeout={int(timeout_s * 1000)}") as conn:
            conn.execute("SELECT 1").fetchone()
            try:
                applied = dict(conn.execute("SELECT version, checksum FROM schema_migrations").fetchall())
            except psycopg.errors.UndefinedTable as exc:
                raise CheckFailed("SELECT 1 ok; no migrations applied: run `guardstream db migrate`") from exc
    except psycopg.OperationalError as exc:
        raise CheckFailed(f"unreachable: {str(exc).strip().splitlines()[0] if str(exc).strip() else exc}") from exc
    todo = pending(load_migrations(), applied)
    if todo:
        names = ", ".join(f"{m.version:04d}_{m.name}" for m in todo)
        raise CheckFailed(f"SELECT 1 ok; {len(todo)} migration(s) pending ({names}): run `guardstream db migrate`")
    return f"SELECT 1 ok, migrations up to date ({len(applied)} applied)"


def schemas(settings: Settings, timeout_s: float) -> str:
    if settings.schema_registry_url:
        url = settings.schema_registry_url.rstrip("/") + "/subjects"
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as response:
                subjects = json.loads(response.read() or b"[]")
        except urllib.error.HTTPError as exc:
            raise CheckFailed(f"{url}: {exc.code} {exc.read(200).decode('utf-8', 'replace').strip()}") from exc
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise CheckFailed(f"{url}: unreachable ({getattr(exc, 'reason', exc)})") from exc
        return f"{settings.schema_registry_url}: {len(subjects) if isinstance(subjects, list) else '?'} subjects"
    from guardstream.schemas import check
    from guardstream.schemas.registry import FileRegistry
    registry = FileRegistry.load()
    problems = check.check_all(registry=registry)
    if problems:
        raise CheckFailed(f"registry file: `schemas check` finds {len(problems)} problem(s), first: {problems[0]}")
    return f"registry file: {len(registry.subjects)} subjects, `schemas check` passes"


def readyz(url: str, timeout_s: float) -> str:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return f"{url}: {response.read(200).decode('utf-8', 'replace').strip() or response.status}"
    except urllib.error.HTTPError as exc:
        body = exc.read(300).decode("utf-8", "replace").strip()
        raise CheckFailed(f"{url}: {exc.code} {body}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise CheckFailed(f"{url}: unreachable ({getattr(exc, 'reason', exc)})") from exc
