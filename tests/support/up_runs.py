"""`guardstream up` as a user runs it, for the tests: in a process group of its own, Ctrl-C to stop,
and other commands run beside it as from a second shell."""

import os
import signal
import subprocess
import sys
import threading

from guardstream.infra.stack import wait_until

SERVER_VARS = ("KAFKA_BOOTSTRAP_SERVERS", "MQTT_URL", "DATABASE_URL")


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in SERVER_VARS and not k.startswith("GUARDSTREAM_")}
    return {**env, **extra}


def start_up(env, cwd):
    """`guardstream up` in a process group of its own (so the test can press Ctrl-C as a terminal
    does: SIGINT to the group), and the list its output lines arrive in."""
    process = subprocess.Popen([sys.executable, "-m", "guardstream.cli", "up"], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, cwd=cwd, process_group=0)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True).start()
    return process, lines


def wait_banner(process, lines):
    wait_until(lambda: any("guardstream is up;" in line for line in lines) or process.poll() is not None,
               90, "guardstream up")
    assert process.poll() is None, "".join(lines)


def ctrl_c(process, lines):
    assert process.poll() is None, "".join(lines)
    os.killpg(process.pid, signal.SIGINT)
    code = process.wait(60)
    assert code == 0, "".join(lines)


def second_shell(args, cwd):
    """A guardstream command in another shell: none of the stack's variables in its environment."""
    return subprocess.run([sys.executable, "-m", "guardstream.cli", *args], env=clean_env(), cwd=cwd,
                          capture_output=True, text=True, timeout=60)
