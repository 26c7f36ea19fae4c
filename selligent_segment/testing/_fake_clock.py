"""A clock for tests: time moves only when the test says so.

:class:`FakeClock` satisfies :class:`selligent_segment._clock.Clock`, so
``Emitter(clock=FakeClock())`` schedules its senders on fake time: a backoff of 60 s,
a ``Retry-After: 300`` or a linger of 5 s takes no wall-clock time at all, and a test
can assert exactly when each request went out ("the third request at t=0.4").

How a wait works: every :meth:`FakeClock.wait` registers its condition with the clock and
blocks on it (notifications wake it as usual); :meth:`FakeClock.advance` moves the time and
notifies every registered condition, and a waiter whose timeout has passed then returns
False. Nothing sleeps on wall-clock time, except a short backstop poll (``poll``, 50 ms by
default) after which a wait returns early (the :class:`Clock` protocol allows it: callers
re-check what they wait for), so code that checks its condition outside the lock cannot
hang on a lost wake-up.

Determinism: time should move only while every thread that could act at the current
instant is blocked. :meth:`FakeClock.wait_for_waiters` waits (on the wall clock, bounded)
until ``n`` threads are blocked in :meth:`FakeClock.wait` and none of them has been
notified yet; :meth:`FakeClock.run_until` then advances from deadline to deadline, each
time only once the senders are blocked again, until a condition holds. A notification
still on its way to a blocked thread is seen through ``threading.Condition``'s waiter
list (a CPython detail; without it only the registration is checked), so wait on a
condition through the clock only, never both through the clock and directly.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

__all__ = ["FakeClock"]

#: Wall-clock seconds after which a blocked wait returns early (see the module text).
DEFAULT_POLL = 0.05


def _never() -> bool:
    return False


class _Waiter:
    """One thread blocked in :meth:`FakeClock.wait`."""

    __slots__ = ("condition", "deadline")

    def __init__(self, condition: threading.Condition, deadline: float) -> None:
        self.condition = condition
        self.deadline = deadline  # fake time; math.inf for no timeout


class FakeClock:
    """A :class:`~selligent_segment._clock.Clock` whose time moves only by
    :meth:`advance` / :meth:`advance_to` (or :meth:`run_until`).

    Guarantees: :meth:`monotonic` never goes back and changes only when the test moves
    it; :meth:`wait` returns False exactly when its timeout has passed on this clock, and
    otherwise only after a notification, an :meth:`advance`, or ``poll`` wall-clock
    seconds (an early return, which the protocol allows). Thread-safe.
    """

    def __init__(self, start: float = 0.0, *, poll: float | None = DEFAULT_POLL) -> None:
        if not math.isfinite(start):
            raise ValueError("start must be a finite number of seconds")
        if poll is not None and not (poll > 0 and math.isfinite(poll)):
            raise ValueError("poll must be a positive, finite number of seconds, or None")
        self._now = float(start)
        self._poll = poll
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # a waiter came or went, time moved
        self._waiters: list[_Waiter] = []
        self._version = 0

    def __repr__(self) -> str:
        return f"FakeClock(now={self._now!r}, waiting={len(self._waiters)})"

    # -- the Clock protocol ----------------------------------------------------------------

    def monotonic(self) -> float:
        """The fake time, in seconds: where :meth:`advance` left it."""
        return self._now

    def wait(self, condition: threading.Condition, timeout: float | None) -> bool:
        """Wait on ``condition`` (held by the caller) until notified, until this clock
        passes ``timeout`` seconds from now (None: no limit), or at most ``poll``
        wall-clock seconds; False only when the timeout has passed on this clock."""
        with self._lock:
            deadline = math.inf if timeout is None else self._now + max(timeout, 0.0)
            if self._now >= deadline:
                return False
            waiter = _Waiter(condition, deadline)
            self._waiters.append(waiter)
            self._version += 1
            self._changed.notify_all()
        try:
            condition.wait(self._poll)
        finally:
            with self._lock:
                self._waiters.remove(waiter)
                self._version += 1
                self._changed.notify_all()
        return self._now < deadline

    # -- moving time -------------------------------------------------------------------------

    def advance(self, seconds: float) -> None:
        """Move the time ``seconds`` forward and wake every waiter (those whose timeout
        has passed return False, the others re-check and wait again)."""
        if not (seconds >= 0 and math.isfinite(seconds)):
            raise ValueError("seconds must be a non-negative, finite number")
        self.advance_to(self._now + seconds)

    def advance_to(self, when: float) -> None:
        """Move the time to ``when`` (never back: an earlier ``when`` is refused) and wake
        every waiter, as :meth:`advance`."""
        if not math.isfinite(when):
            raise ValueError("when must be a finite number of seconds")
        with self._lock:
            if when < self._now:
                raise ValueError(f"the clock does not go back ({when} < {self._now})")
            self._now = float(when)
            self._version += 1
            conditions = {id(w.condition): w.condition for w in self._waiters}
        for condition in conditions.values():  # never under self._lock: waiters hold theirs
            with condition:
                condition.notify_all()

    # -- what the threads are doing ----------------------------------------------------------

    @property
    def waiting(self) -> int:
        """Threads blocked in :meth:`wait` right now."""
        with self._lock:
            return len(self._waiters)

    def next_deadline(self) -> float | None:
        """The earliest fake time at which a blocked waiter times out; None when every
        blocked waiter waits without a timeout (or none is blocked)."""
        with self._lock:
            deadline = min((w.deadline for w in self._waiters), default=math.inf)
        return None if deadline == math.inf else deadline

    def _quiet(self, n: int) -> bool:
        """At least ``n`` threads are blocked in :meth:`wait` and none of them has been
        notified, at one instant."""
        with self._lock:
            version = self._version
            conditions = {id(w.condition): w.condition for w in self._waiters}
            if len(self._waiters) < n:
                return False
        for condition in conditions.values():
            if not condition.acquire(timeout=0.05):
                return False
            try:
                # Under the condition's lock a notified waiter cannot have resumed (and so
                # is still registered), and one not notified is still in the waiter list.
                blocked = getattr(condition, "_waiters", None)
                with self._lock:
                    registered = sum(w.condition is condition for w in self._waiters)
                if blocked is not None and len(blocked) < registered:
                    return False
            finally:
                condition.release()
        with self._lock:
            return self._version == version

    def wait_for_waiters(self, n: int, timeout: float = 10.0) -> bool:
        """Block until ``n`` threads (an Emitter's ``threads`` senders, say) are blocked
        in :meth:`wait`, none of them already notified; False after ``timeout`` wall-clock
        seconds. Advance the clock only after this: then no thread that could still act
        at the current time is left behind."""
        return self._wait_quiet(n, time.monotonic() + timeout, _never)

    def _wait_quiet(self, n: int, end: float, done: Callable[[], bool]) -> bool:
        """Wait until :meth:`_quiet` (True) or ``done()`` or the wall-clock ``end``."""
        while not self._quiet(n):
            left = end - time.monotonic()
            if left <= 0 or done():
                return False
            with self._lock:
                # Woken by a waiter coming or going; a notified waiter resuming unregisters.
                self._changed.wait(min(left, 0.01))
        return True

    def run_until(
        self, predicate: Callable[[], bool], *, waiters: int, timeout: float = 10.0
    ) -> bool:
        """Advance the fake time from one waiter's deadline to the next, each step only
        once ``waiters`` threads are blocked (:meth:`wait_for_waiters`), until
        ``predicate()`` is true; False when it is still false after ``timeout`` wall-clock
        seconds. When no blocked thread has a deadline the time stays put while something
        else (an encoder, another thread of the test) acts."""
        end = time.monotonic() + timeout
        while True:
            if predicate():
                return True
            if not self._wait_quiet(waiters, end, predicate) or predicate():
                return predicate()
            deadline = self.next_deadline()
            if deadline is None:
                with self._lock:
                    self._changed.wait(min(end - time.monotonic(), 0.01))
                continue
            self.advance_to(max(deadline, self._now))
