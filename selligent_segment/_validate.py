"""The one numeric check behind every numeric setting (ConfigurationError names it)."""

from __future__ import annotations

import math

from selligent_segment._errors import ConfigurationError

__all__ = ["check_number"]


def check_number(
    name: str,
    value: object,
    *,
    minimum: float,
    maximum: float | None = None,
    strict: bool = False,
    integer: bool = False,
) -> None:
    """Refuse bools, non-numbers, NaN, infinities, values below ``minimum`` (or equal to it
    when ``strict``), values above ``maximum`` (when given) and, with ``integer``,
    non-integers; the error names ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigurationError(name, f"must be a number, got {type(value).__name__}")
    if integer and not isinstance(value, int):
        raise ConfigurationError(name, f"must be an integer, got {value!r}")
    if not math.isfinite(value):
        raise ConfigurationError(name, "must be finite")
    if strict and value <= minimum:
        raise ConfigurationError(name, f"must be greater than {minimum:g}, got {value!r}")
    if not strict and value < minimum:
        raise ConfigurationError(name, f"must be at least {minimum:g}, got {value!r}")
    if maximum is not None and value > maximum:
        raise ConfigurationError(name, f"must be at most {maximum:g}, got {value!r}")
