"""`guardstream up` end to end: real tansu, MQTT broker and pgserver, then Ctrl-C."""

import os
import re
import socket
import signal
import time
from pathlib import Path

import pytest

from guardstream.infra.stack import wait_until

from support.up_runs import clean_env as _clean_env
from support.up_runs import ctrl_c as _ctrl_c
from support.up_runs import second_shell as _second_shell
from support.up_runs import start_up as _up
from support.up_runs import wait_banner as _wait_banner

pytestmark = pytest.mark.slow


def _descendants(pid: int) -> set[int]:
    out: set[int] = set()
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            children = (task / "children").read_text().split() if (task / "children").exists() else []
            for child in map(int, children):
                if child not in out:
                    out.add(child)
                    frontier.append(child)
    return out


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def _addresses(output):
    return {"kafka": re.search(r"kafka +127\.0\.0\.1:(\d+) ", output).group(1),
            "mqtt": re.search(r"mqtt +mqtt://127\.0\.0\.1:(\d+) ", output).group(1),
            "dashboard": re.search(r"http://127\.0\.0\.1:(\d+)/\?token=", output).group(1)}


def test_up_is_ready_quickly_and_ctrl_c_leaves_nothing_running(tmp_path):
    env = _clean_env(GUARDSTREAM_STATE_DIR=str(tmp_path / "state"))
    # hold the dashboard's default port: up must pick another and print it
    holder = socket.socket()
    try:
        holder.bind(("127.0.0.1", 8765))
        holder.listen()
    except OSError:
        pass  # something else has it already, which serves the same purpose
    started = time.monotonic()
    process, lines = _up(env, tmp_path)
    try:
        wait_until(lambda: any("guardstream is up;" in line for line in lines) or process.poll() is not None,
                   60, "guardstream up")
        ready_s = time.monotonic() - started
        output = "".join(lines)
        assert process.poll() is None, output
        assert ready_s < 30, output
        assert "tansu, in memory" in output and "pgserver" in output
        assert "topics:" in output and "migrations:" in output
        [dashboard] = re.findall(r"http://127\.0\.0\.1:(\d+)/\?token=", output)
        assert int(dashboard) != 8765
        children = _descendants(process.pid)
        assert children, "up started no child process"
        postmaster = (tmp_path / "state" / "pg" / "postmaster.pid")
        pg_pid = int(postmaster.read_text().split()[0])
        assert _alive(pg_pid)
    finally:
        os.killpg(process.pid, signal.SIGINT)
        code = process.wait(60)
        holder.close()
    assert code == 0, "".join(lines)
    wait_until(lambda: not any(_alive(pid) for pid in children | {pg_pid}), 20, "children to exit")
    output = "".join(lines)
    assert "stopped" in output
    # the components stopped while Kafka was still there: none of them saw it go away
    stopping = output.split("up | stopping", 1)[-1]
    assert "Kafka unreachable" not in stopping and "Connection refused" not in stopping, output


def test_a_second_shell_finds_the_stack_and_a_restart_keeps_its_addresses(tmp_path):
    """Commands run beside `up` (same working directory, none of its variables) talk to the stack, not
    to the defaults; after a stop and a start, Kafka, MQTT and the dashboard are where they were."""
    process, lines = _up(_clean_env(), tmp_path)
    try:
        _wait_banner(process, lines)
        first = _addresses("".join(lines))
        # the banner comes once every component answers /readyz: health finds them all ready
        health = _second_shell(["health"], tmp_path)
        assert health.returncode == 0, health.stdout + health.stderr
        assert "using the local stack of `guardstream up`" in health.stderr
        for name in ("kafka", "mqtt", "postgres", "worker", "sink", "gateway", "bridge"):
            assert any(line.startswith(f"OK   {name}") for line in health.stdout.splitlines()), health.stdout
        assert f"127.0.0.1:{first['mqtt']}" in health.stdout
        applied = _second_shell(["topics", "apply"], tmp_path)
        assert applied.returncode == 0 and "drift" not in applied.stdout, applied.stdout + applied.stderr
        exports = _second_shell(["env"], tmp_path).stdout
        assert f"export KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:{first['kafka']}" in exports
        assert f"export MQTT_URL=mqtt://127.0.0.1:{first['mqtt']}" in exports
    finally:
        _ctrl_c(process, lines)
    assert not (tmp_path / ".state" / "stack.json").exists()
    assert _second_shell(["env"], tmp_path).returncode == 1  # stopped: nothing to find any more

    process, lines = _up(_clean_env(), tmp_path)
    try:
        _wait_banner(process, lines)
        assert _addresses("".join(lines)) == first
    finally:
        _ctrl_c(process, lines)
