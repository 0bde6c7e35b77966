"""Commands in a second shell find the running local stack through its state directory."""

import json
import os
import shlex
import subprocess
import sys

from guardstream.local_stack import STACK_FILE, stack_doc

SERVER_VARS = ("KAFKA_BOOTSTRAP_SERVERS", "MQTT_URL", "DATABASE_URL")


def _run(args, cwd, **env):
    base = {k: v for k, v in os.environ.items() if not k.startswith("GUARDSTREAM_") and k not in SERVER_VARS}
    return subprocess.run([sys.executable, "-m", "guardstream.cli", *args], env={**base, **env}, cwd=cwd,
                          capture_output=True, text=True, timeout=60)


def _stack(state, pid, **addresses):
    state.mkdir(parents=True, exist_ok=True)
    (state / STACK_FILE).write_text(json.dumps(stack_doc(pid, addresses, "127.0.0.1", {"worker": 9402})))


def test_settings_in_a_second_shell_show_the_running_stack_and_say_so(tmp_path):
    # this test process stands in for `guardstream up`: its pid is alive
    _stack(tmp_path / ".state", os.getpid(), KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:19093",
           MQTT_URL="mqtt://127.0.0.1:11884", GUARDSTREAM_PROFILE="embedded")
    result = _run(["settings"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "127.0.0.1:19093" in result.stdout and "mqtt://127.0.0.1:11884" in result.stdout
    assert f"using the local stack of `guardstream up` (pid {os.getpid()}" in result.stderr


def test_the_environment_wins_over_the_stack_file(tmp_path):
    _stack(tmp_path / ".state", os.getpid(), KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:19093")
    result = _run(["settings"], cwd=tmp_path, KAFKA_BOOTSTRAP_SERVERS="10.1.2.3:9092")
    assert "10.1.2.3:9092" in result.stdout and "19093" not in result.stdout
    assert "using the local stack" not in result.stderr  # it supplied nothing


def test_a_stopped_stack_is_not_used(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    _stack(tmp_path / ".state", int(dead.stdout), KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:19093")
    result = _run(["settings"], cwd=tmp_path)
    assert "19093" not in result.stdout and "using the local stack" not in result.stderr


def test_env_prints_export_lines_a_shell_can_source(tmp_path):
    state = tmp_path / "elsewhere"
    _stack(state, os.getpid(), KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:19093",
           DATABASE_URL="postgresql://postgres:@/guardstream?host=/tmp/a dir")
    result = _run(["env"], cwd=tmp_path, GUARDSTREAM_STATE_DIR=str(state))
    assert result.returncode == 0, result.stderr
    sourced = subprocess.run(["bash", "-c", result.stdout + "\nenv"], capture_output=True, text=True, check=True)
    seen = dict(line.split("=", 1) for line in sourced.stdout.splitlines() if "=" in line)
    assert seen["KAFKA_BOOTSTRAP_SERVERS"] == "127.0.0.1:19093"
    assert seen["DATABASE_URL"] == "postgresql://postgres:@/guardstream?host=/tmp/a dir"
    assert seen["GUARDSTREAM_STATE_DIR"] == str(state.resolve())
    assert all(shlex.split(line)[0] in ("export",) for line in result.stdout.splitlines()
               if not line.startswith("#"))


def test_env_without_a_stack_says_so_in_one_line(tmp_path):
    result = _run(["env"], cwd=tmp_path)
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert "no running stack in .state" in line and "guardstream up" in line


def test_health_without_a_stack_or_settings_says_it_checks_the_defaults(tmp_path):
    result = _run(["health", "--timeout", "0.5"], cwd=tmp_path)
    first = result.stderr.strip().splitlines()[0]
    assert "no running stack in .state" in first and "checking the defaults" in first


def test_up_refuses_a_second_stack_in_the_same_state_directory(tmp_path):
    _stack(tmp_path / ".state", os.getpid())
    result = _run(["up"], cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"guardstream: stack_running: a stack runs from .state already (pid {os.getpid()}); stop it, "
        "or give this one another GUARDSTREAM_STATE_DIR"]
