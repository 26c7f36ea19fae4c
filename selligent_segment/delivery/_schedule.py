"""The schedule of turns: which tenant sends next, and when.

Tenants are known here by name. A tenant is given a turn at a time: now (it joins the back
of one round-robin ready queue) or later (a timer, kept in a heap). Giving a tenant a new
turn supersedes its pending one, a timer or a place in the ready queue (a turn due now,
then put off by a wait that came up before it was taken, is not taken before that wait);
a turn taken is taken once.

Guarantees: turns due are taken in the order they came due (ready queue first in, first
out; timers by time, then by the order they were set), so a tenant sends one batch and
then waits behind every tenant already waiting: none can starve the others. Nothing here
reads a clock, waits or locks: the caller passes ``now`` and holds its own lock.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque

__all__ = ["Schedule"]


class Schedule:
    """The ready queue and the timer heap of the tenants' turns."""

    def __init__(self) -> None:
        #: Names of the tenants whose turn is due, in order (a name may stand in it more
        #: than once, or after its turn was taken: :meth:`take` skips those).
        self.ready: deque[str] = deque()
        #: ``(at, seq, name, gen)``: a turn of ``name`` due at ``at``, live while ``gen`` is
        #: still the tenant's generation.
        self.timers: list[tuple[float, int, str, int]] = []
        self._seq = itertools.count()
        self._gen: dict[str, int] = {}
        self._scheduled: set[str] = set()
        #: When each tenant's turn given last is due: its place in the ready queue, if
        #: it has one, is not taken before then.
        self._due: dict[str, float] = {}

    def put(self, name: str, at: float, now: float) -> None:
        """Give ``name`` a turn at ``at``: due now when ``at <= now``, else a timer.
        Supersedes the tenant's pending timer, if any."""
        gen = self._gen[name] = self._gen.get(name, 0) + 1
        self._scheduled.add(name)
        self._due[name] = at
        if at <= now:
            self.ready.append(name)
        else:
            heapq.heappush(self.timers, (at, next(self._seq), name, gen))

    def scheduled(self, name: str) -> bool:
        """True while ``name`` has a turn given and not yet taken."""
        return name in self._scheduled

    def take(self, now: float) -> str | None:
        """The tenant whose turn is next at ``now`` (its turn is then taken), or None
        when no turn is due. Timers due by ``now`` join the ready queue first."""
        timers = self.timers
        while timers and timers[0][0] <= now:
            _, _, name, gen = heapq.heappop(timers)
            if self._gen[name] == gen:
                self.ready.append(name)
        ready, scheduled, due = self.ready, self._scheduled, self._due
        while ready:
            name = ready.popleft()
            if name in scheduled and due.get(name, now) <= now:  # (else its timer is set)
                scheduled.discard(name)
                return name
        return None

    def others_ready(self, name: str, now: float) -> bool:
        """True when a tenant other than ``name`` has a turn due at ``now`` in the ready
        queue: not a place left behind by a turn already taken, or put off since by a
        timer (:meth:`take` would skip those)."""
        scheduled, due = self._scheduled, self._due
        return any(
            other != name and other in scheduled and due.get(other, now) <= now
            for other in self.ready
        )

    def timeout(self, now: float) -> float | None:
        """Seconds from ``now`` to the earliest timer (None: no timer set)."""
        return self.timers[0][0] - now if self.timers else None
