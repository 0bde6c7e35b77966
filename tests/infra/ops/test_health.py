"""``guardstream health`` against the session's servers, a component's endpoints and the stack file."""

import json
import os

from ops_support import run_cli

from guardstream.infra.migrate import migrate
from guardstream.local_stack import STACK_FILE
from guardstream.observability import new_registry, serve


def _lines(result):
    return {line.split()[1]: line for line in result.stdout.splitlines()}


def test_everything_up_is_ok_and_exit_0(applied, ops_settings, database_url):
    migrate(database_url)
    ready = serve(new_registry("bridge"), lambda: (True, ""), "127.0.0.1", 0)
    waiting = serve(new_registry("sink"), lambda: (False, "database unreachable"), "127.0.0.1", 0)
    try:
        settings = ops_settings.replace(database_url=database_url,
                                        health_endpoints=f"bridge=http://127.0.0.1:{ready.port}")
        result = run_cli(settings, "health")
        assert result.returncode == 0, result.stdout + result.stderr
        lines = _lines(result)
        assert list(lines) == ["kafka", "mqtt", "postgres", "schemas", "bridge"]
        assert all(line.startswith("OK ") and line.endswith(" ms)") for line in lines.values())
        assert "every catalog topic present" in lines["kafka"]
        assert "migrations up to date" in lines["postgres"]

        # a running local stack's components come from its stack file: here one that is not ready
        state = settings.state_dir
        state.mkdir(parents=True, exist_ok=True)
        (state / STACK_FILE).write_text(json.dumps({"pid": os.getpid(), "metrics_host": "0.0.0.0",
                                                    "metrics_ports": {"sink": waiting.port}}))
        result = run_cli(settings, "health")
        assert result.returncode == 1
        assert _lines(result)["sink"].startswith("FAIL sink") and "503 not ready: database unreachable" in \
            _lines(result)["sink"]
    finally:
        ready.close()
        waiting.close()


def test_unreachable_kafka_and_a_pending_migration_fail_with_exit_1(ops_settings, database_url):
    settings = ops_settings.replace(kafka_bootstrap_servers="127.0.0.1:1", database_url=database_url)
    result = run_cli(settings, "health", "--timeout", "2")
    assert result.returncode == 1
    lines = _lines(result)
    assert lines["kafka"].startswith("FAIL kafka") and "127.0.0.1:1 unreachable" in lines["kafka"]
    assert lines["postgres"].startswith("FAIL postgres") and "guardstream db migrate" in lines["postgres"]
    assert lines["mqtt"].startswith("OK ") and lines["schemas"].startswith("OK ")
    assert result.stderr == ""  # the Kafka client's retries stay out of an operator's way


def test_the_local_stack_records_its_components_metrics_ports(ops_settings):
    from guardstream.infra.components import Component
    from guardstream.infra.ops.checks import stack_endpoints
    from guardstream.infra.stack import Stack

    class Recorder:  # stands in for the supervisor: the components themselves are not the point here
        def __init__(self):
            self.started = []

        def start(self, spec):
            self.started.append(spec.name)

    stack, recorder = Stack(ops_settings), Recorder()
    stack.start_components(recorder, ops_settings, (Component("bridge", ("bridge",), "b"),
                                                    Component("sink", ("sink",), "s")))
    doc = json.loads((ops_settings.state_dir / STACK_FILE).read_text())
    assert recorder.started == ["bridge", "sink"] and doc["metrics_ports"] == stack.metrics_ports
    assert stack_endpoints(doc, alive=lambda pid: pid == os.getpid()) == [
        (name, f"http://127.0.0.1:{port}/readyz") for name, port in stack.metrics_ports.items()]
