"""One rule for log lines that could repeat every second while a fault lasts: a line of
each kind at most once every so many seconds."""

from __future__ import annotations

__all__ = ["Throttle"]


class Throttle:
    """Says whether a repeated line may be logged again: each ``key`` (the text of an
    error, or ``""`` for a line of one kind) at most once every ``every`` seconds.

    Guarantee: :meth:`allows` is True the first time for a key, then only once ``every``
    seconds have passed on the caller's clock since it was last True for that key. Not
    thread-safe by itself: callers that share one hold their own lock.
    """

    def __init__(self, every: float) -> None:
        self.every = every
        self._last: dict[str, float] = {}

    def allows(self, now: float, key: str = "") -> bool:
        """True (and remembered) when a line for ``key`` may go out at ``now``."""
        if now - self._last.get(key, float("-inf")) < self.every:
            return False
        self._last[key] = now
        return True
