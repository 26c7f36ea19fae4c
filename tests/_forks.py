"""Helpers for the tests that fork: waiting for a child's exit, within a time."""

from __future__ import annotations

import os
import signal
import time


def wait_child(pid: int, timeout: float) -> int:
    """The exit code of the forked child ``pid`` once it exits; -1 when it has not within
    ``timeout`` seconds (it is then killed, and reaped)."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return -1
        time.sleep(0.01)  # polling a child's exit; waitpid has no timeout
