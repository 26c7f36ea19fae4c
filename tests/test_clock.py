"""The system clock (_clock.py): its waits stay within what the platform takes."""

from __future__ import annotations

import threading

from selligent_segment._clock import SYSTEM_CLOCK


class _Recorded:
    """A condition that records the timeout it is asked to wait for."""

    def __init__(self) -> None:
        self.timeouts: list[float | None] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.timeouts.append(timeout)
        return False


def test_a_wait_past_the_platforms_limit_is_cut_to_it() -> None:
    # A rate cap of 1e-12 requests a second scheduled a turn 1e12 s away; Condition.wait
    # raised OverflowError, and the sender thread died.
    condition = _Recorded()
    for timeout in (None, 0.5, threading.TIMEOUT_MAX, 1e12, float("inf")):
        SYSTEM_CLOCK.wait(condition, timeout)  # type: ignore[arg-type]
    most = threading.TIMEOUT_MAX
    assert condition.timeouts == [None, 0.5, most, most, most]
