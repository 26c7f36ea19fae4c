"""The environment variables :meth:`Emitter.from_env <selligent_segment.Emitter.from_env>`
reads, turned into Emitter settings: one table, one reader, errors naming the variable.

A variable that is unset or empty (blank) counts as unset, and the setting keeps its
default. A setting passed to ``from_env`` as a keyword wins over its variable, which is
then not read at all. No error shows the value of ``SEGMENT_WRITE_KEY`` (a secret).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import attrs

from selligent_segment._errors import ConfigurationError, shown
from selligent_segment._keys_file import WriteKeysFileError, load_write_keys
from selligent_segment._naming import EventNaming

__all__ = ["VARIABLES", "EnvVariable", "settings_from_env"]

KEY = "SEGMENT_WRITE_KEY"
KEYS_FILE = "SELLIGENT_SEGMENT_WRITE_KEYS"


def _text(_: str, text: str) -> Any:
    return text


def _integer(name: str, text: str) -> Any:
    try:
        return int(text)
    except ValueError:
        raise ConfigurationError(name, f"must be an integer, got {shown(text)}") from None


def _number(name: str, text: str) -> Any:
    try:
        return float(text)
    except ValueError:
        raise ConfigurationError(name, f"must be a number, got {shown(text)}") from None


def _profile(name: str, text: str) -> Any:
    try:
        return EventNaming(profile=text.strip())
    except ConfigurationError as exc:
        raise ConfigurationError(name, exc.reason) from None


def _keys_file(name: str, text: str) -> Any:
    try:
        return load_write_keys(text)
    except WriteKeysFileError as exc:
        raise ConfigurationError(name, str(exc)) from None


@attrs.frozen
class EnvVariable:
    """One variable: its name, the Emitter setting it gives, what it holds."""

    name: str
    setting: str
    meaning: str
    parse: Callable[[str, str], Any] = attrs.field(default=_text, repr=False)


#: Every variable ``from_env`` reads, in the order of the documentation's table.
VARIABLES: tuple[EnvVariable, ...] = (
    EnvVariable(KEY, "write_key", "one write key for every record (a secret)"),
    EnvVariable(
        KEYS_FILE,
        "write_keys",
        'path of a JSON file {"tenant": "key"}, as read by load_write_keys()',
        _keys_file,
    ),
    EnvVariable(
        "SELLIGENT_SEGMENT_ENDPOINT", "endpoint", "a custom base URL (a proxy, a LocalSegment)"
    ),
    EnvVariable("SELLIGENT_SEGMENT_REGION", "region", "us or eu, when no endpoint is set"),
    EnvVariable("SELLIGENT_SEGMENT_SPOOL", "spool", "the spool file path (unset: memory)"),
    EnvVariable("SELLIGENT_SEGMENT_THREADS", "threads", "sender threads", _integer),
    EnvVariable("SELLIGENT_SEGMENT_TIMEOUT", "timeout", "HTTP read timeout, seconds", _number),
    EnvVariable(
        "SELLIGENT_SEGMENT_PROFILE",
        "naming",
        "event-name profile: selligent or segment-spec",
        _profile,
    ),
)


def settings_from_env(
    environ: Mapping[str, str], overrides: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, str]]:
    """The Emitter settings the environment and ``overrides`` give, and for each setting
    read from a variable, that variable's name (to name it in a later error).

    Raises :class:`ConfigurationError` naming the variable for a value that cannot be
    read, for both key variables set, or for no key at all (variable or override).
    """
    settings: dict[str, Any] = {}
    sources: dict[str, str] = {}
    keys_given = "write_key" in overrides or "write_keys" in overrides
    given = {v.name: environ.get(v.name, "") for v in VARIABLES}
    if not keys_given and given[KEY].strip() and given[KEYS_FILE].strip():
        raise ConfigurationError(KEY, f"and {KEYS_FILE} are both set; set only one of them")
    for variable in VARIABLES:
        text = given[variable.name]
        if not text.strip():
            continue
        if variable.setting in overrides or (keys_given and variable.name in (KEY, KEYS_FILE)):
            continue
        settings[variable.setting] = variable.parse(variable.name, text)
        sources[variable.setting] = variable.name
    if not keys_given and "write_key" not in settings and "write_keys" not in settings:
        raise ConfigurationError(
            KEY,
            f"no write key: set {KEY} (one key for every record) or {KEYS_FILE} (a JSON "
            "file of tenants and keys), or pass write_key= or write_keys=",
        )
    settings.update(overrides)
    return settings, sources
