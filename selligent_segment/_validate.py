"""The one numeric check behind every numeric setting (ConfigurationError names it)."""

from __future__ import annotations

import math

from selligent_segment._errors import ConfigurationError, shown

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
        kind = shown(type(value).__name__, quote=False)
        raise ConfigurationError(name, f"must be a number, got {kind}")
    if integer and not isinstance(value, int):
        raise ConfigurationError(name, f"must be an integer, got {shown(value)}")
    if isinstance(value, float) and not math.isfinite(value):  # (an int is finite)
        raise ConfigurationError(name, "must be finite")
    if strict and value <= minimum:
        raise ConfigurationError(name, f"must be greater than {minimum:g}, got {shown(value)}")
    if not strict and value < minimum:
        raise ConfigurationError(name, f"must be at least {minimum:g}, got {shown(value)}")
    if maximum is not None and value > maximum:
        raise ConfigurationError(name, f"must be at most {maximum:g}, got {shown(value)}")
