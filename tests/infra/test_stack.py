"""`guardstream up` end to end: real tansu, MQTT broker and pgserver, then Ctrl-C."""

import os
import re
import socket
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from guardstream.infra.stack import wait_until

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


def test_up_is_ready_quickly_and_ctrl_c_leaves_nothing_running(tmp_path):
    env = {k: v for k, v in os.environ.items()
           if k not in ("KAFKA_BOOTSTRAP_SERVERS", "MQTT_URL", "DATABASE_URL") and not k.startswith("GUARDSTREAM_")}
    env["GUARDSTREAM_STATE_DIR"] = str(tmp_path / "state")
    # hold the dashboard's default port: up must pick another and print it
    holder = socket.socket()
    try:
        holder.bind(("127.0.0.1", 8765))
        holder.listen()
    except OSError:
        pass  # something else has it already, which serves the same purpose
    started = time.monotonic()
    # a process group of its own, so the test can press Ctrl-C as a terminal does: SIGINT to the group
    process = subprocess.Popen([sys.executable, "-m", "guardstream.cli", "up"], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, cwd=tmp_path, process_group=0)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True).start()
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
