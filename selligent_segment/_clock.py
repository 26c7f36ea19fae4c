"""The clock seam: the scheduler and the spools read time and wait through a
:class:`Clock`, so a test can hand in a fake one and never wait on wall-clock time.

Wall-clock *timestamps* (when an event happened, ``sentAt``) are read with
``time.time()``/``datetime.now()``, which ``freezegun`` replaces in tests.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol

__all__ = ["SYSTEM_CLOCK", "Clock", "SystemClock"]


class Clock(Protocol):
    """Monotonic time and timed waits, as the senders and spools use them."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (the origin is arbitrary)."""
        ...

    def wait(self, condition: threading.Condition, timeout: float | None) -> bool:
        """Wait on ``condition`` (held by the caller) until notified or ``timeout``
        seconds of this clock passed (None: no limit); False on a timeout. May return
        early: callers re-check what they wait for."""
        ...


class SystemClock:
    """The real clock: ``time.monotonic`` and ``Condition.wait``."""

    monotonic = staticmethod(time.monotonic)

    def wait(self, condition: threading.Condition, timeout: float | None) -> bool:
        # A wait past what the platform takes (OverflowError) ends early instead: the
        # caller re-checks and waits again.
        if timeout is not None and timeout > threading.TIMEOUT_MAX:
            timeout = threading.TIMEOUT_MAX
        return condition.wait(timeout)

    def __repr__(self) -> str:
        return "SystemClock()"


#: The clock of every Emitter that is given none.
SYSTEM_CLOCK: Clock = SystemClock()
