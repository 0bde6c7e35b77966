import io
import os
import sys
import threading
import time

from guardstream.infra.components import COMPONENTS, TOKEN_KEYS
from guardstream.infra.stack import wait_until
from guardstream.infra.supervisor import COMPONENTS as COMPONENTS_LAYER
from guardstream.infra.supervisor import SERVERS, Backoff, ChildSpec, Supervisor


def test_backoff_doubles_up_to_a_cap_and_forgives_a_stable_run():
    backoff = Backoff(base_s=0.5, cap_s=4, stable_s=60)
    delays, failures = [], 0
    for _ in range(6):
        delay, failures = backoff.next(failures, uptime_s=1)
        delays.append(delay)
    assert delays == [0.5, 1, 2, 4, 4, 4]
    assert backoff.next(failures, uptime_s=120) == (0.5, 1)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purpose
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split()[2] != "Z"


def test_crashing_child_is_restarted_and_output_prefixed(tmp_path):
    out = io.StringIO()
    supervisor = Supervisor(out=out, backoff=Backoff(base_s=0.05, cap_s=0.1))
    counter = tmp_path / "runs"
    script = f"import pathlib,sys; p=pathlib.Path({str(counter)!r}); p.write_text(p.read_text()+'x' if p.exists() else 'x'); print('hello'); sys.exit(3)"
    supervisor.start(ChildSpec("crasher", [sys.executable, "-c", script]))

    def runs() -> int:
        supervisor.tick()
        return len(counter.read_text()) if counter.exists() else 0

    wait_until(lambda: runs() >= 3, 20, "three runs")
    supervisor.stop()
    text = out.getvalue()
    assert "   crasher | hello" in text
    assert "exited with code 3; restarting in" in text


def test_stop_terminates_then_kills_and_leaves_no_process():
    out = io.StringIO()
    supervisor = Supervisor(out=out)
    stubborn = "import signal,time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"
    polite = "import time; time.sleep(60)"
    supervisor.start(ChildSpec("stubborn", [sys.executable, "-c", stubborn]))
    supervisor.start(ChildSpec("polite", [sys.executable, "-c", polite]))
    wait_until(lambda: "ready" in out.getvalue(), 20, "child start")
    pids = supervisor.pids()
    started = time.monotonic()
    supervisor.stop(grace_s=1)
    assert time.monotonic() - started < 10
    assert not any(_alive(pid) for pid in pids)
    assert "did not stop within 1s; killing" in out.getvalue()


def test_components_stop_before_the_servers_they_use(tmp_path):
    out = io.StringIO()
    supervisor = Supervisor(out=out)
    log = tmp_path / "order"
    server = ("import signal,sys,time,pathlib; p=pathlib.Path(sys.argv[1])\n"
              "def bye(*a): p.open('a').write('server\\n'); sys.exit(0)\n"
              "signal.signal(signal.SIGTERM, bye); print('ready', flush=True)\n"
              "while True: time.sleep(1)")
    # the component takes a while to flush on SIGTERM; the server must still be there when it is done
    component = ("import signal,sys,time,pathlib,os; p=pathlib.Path(sys.argv[1])\n"
                 "def bye(*a):\n"
                 "    time.sleep(0.5)\n"
                 "    os.kill(int(sys.argv[2]), 0); p.open('a').write('component\\n'); sys.exit(0)\n"
                 "signal.signal(signal.SIGTERM, bye); print('ready', flush=True)\n"
                 "while True: time.sleep(1)")
    server_pid = supervisor.start(ChildSpec("server", [sys.executable, "-c", server, str(log)], layer=SERVERS)).pid
    supervisor.start(ChildSpec("component", [sys.executable, "-c", component, str(log), str(server_pid)]))
    wait_until(lambda: out.getvalue().count("ready") == 2, 20, "children start")
    supervisor.stop(grace_s=5)
    assert log.read_text().split() == ["component", "server"]


def test_children_run_in_process_groups_of_their_own():
    out = io.StringIO()
    supervisor = Supervisor(out=out)
    child = supervisor.start(ChildSpec("child", [sys.executable, "-c",
                                                 "import time; print('ready', flush=True); time.sleep(60)"]))
    try:
        wait_until(lambda: "ready" in out.getvalue(), 20, "child start")
        # what a terminal's Ctrl-C does: SIGINT to the foreground process group (here: ours)
        assert os.getpgid(child.pid) != os.getpgid(0)
    finally:
        supervisor.stop(grace_s=5)
    assert not _alive(child.pid)


def test_a_withheld_variable_reaches_no_child_whether_ours_or_its_own(tmp_path, monkeypatch):
    monkeypatch.setenv("GUARDSTREAM_JWT_SECRET", "from-the-shell")
    out = io.StringIO()
    supervisor = Supervisor(out=out)
    script = "import os; print('secret', os.environ.get('GUARDSTREAM_JWT_SECRET', 'absent'), os.environ['KEPT'])"
    try:
        supervisor.start(ChildSpec("probe", [sys.executable, "-c", script], restart=False,
                                   env={"GUARDSTREAM_JWT_SECRET": "its-own", "KEPT": "yes"},
                                   withheld=TOKEN_KEYS))
        supervisor.start(ChildSpec("gateway", [sys.executable, "-c", script], restart=False,
                                   env={"GUARDSTREAM_JWT_SECRET": "its-own", "KEPT": "yes"}))
        wait_until(lambda: out.getvalue().count("secret ") == 2, 20, "both children")
    finally:
        supervisor.stop(grace_s=5)
    lines = {line.split("|", 1)[0].strip(): line.split("|", 1)[1].strip() for line in out.getvalue().splitlines()
             if "secret " in line}
    assert lines == {"probe": "secret absent yes", "gateway": "secret its-own yes"}


def test_only_a_component_that_verifies_tokens_is_given_the_token_secret():
    assert [c.name for c in COMPONENTS if c.verifies_tokens] == ["gateway"]


def test_a_child_with_a_log_file_writes_there_and_not_to_the_console(tmp_path):
    out = io.StringIO()
    supervisor = Supervisor(out=out, backoff=Backoff(base_s=0.05, cap_s=0.1))
    log = tmp_path / "logs" / "server.log"
    supervisor.start(ChildSpec("server", [sys.executable, "-c", "print('\\x1b[31mERROR\\x1b[0m noisy'); "
                                                            "raise SystemExit(4)"], log_file=log))
    wait_until(lambda: supervisor.tick() or "exited with code 4" in out.getvalue(), 20, "the child to exit")
    supervisor.stop()
    wait_until(lambda: log.exists() and "noisy" in log.read_text(), 10, "the log file")
    assert "noisy" not in out.getvalue()
    assert "    server | exited with code 4; restarting in" in out.getvalue()


def test_an_action_follows_each_restart_of_its_child(tmp_path):
    supervisor = Supervisor(out=io.StringIO(), backoff=Backoff(base_s=0.05, cap_s=0.1))
    supervisor.start(ChildSpec("broker", [sys.executable, "-c", "import sys; sys.exit(1)"]))
    followed = []
    supervisor.after_restart("broker", lambda: followed.append(1))
    wait_until(lambda: supervisor.tick() or len(followed) >= 2, 20, "two restarts followed")
    supervisor.stop()


def test_restart_layer_stops_that_layer_only_and_tick_starts_it_again(tmp_path):
    out = io.StringIO()
    supervisor = Supervisor(out=out, backoff=Backoff(base_s=0.05, cap_s=0.1))
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    server = supervisor.start(ChildSpec("server", sleeper, layer=SERVERS))
    component = supervisor.start(ChildSpec("component", sleeper))
    supervisor.restart_layer(COMPONENTS_LAYER)
    assert component.poll() is not None and server.poll() is None
    wait_until(lambda: supervisor.tick() or len(supervisor.pids()) == 2 and component.pid not in supervisor.pids()
               and all(_alive(pid) for pid in supervisor.pids()), 20, "the component started again")
    assert server.pid in supervisor.pids()
    supervisor.stop()


def test_a_held_layer_stops_when_its_server_dies_and_starts_after_the_action(tmp_path):
    supervisor = Supervisor(out=io.StringIO(), backoff=Backoff(base_s=0.05, cap_s=0.1))
    marker = tmp_path / "server-ran"
    server_script = f"import pathlib,sys,time; p=pathlib.Path({str(marker)!r}); first=not p.exists(); " \
                    "p.write_text('x'); sys.exit(1) if first else time.sleep(60)"
    supervisor.start(ChildSpec("server", [sys.executable, "-c", server_script], layer=SERVERS))
    component = supervisor.start(ChildSpec("component", [sys.executable, "-c", "import time; time.sleep(60)"]))
    release = threading.Event()
    supervisor.after_restart("server", release.wait, hold=COMPONENTS_LAYER)
    wait_until(lambda: supervisor.tick() or component.poll() is not None, 20, "the component stopped")
    for _ in range(5):
        supervisor.tick()
    assert component.pid in supervisor.pids()  # held: not started again while the action runs
    release.set()
    wait_until(lambda: supervisor.tick() or component.pid not in supervisor.pids(), 20, "the component again")
    supervisor.stop()
