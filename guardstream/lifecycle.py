"""How a long-running component stops: once, cleanly, on the first SIGINT or SIGTERM.

Every component installs these handlers; the local stack's supervisor sends the signals.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable


def install_stop_handlers(on_stop: Callable[[], None]) -> None:
    """Call ``on_stop`` once, in a thread of its own, on the first SIGINT or SIGTERM.

    The handler itself only writes a byte to a pipe. Python runs a handler in the main
    thread between two bytecodes, possibly while that thread holds the very lock
    ``on_stop`` needs (an ``Event.set`` interrupted by the next signal took its own
    lock again and waited for itself: a Ctrl-C landing with a SIGTERM froze the process).
    """
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)

    def wait_for_signal() -> None:
        os.read(read_end, 1)
        on_stop()

    threading.Thread(target=wait_for_signal, name="stop-signal", daemon=True).start()

    def handler(signum: int, frame: object) -> None:
        try:
            os.write(write_end, b"\0")
        except BlockingIOError:
            pass  # the pipe is full of earlier signals: the stop is already on its way

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def start_guarded(name: str, target: Callable[[], None], on_failure: Callable[[BaseException], None],
                  logger: logging.Logger, what: str) -> threading.Thread:
    """Run ``target`` in a daemon thread named ``name``; an error that ends it is logged and handed
    to ``on_failure``, which stops the process, so a dead thread never leaves a component half alive."""
    def guarded() -> None:
        try:
            target()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller, which stops the process
            logger.exception("%s stopped on an error", what)
            on_failure(exc)

    thread = threading.Thread(target=guarded, name=name, daemon=True)
    thread.start()
    return thread
