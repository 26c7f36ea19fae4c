"""Helpers for the CLI tests that press Ctrl-C: a child with Ctrl-C's default action, and
one or two presses with everything the child wrote on stderr."""

from __future__ import annotations

import signal
import subprocess


def default_sigint() -> None:
    """In the child: Ctrl-C's default action, as from a terminal (a test run started as a
    background job inherits SIGINT ignored, and Python then keeps it ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def press_ctrl_c(proc: subprocess.Popen[str], *, again_on: str | None = None) -> str:
    """Ctrl-C to ``proc`` (its stderr piped as text); when ``again_on`` is given, a second
    Ctrl-C as soon as a stderr line holds it (the first one is being handled then).
    Waits for the child to end; returns all it wrote on stderr."""
    assert proc.stderr is not None
    proc.send_signal(signal.SIGINT)
    lines = []
    if again_on is not None:
        for line in proc.stderr:
            lines.append(line)
            if again_on in line:
                proc.send_signal(signal.SIGINT)
                break
    err = "".join(lines) + proc.stderr.read()
    proc.wait(60)
    return err
