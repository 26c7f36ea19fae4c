"""The one rule for repeated log lines, on plain numbers."""

from __future__ import annotations

from selligent_segment._throttle import Throttle


def test_a_key_is_allowed_once_then_again_only_after_its_interval() -> None:
    throttle = Throttle(10.0)
    assert throttle.allows(100.0)
    assert not throttle.allows(100.0)
    assert not throttle.allows(109.99)
    assert throttle.allows(110.0)
    assert not throttle.allows(115.0)  # the interval counts from the last line let out


def test_each_key_has_its_own_interval() -> None:
    throttle = Throttle(10.0)
    assert throttle.allows(0.0, "disk full")
    assert throttle.allows(1.0, "corrupt")
    assert not throttle.allows(2.0, "disk full")
    assert not throttle.allows(3.0, "corrupt")
    assert throttle.allows(10.0, "disk full")
