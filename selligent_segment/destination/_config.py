"""The destination's config file: one TOML file, every tenant's Selligent account and mapping.

One job: read the file into immutable values (:class:`DestinationConfig`,
:class:`TenantConfig`, :class:`TableMapping`) with every source compiled once, or raise
:class:`DestinationConfigError` listing *every* problem in the file, each naming its tenant,
table, column and reason.

Guarantees: a loaded config is valid throughout (a value is never checked again per event);
secrets are never in the file (only the names of the environment variables that hold them)
and never in a repr or an error text; a missing or malformed secret variable is a problem
at load time (unless ``require_secrets=False``), not at the first event. See
``docs/destination.md`` for the format.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Final, Literal
from urllib.parse import urlsplit

import attrs

from selligent_segment._errors import ConfigurationError, SelligentSegmentError, shown
from selligent_segment.destination._seed import SEED_FIELDS, SEED_KEYS
from selligent_segment.destination._source import Source, compile_source

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - 3.10 is declared, not tested
    import tomli as tomllib

__all__ = [
    "ConfigProblem",
    "DestinationConfig",
    "DestinationConfigError",
    "Field",
    "Kind",
    "TableMapping",
    "TenantConfig",
    "load_config",
    "parse_config",
]

Kind = Literal["identify", "track"]
KINDS: Final[tuple[Kind, ...]] = ("identify", "track")

#: The keys of a ``[tenants.NAME]`` table.
TENANT_KEYS: Final = (
    "selligent_url",
    "organization",
    "api_key_env",
    "shared_secret_env",
    "whole_body_signature",
    "load_back_selligent_events",
    "identify",
    "track",
)
#: The keys of a ``[tenants.NAME.identify]`` / ``[tenants.NAME.track]`` table.
TABLE_KEYS: Final = ("list", "key", "fields", "events")

_TENANT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_COLUMN = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
_API_NAME = re.compile(r"[^/?#\s]{1,200}")
_LOOPBACK = ("localhost", "127.0.0.1", "::1")


@attrs.frozen
class ConfigProblem:
    """One problem in a config file: where (``tenant``, ``table`` = ``identify`` or
    ``track``, ``column``; each None when the problem is above that level) and why."""

    reason: str
    tenant: str | None = None
    table: str | None = None
    column: str | None = None

    def __str__(self) -> str:
        where = []
        if self.tenant is not None:
            where.append(f"tenant {shown(self.tenant, quote=False)}")
        if self.table is not None:
            where.append(f"table {self.table}")
        if self.column is not None:
            where.append(f"column {shown(self.column, quote=False)}")
        return f"{', '.join(where)}: {self.reason}" if where else self.reason


class DestinationConfigError(SelligentSegmentError, ValueError):
    """A config file is invalid: ``problems`` lists every problem found (never empty);
    the text names the file and has one problem per line. No secret is ever in it."""

    def __init__(self, source: str, problems: tuple[ConfigProblem, ...]) -> None:
        self.source = source
        self.problems = problems
        lines = [f"{source}: {problem}" for problem in problems]
        super().__init__("\n".join(lines))


@attrs.frozen
class Field:
    """One column of a mapped table and its compiled source."""

    column: str
    source: Source


@attrs.frozen
class TableMapping:
    """How one kind of call (``identify`` or ``track``) becomes a row of one Selligent list.

    ``list`` is the list's API name, ``key`` its upsert key columns (``keyFields``),
    ``columns`` every mapped column in order (the key columns among them), ``events`` the
    allow-list of track event names (None: every event), ``fields`` the compiled sources.
    """

    kind: Kind
    list: str
    key: tuple[str, ...]
    fields: tuple[Field, ...]
    events: frozenset[str] | None = None

    columns: tuple[str, ...] = attrs.field(init=False, eq=False)
    """Every mapped column, in the order of the config (or of the seed schema)."""
    plan: tuple[tuple[Callable[[Mapping[str, Any]], str | None], bool], ...] = attrs.field(
        init=False, repr=False, eq=False
    )
    """Per field, its resolver and whether it is a key column (what :func:`map_event` runs)."""
    resolvers: tuple[Callable[[Mapping[str, Any]], str | None], ...] = attrs.field(
        init=False, repr=False, eq=False
    )
    """Every field's resolver, in order."""
    key_positions: tuple[int, ...] = attrs.field(init=False, repr=False, eq=False)
    """The positions of the key columns among the fields."""

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "columns", tuple(field.column for field in self.fields))
        plan = tuple((field.source.resolve, field.column in self.key) for field in self.fields)
        object.__setattr__(self, "plan", plan)
        object.__setattr__(self, "resolvers", tuple(resolve for resolve, _ in plan))
        positions = tuple(i for i, (_, is_key) in enumerate(plan) if is_key)
        object.__setattr__(self, "key_positions", positions)


def _redacted(value: object) -> str:
    return "<environ>"


@attrs.frozen
class TenantConfig:
    """One customer: its Selligent account, its secrets' variable names and its mappings.

    ``identify`` / ``track`` are None when the file has no such table (those calls are then
    not loaded). ``whole_body_signature`` (default False) accepts only a signature of the
    whole body, never a batch's first-event one. ``load_back_selligent_events`` (default
    False) loads the Email events this library itself sent to Segment. Secrets are read
    from the environment variables the file names, when asked for, and never shown in a
    repr.
    """

    name: str
    selligent_url: str
    organization: str
    api_key_env: str
    identify: TableMapping | None = None
    track: TableMapping | None = None
    shared_secret_env: str | None = None
    whole_body_signature: bool = False
    load_back_selligent_events: bool = False
    environ: Mapping[str, str] = attrs.field(
        factory=lambda: os.environ, repr=_redacted, eq=False, hash=False
    )

    def shared_secrets(self) -> tuple[bytes, ...] | None:
        """The webhook's shared secrets (UTF-8) from ``shared_secret_env``, or None when the
        file names no such variable. The variable holds one secret, or several separated
        by commas (each stripped of spaces; empty ones ignored), all accepted: during a
        rotation, the old and the new. Raises ConfigurationError (naming the variable,
        never its value) when it is named but unset or holds no secret."""
        if self.shared_secret_env is None:
            return None
        secrets = _split_secrets(self.environ.get(self.shared_secret_env))
        if not secrets:
            raise ConfigurationError(self.shared_secret_env, f"is not set (tenant {self.name})")
        return tuple(secret.encode() for secret in secrets)

    def shared_secret(self) -> bytes | None:
        """The first of :meth:`shared_secrets` (what a sender signs with), or None."""
        secrets = self.shared_secrets()
        return None if secrets is None else secrets[0]

    def api_key(self) -> str:
        """The Selligent ``key:secret`` from ``api_key_env``. Raises ConfigurationError
        (naming the variable, never its value) when it is unset, empty or not ``key:secret``."""
        value = self.environ.get(self.api_key_env)
        reason = _api_key_problem(value)
        if reason is not None:
            raise ConfigurationError(self.api_key_env, f"{reason} (tenant {self.name})")
        assert value is not None
        return value

    def mapping(self, kind: str) -> TableMapping | None:
        """The mapping of ``kind`` (``identify`` / ``track``), or None."""
        if kind == "identify":
            return self.identify
        if kind == "track":
            return self.track
        return None


def _read_only(tenants: Mapping[str, TenantConfig]) -> Mapping[str, TenantConfig]:
    return MappingProxyType(dict(tenants))


@attrs.frozen
class DestinationConfig:
    """A whole, valid config file: every tenant by name (read-only)."""

    tenants: Mapping[str, TenantConfig] = attrs.field(converter=_read_only)
    source: str = "<config>"


def _api_key_problem(value: str | None) -> str | None:
    if not value:
        return "is not set"
    secret_key, sep, secret = value.partition(":")
    if not sep or not secret_key.strip() or not secret.strip():
        return "does not hold key:secret"
    if any(c in value for c in "\r\n"):
        return "holds a line break"
    if not value.isprintable() or not all(ord(c) < 256 for c in value):
        # http.client sends a header in Latin-1: another character raised at each send
        return "holds a character an HTTP header cannot carry (a control or non-Latin-1 one)"
    return None


def load_config(
    path: str | os.PathLike[str],
    environ: Mapping[str, str] | None = None,
    *,
    require_secrets: bool = True,
) -> DestinationConfig:
    """Read and check the config file at ``path``; secrets are looked up in ``environ``
    (default ``os.environ``). Raises :class:`DestinationConfigError` with every problem
    (an unreadable file or invalid TOML is one problem)."""
    name = os.fspath(path)
    try:
        with open(name, "rb") as stream:
            data = tomllib.load(stream)
    except OSError as exc:
        reason = f"cannot read the file: {exc.strerror or exc}"
        raise DestinationConfigError(name, (ConfigProblem(reason),)) from None
    except tomllib.TOMLDecodeError as exc:
        raise DestinationConfigError(name, (ConfigProblem(f"invalid TOML: {exc}"),)) from None
    except UnicodeDecodeError as exc:
        reason = f"not UTF-8, as TOML must be: byte {exc.object[exc.start]:#04x} at {exc.start}"
        raise DestinationConfigError(name, (ConfigProblem(reason),)) from None
    return parse_config(data, environ, source=name, require_secrets=require_secrets)


#: The shortest piece of a comma-separated value taken for a secret of its own.
_MIN_SPLIT_SECRET = 16


def _split_secrets(value: str | None) -> list[str]:
    """The secrets a ``shared_secret_env`` variable holds: comma-separated for a rotation
    when every piece is at least 16 characters with no blank around it; otherwise the
    whole value is one secret, as before rotations were read (a secret holding a comma
    keeps working, and no short piece of it ever signs a request on its own)."""
    if not value:
        return []
    pieces = value.split(",")
    if len(pieces) > 1 and all(len(p) >= _MIN_SPLIT_SECRET and p == p.strip() for p in pieces):
        return pieces
    return [value]


def parse_config(
    data: Mapping[str, Any],
    environ: Mapping[str, str] | None = None,
    *,
    source: str = "<config>",
    require_secrets: bool = True,
) -> DestinationConfig:
    """:func:`load_config` for an already parsed TOML document."""
    env: Mapping[str, str] = os.environ if environ is None else environ
    problems: list[ConfigProblem] = []
    for key in data:
        if key != "tenants":
            problems.append(ConfigProblem(f"unknown top-level key {shown(key, quote=False)}"))
    tenants_data = data.get("tenants")
    tenants: dict[str, TenantConfig] = {}
    if not isinstance(tenants_data, Mapping) or not tenants_data:
        problems.append(ConfigProblem("no tenant: add a [tenants.NAME] table"))
    else:
        for name, table in tenants_data.items():
            tenant = _tenant(name, table, env, require_secrets, problems)
            if tenant is not None:
                tenants[name] = tenant
    if problems:
        raise DestinationConfigError(source, tuple(problems))
    return DestinationConfig(tenants, source)


def _tenant(
    name: str,
    table: object,
    env: Mapping[str, str],
    require_secrets: bool,
    problems: list[ConfigProblem],
) -> TenantConfig | None:
    before = len(problems)

    def problem(reason: str) -> None:
        problems.append(ConfigProblem(reason, tenant=name))

    if not _TENANT_NAME.fullmatch(name):
        problem("a tenant name is 1 to 64 letters, digits, '_', '.', '-', starting alphanumeric")
    if not isinstance(table, Mapping):
        problem("must be a table")
        return None
    for key in table:
        if key not in TENANT_KEYS:
            problem(f"unknown key {shown(key, quote=False)} (known: {', '.join(TENANT_KEYS)})")

    url = table.get("selligent_url")
    if not isinstance(url, str) or not url:
        problem("selligent_url is required: the instance URL, e.g. https://acme.slgnt.eu")
    else:
        reason = _url_problem(url)
        if reason is not None:
            safe = _url_shown(url)
            problem(f"selligent_url {shown(safe)}: {reason}" if safe else f"selligent_url {reason}")
        url = url.rstrip("/")
    organization = table.get("organization")
    if not isinstance(organization, str) or not _API_NAME.fullmatch(organization):
        problem(f"organization is required: the organization's name, not {shown(organization)}")

    api_key_env = _env_name(table, "api_key_env", True, problem)
    if api_key_env is not None and require_secrets:
        reason = _api_key_problem(env.get(api_key_env))
        if reason is not None:
            problem(f"api_key_env: the environment variable {api_key_env} {reason}")
    secret_env = _env_name(table, "shared_secret_env", False, problem)
    if secret_env is not None and require_secrets and not _split_secrets(env.get(secret_env)):
        problem(f"shared_secret_env: the environment variable {secret_env} is not set")

    whole_body = table.get("whole_body_signature", False)
    if not isinstance(whole_body, bool):
        problem(f"whole_body_signature must be true or false, not {shown(whole_body)}")
    elif whole_body and "shared_secret_env" not in table:
        problem("whole_body_signature needs shared_secret_env: a signature to check")

    load_back = table.get("load_back_selligent_events", False)
    if not isinstance(load_back, bool):
        problem(f"load_back_selligent_events must be true or false, not {shown(load_back)}")

    mappings: dict[str, TableMapping | None] = {}
    for kind in KINDS:
        spec = table.get(kind)
        mappings[kind] = None if spec is None else _mapping(name, kind, spec, problems)
    if "identify" not in table and "track" not in table:
        problem("maps nothing: add [tenants.NAME.identify] and/or [tenants.NAME.track]")

    if len(problems) > before:
        return None
    assert isinstance(url, str)
    assert isinstance(organization, str)
    assert api_key_env is not None
    return TenantConfig(
        name=name,
        selligent_url=url,
        organization=organization,
        api_key_env=api_key_env,
        identify=mappings["identify"],
        track=mappings["track"],
        shared_secret_env=secret_env,
        whole_body_signature=bool(whole_body),
        load_back_selligent_events=bool(load_back),
        environ=env,
    )


def _url_problem(url: str) -> str | None:
    """What is wrong with ``url``, or None; never a piece of the URL (urlsplit's own
    texts can quote its credentials)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "is not a URL (its host part cannot be read)"
    try:
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        return "is not a URL (its port is not a number from 0 to 65535)"
    if parts.scheme not in ("https", "http") or not parts.hostname:
        return "must be an https:// URL"
    if parts.scheme == "http" and parts.hostname not in _LOOPBACK:
        return "must be https:// (http:// only for a loopback host)"
    if parts.username is not None or parts.password is not None:
        return "must have no credentials (user:password@; the API key goes in api_key_env)"
    if parts.query or parts.fragment:
        return "must have no query or fragment"
    if "/portal/api" in parts.path.lower():  # every load would go to .../Portal/Api/...
        return "must be the instance's base URL: the library adds /Portal/Api/... itself"
    return None


def _url_shown(url: str) -> str:
    """``url`` safe to echo in an error: ``scheme://host[:port]`` only (never credentials,
    path, query or fragment); ``""`` when it is not an http(s) URL with a host."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return ""
    host = parts.hostname
    try:
        port = parts.port
    except ValueError:  # not a number: left out, it may be a password
        port = None
    if parts.scheme not in ("https", "http") or not host:
        return ""
    if ":" in host:  # IPv6
        host = f"[{host}]"
    return f"{parts.scheme}://{host}" + ("" if port is None else f":{port}")


def _env_name(table: Mapping[str, Any], key: str, required: bool, problem: Any) -> str | None:
    value = table.get(key)
    if value is None:
        if required:
            problem(f"{key} is required: the name of the environment variable holding key:secret")
        return None
    if not isinstance(value, str) or not _ENV_NAME.fullmatch(value):
        problem(f"{key} must name an environment variable (letters, digits, '_'), not a value")
        return None
    return value


def _mapping(
    tenant: str, kind: Kind, spec: object, problems: list[ConfigProblem]
) -> TableMapping | None:
    before = len(problems)

    def problem(reason: str, column: str | None = None) -> None:
        problems.append(ConfigProblem(reason, tenant=tenant, table=kind, column=column))

    if not isinstance(spec, Mapping):
        problem("must be a table")
        return None
    known = TABLE_KEYS if kind == "track" else tuple(k for k in TABLE_KEYS if k != "events")
    for key in spec:
        if key not in known:
            problem(f"unknown key {shown(key, quote=False)} (known: {', '.join(known)})")

    list_name = spec.get("list")
    if not isinstance(list_name, str) or not _API_NAME.fullmatch(list_name):
        problem(f"list is required: the Selligent list's API name, not {shown(list_name)}")

    fields_spec = spec.get("fields", SEED_FIELDS[kind])
    fields: list[Field] = []
    if not isinstance(fields_spec, Mapping) or not fields_spec:
        problem("fields must be a table of column = source (omit it for the seed schema)")
    else:
        for column, source_spec in fields_spec.items():
            if not _COLUMN.fullmatch(column):
                problem(
                    "a column name is letters, digits and '_', not starting with a digit", column
                )
            compiled = compile_source(source_spec)
            if isinstance(compiled, Source):
                fields.append(Field(column, compiled))
            else:
                for reason in compiled:
                    problem(reason, column)

    key = _key(spec.get("key", SEED_KEYS[kind]), problem)
    if key and isinstance(fields_spec, Mapping):
        for column in key:
            if column not in fields_spec:
                problem("a key column must be one of the fields", column)

    events = spec.get("events") if kind == "track" else None
    allow: frozenset[str] | None = None
    if events is not None:
        if (
            not isinstance(events, list)
            or not events
            or not all(isinstance(e, str) and e for e in events)
        ):
            problem("events must be a non-empty list of event names (omit it for every event)")
        else:
            allow = frozenset(events)

    if len(problems) > before:
        return None
    assert isinstance(list_name, str)
    return TableMapping(kind=kind, list=list_name, key=key, fields=tuple(fields), events=allow)


def _key(value: object, problem: Any) -> tuple[str, ...]:
    names = [value] if isinstance(value, str) else value
    if isinstance(names, tuple):  # the seed's
        names = list(names)
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        problem(f"key must be a column name or a list of them, not {shown(value)}")
        return ()
    if len(set(names)) != len(names):
        problem("key names a column twice")
    return tuple(names)
