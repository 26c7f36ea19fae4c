"""The environment variables :meth:`Emitter.from_env <selligent_segment.Emitter.from_env>`
reads, turned into Emitter settings: one table, one reader, errors naming the variable.

A variable that is unset or empty (blank) counts as unset, and the setting keeps its
default. A setting passed to ``from_env`` as a keyword wins over its variable, which is
then not read at all. No error shows the value of ``SEGMENT_WRITE_KEY`` (a secret).

The proxy and CA bundle variables (``HTTPS_PROXY``, ``NO_PROXY``, ``SSL_CERT_FILE``...,
read as ``requests`` reads them) are those of the mapping read too: where they differ from
the process's own, which the transport would read, the mapping's answer for the endpoint
becomes the ``proxy`` and ``ca_bundle`` settings (unless given as keywords).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from selligent_segment._config import DEFAULTS
from selligent_segment._errors import ConfigurationError, shown
from selligent_segment._keys_file import WriteKeysFileError, load_write_keys
from selligent_segment._naming import EventNaming
from selligent_segment.delivery import _proxy
from selligent_segment.delivery._endpoint import resolve_endpoint

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
    _pin_egress(environ, settings, sources)
    return settings, sources


def _pin_egress(
    environ: Mapping[str, str], settings: dict[str, Any], sources: dict[str, str]
) -> None:
    """Make the proxy and the CA bundle those ``environ`` gives, as explicit settings, where
    the process's environment (read by the transport for a setting left None) differs.
    A bad proxy or CA variable raises ConfigurationError naming it."""
    if settings.get("transport") is not None:
        return
    if settings.get("proxy") is None and _differ(environ, _proxy.PROXY_VARIABLES):
        try:
            endpoint = resolve_endpoint(
                settings.get("endpoint", DEFAULTS.endpoint),
                settings.get("region", DEFAULTS.region),
                settings.get("allow_insecure_http", DEFAULTS.allow_insecure_http),
            )
        except ConfigurationError:
            endpoint = None  # the Emitter refuses the setting, naming it
        if endpoint is not None:
            settings["proxy"], variable = _proxy.proxy_for(endpoint, environ)
            if variable is not None:
                sources["proxy"] = variable
    if settings.get("ca_bundle") is None and _differ(environ, _proxy.CA_VARIABLES):
        found = _proxy.ca_bundle_variable(environ)
        if found is not None:
            settings["ca_bundle"], sources["ca_bundle"] = found
        else:
            settings["ca_bundle"] = _certifi_bundle()


def _differ(environ: Mapping[str, str], names: tuple[str, ...]) -> bool:
    """True when ``environ`` and the process's environment differ on ``names``."""
    return any(environ.get(name) != os.environ.get(name) for name in names)


def _certifi_bundle() -> str | None:
    """certifi's CA bundle: what the transport uses when no variable names one."""
    try:
        import certifi
    except ImportError:  # pragma: no cover - certifi is a declared dependency
        return None
    return str(certifi.where())
