"""Stop handlers: one clean stop however many signals arrive at once."""

import logging
import signal
import subprocess
import sys
import threading

from guardstream.lifecycle import start_guarded


STOPS_ON_SIGNAL = """
import sys
import threading
from guardstream.lifecycle import install_stop_handlers
stopping = threading.Event()
install_stop_handlers(stopping.set)
print("ready", flush=True)
while not stopping.wait(5):
    pass
print("stopped", flush=True)
sys.stdin.read()  # keeps the handlers installed until the test has sent every signal
"""


def test_a_burst_of_stop_signals_stops_the_process_instead_of_deadlocking_it():
    # a terminal's Ctrl-C and a supervisor's SIGTERM can land together; a handler that takes
    # the stop event's lock, interrupted by the next signal, waited for itself forever
    process = subprocess.Popen([sys.executable, "-c", STOPS_ON_SIGNAL], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == "ready"
        for number in range(2000):
            process.send_signal(signal.SIGINT if number % 2 else signal.SIGTERM)
        seen: list[str] = []
        stopped = threading.Thread(target=lambda: seen.append(process.stdout.readline().strip()), daemon=True)
        stopped.start()
        stopped.join(15)
        assert seen == ["stopped"], "the process did not stop: its signal handler deadlocked"
        process.stdin.close()
        assert process.wait(15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_a_guarded_thread_hands_the_error_that_ended_it_to_its_owner():
    failures: list[BaseException] = []
    handed = threading.Event()

    def fail() -> None:
        raise RuntimeError("feed broke")

    def on_failure(exc: BaseException) -> None:
        failures.append(exc)
        handed.set()

    thread = start_guarded("t-guarded", fail, on_failure, logging.getLogger("test"), "test feed")
    assert handed.wait(5) and thread.name == "t-guarded" and thread.daemon
    thread.join(5)
    assert not thread.is_alive()
    assert [str(exc) for exc in failures] == ["feed broke"]


def test_a_guarded_thread_that_ends_normally_reports_nothing():
    failures: list[BaseException] = []
    ran = threading.Event()
    thread = start_guarded("t-quiet", ran.set, failures.append, logging.getLogger("test"), "quiet")
    thread.join(5)
    assert ran.is_set() and not thread.is_alive() and failures == []
