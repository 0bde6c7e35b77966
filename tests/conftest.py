"""Real servers for the tests, started once per session on free ports.

* Kafka: the embedded tansu broker (memory storage); ``own_kafka`` gives a test
  a broker of its own.
* MQTT: mosquitto from PATH when installed, else amqtt.
* PostgreSQL: a fresh database with a unique name on the server at
  ``PG_TEST_ADMIN_URL`` (default: the local server on 127.0.0.1:5432),
  or on an embedded pgserver when that is not reachable; dropped at the end.

Components run as processes through ``run_component``; the helpers behind these
fixtures are in ``support/processes.py``.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from support.processes import Component, start_component, start_process, start_tansu, stop_process

from guardstream.catalog import RAW_BYTES, Topic
from guardstream.infra import topics
from guardstream.infra.stack import free_port, mqtt_spec, tcp_accepts, wait_until
from guardstream.settings import Settings

TEST_PG_ADMIN_URL = os.environ.get("PG_TEST_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
DAY_MS = 86_400_000


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    process, bootstrap = start_tansu(tmp_path_factory.mktemp("tansu") / "tansu.log")
    yield bootstrap
    stop_process(process)


@pytest.fixture(scope="session")
def mqtt_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    state = tmp_path_factory.mktemp("mqtt")
    spec, _ = mqtt_spec(port, state)
    process = start_process(list(spec.argv), dict(spec.env), state / "mqtt.log")
    wait_until(lambda: tcp_accepts("127.0.0.1", port), 30, "MQTT broker")
    yield f"mqtt://127.0.0.1:{port}"
    stop_process(process)


@pytest.fixture(scope="session")
def pg_admin_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    try:
        psycopg.connect(TEST_PG_ADMIN_URL, connect_timeout=3).close()
        yield TEST_PG_ADMIN_URL
        return
    except psycopg.OperationalError:
        pass
    import pgserver
    server = pgserver.get_server(str(tmp_path_factory.mktemp("pg")), cleanup_mode="stop")
    yield server.get_uri("postgres")
    server.cleanup()


def _with_database(url: str, name: str) -> str:
    from urllib.parse import urlsplit, urlunsplit
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


@pytest.fixture
def database_url(pg_admin_url: str) -> Iterator[str]:
    """A new, empty database for one test."""
    name = f"gs_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield _with_database(pg_admin_url, name)
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def settings(kafka_bootstrap: str, mqtt_url: str) -> Settings:
    """Settings for the embedded profile pointed at the session's servers, with two
    partitions per topic (the local stack keeps one) so that per-partition code is exercised."""
    return Settings.from_env({
        "GUARDSTREAM_PROFILE": "embedded",
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "MQTT_URL": mqtt_url,
        "GUARDSTREAM_REPLICATION_FACTOR": "1",
        "GUARDSTREAM_PARTITIONS_MAX": "2",
    })


@pytest.fixture
def unique() -> str:
    """A short unique suffix for topic, group and database names."""
    return uuid.uuid4().hex[:10]


@pytest.fixture
def run_component(tmp_path: Path) -> Iterator[Callable[..., Component]]:
    """``run_component(command, settings, **env)``: a component process, ready; stopped after the test."""
    started: list[Component] = []

    def start(command: list[str], settings: Settings, **env: str) -> Component:
        component = start_component(command, settings, tmp_path / f"{command[0]}-{len(started)}.log", **env)
        started.append(component)
        return component

    yield start
    for component in started:
        component.stop()


@pytest.fixture(scope="session")
def applied(settings: Settings) -> Settings:
    topics.apply(settings)
    return settings


@pytest.fixture
def make_topic(settings: Settings, unique: str) -> Callable[..., str]:
    """``make_topic(partitions=1, raw=False, name="ops", cleanup="delete")``: a new topic of the
    test's own on the session broker (a day's retention); returns its name."""
    counter = iter(range(100))

    def make(partitions: int = 1, raw: bool = False, name: str = "ops", cleanup: str = "delete") -> str:
        schemas = (RAW_BYTES,) if raw else ("guardstream.Telemetry",)
        topic = Topic(f"{name}.{unique}.{next(counter)}", partitions, DAY_MS, cleanup, "k", schemas, "test topic")
        topics.apply(settings, (topic,))
        return topic.name
    return make


@dataclass
class OwnKafka:
    settings: Settings  # the session's settings, pointed at this broker
    process: subprocess.Popen  # the broker, to pause (SIGSTOP) or stop


@pytest.fixture
def own_kafka(settings: Settings, tmp_path: Path) -> Iterator[OwnKafka]:
    """A tansu broker of the test's own, with the catalog's topics: empty, and free to pause
    or stop without touching other tests."""
    process, bootstrap = start_tansu(tmp_path / "tansu.log")
    own = OwnKafka(settings.replace(kafka_bootstrap_servers=bootstrap), process)
    try:
        topics.apply(own.settings)
        yield own
    finally:
        stop_process(process)


@pytest.fixture
def own_mqtt(tmp_path: Path) -> Iterator[str]:
    """The URL of an MQTT broker of the test's own: its store holds only what the test queues
    (the session broker keeps earlier tests' persistent sessions, and what is queued for them)."""
    port = free_port()
    spec, _ = mqtt_spec(port, tmp_path / "own-mqtt")
    process = start_process(list(spec.argv), dict(spec.env), tmp_path / "own-mqtt.log")
    wait_until(lambda: tcp_accepts("127.0.0.1", port), 30, "own MQTT broker")
    yield f"mqtt://127.0.0.1:{port}"
    stop_process(process)
