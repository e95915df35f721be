"""Stopping long-running commands on SIGTERM and SIGINT."""

from __future__ import annotations

import logging
import os
import signal
import threading
from typing import Optional

log = logging.getLogger("framewatch")


def exit_later(after_s: float, code: int) -> None:
    """Exit the process with ``code`` after ``after_s`` unless it has ended by then (a loop stuck in a call)."""

    def hard_exit() -> None:
        log.critical("still running %.0fs after being told to stop: exiting with %d", after_s, code)
        logging.shutdown()
        os._exit(code)

    timer = threading.Timer(after_s, hard_exit)
    timer.daemon = True
    timer.start()


def stop_on_signals(hard_exit_after_s: Optional[float] = None) -> threading.Event:
    """An event set by SIGTERM or SIGINT (Ctrl-C), for the long-running commands.

    With ``hard_exit_after_s``, SIGTERM is honoured in every state: a process still
    running that long after the signal (stuck in a call it cannot leave) exits anyway.
    """
    stop = threading.Event()

    def handler(signum: int, _frame: object) -> None:
        log.info("received %s: stopping", signal.Signals(signum).name)
        if hard_exit_after_s is not None and not stop.is_set():
            exit_later(hard_exit_after_s, 128 + signum)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop
