"""Every setting of an :class:`~selligent_segment.Emitter`, in one frozen value.

Each default is written once, here, beside the sentence that documents it; each check
runs when the value is made and raises :class:`ConfigurationError` naming the setting.
``Emitter(...)`` takes the same names as keyword arguments (its signature reads its
defaults from here), and ``Emitter.from_config(config)`` takes the value itself.
"""

from __future__ import annotations

import os
import types
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from selligent_segment._clock import Clock
from selligent_segment._errors import ConfigurationError, shown
from selligent_segment._naming import EventNaming
from selligent_segment._profile import ProfileUpdates, profile_updates
from selligent_segment._results import DeliveryFailure
from selligent_segment._validate import check_number
from selligent_segment.delivery._aside import AsidePolicy
from selligent_segment.delivery._batch_policy import BatchPolicy
from selligent_segment.delivery._endpoint import resolve_endpoint
from selligent_segment.delivery._keys import KeyResolver, WriteKeys
from selligent_segment.delivery._proxy import check_ca_bundle, routes
from selligent_segment.delivery._retry import RetryPolicy
from selligent_segment.delivery._transport import Transport
from selligent_segment.spool._postgres import is_postgres_url, redact
from selligent_segment.spool._protocol import OnFull
from selligent_segment.spool._schema import spool_path

__all__ = ["DEFAULTS", "DURABLE_RETRY", "EmitterConfig", "default"]

#: With a durable spool a batch is retried through outages of up to 12 hours (then it
#: becomes a dead letter, kept and requeueable); in memory the default policy applies.
DURABLE_RETRY = RetryPolicy(max_attempts=1_000_000, max_rate_limit_duration=43_200.0)


#: The longest duration a setting may give, in seconds (a week): every wait and socket
#: timeout of the library stays within what the platform's clocks take.
MAX_SECONDS = 7 * 86_400.0
#: The smallest request-rate cap (one request in about 17 minutes), 0 aside (no cap).
MIN_RATE = 0.001


def _number(
    minimum: float, *, integer: bool = False, strict: bool = False, maximum: float | None = None
) -> Any:
    def check(_instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
        check_number(
            attribute.name, value, minimum=minimum, integer=integer, strict=strict, maximum=maximum
        )

    return check


def _optional_number(minimum: float, *, maximum: float | None = None) -> Any:
    def check(_instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if value is not None:
            check_number(attribute.name, value, minimum=minimum, strict=True, maximum=maximum)

    return check


def _rate(_instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    check_number(attribute.name, value, minimum=0)
    if 0 < value < MIN_RATE:  # type: ignore[operator]  # a number: checked just above
        raise ConfigurationError(
            attribute.name, f"must be 0 (no cap) or at least {MIN_RATE:g}, got {shown(value)}"
        )


def _flag(_instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, bool):
        raise ConfigurationError(attribute.name, f"must be True or False, got {shown(value)}")


def _instance(kind: type, *, optional: bool = False) -> Any:
    def check(_instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if value is None and optional:
            return
        if not isinstance(value, kind):
            got = shown(type(value).__name__, quote=False)
            raise ConfigurationError(attribute.name, f"expected a {kind.__name__}, got {got}")

    return check


def _callback(_instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and not callable(value):
        got = shown(type(value).__name__, quote=False)
        raise ConfigurationError(attribute.name, f"expected a function or None, got {got}")


def _having(*methods: str) -> Any:
    def check(_instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if value is None:
            return
        missing = [m for m in methods if not callable(getattr(value, m, None))]
        if missing:
            got = shown(type(value).__name__, quote=False)
            raise ConfigurationError(
                attribute.name, f"a {got} has no {', '.join(missing)}() method"
            )

    return check


def _on_full(value: object) -> OnFull:
    try:
        return OnFull(value)
    except ValueError:
        known = ", ".join(p.value for p in OnFull)
        raise ConfigurationError("on_full", f"expected one of {known}") from None


def _spool(_instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, (str, os.PathLike)):
        got = shown(type(value).__name__, quote=False)
        raise ConfigurationError("spool", f"expected 'memory', a path or a URL, got {got}")
    if value != "memory" and not is_postgres_url(value):
        spool_path(value)


def _absolute_spool(value: Any) -> Any:
    """A spool file's path made absolute once, here (a ``sqlite:///`` URL as its path):
    whatever directory the process, or a child it forks, is in later, it names the same
    file. Anything else as it is (the validator refuses what it must)."""
    if isinstance(value, (str, os.PathLike)) and value != "memory" and not is_postgres_url(value):
        try:
            return str(spool_path(value))
        except ConfigurationError:
            return value
    return value


def _spool_repr(value: object) -> str:
    """The spool setting as a repr shows it: a ``postgresql://`` URL without its password."""
    return repr(redact(value)) if isinstance(value, str) and is_postgres_url(value) else repr(value)


def _proxy(_instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None:
        routes(value)  # type: ignore[arg-type]  # raises ConfigurationError("proxy", ...)


def _ca_bundle(_instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None:
        check_ca_bundle(value, attribute.name)


@attrs.frozen(kw_only=True)
class EmitterConfig:
    """The settings of an Emitter, validated when made (:class:`ConfigurationError`
    names the setting and the reason). Immutable: ``attrs.evolve(config, threads=4)``
    makes a changed copy."""

    write_key: str | None = attrs.field(default=None, repr=False)
    """One write key for every record; records that name no tenant count as tenant
    ``"default"``."""
    write_keys: Mapping[str, str] | KeyResolver | None = attrs.field(default=None, repr=False)
    """Per tenant: a mapping ``tenant -> key``, or a function ``tenant -> key | None``
    asked at send time (a new answer resumes a paused tenant). Exactly one of
    ``write_key`` and ``write_keys`` is given."""
    endpoint: str | None = None
    """A custom base URL (``/v1/batch`` is appended); None: the ``region``'s."""
    region: str = "us"
    """``"us"`` (api.segment.io) or ``"eu"`` (events.eu1.segmentapis.com), when no
    ``endpoint`` is given."""
    allow_insecure_http: bool = attrs.field(default=False, validator=_flag)
    """Allow a plain ``http://`` endpoint off loopback (loopback is always allowed)."""
    spool: str | os.PathLike[str] = attrs.field(
        default="memory", converter=_absolute_spool, validator=_spool, repr=_spool_repr
    )
    """``"memory"`` (lost with the process), or a file path or ``sqlite:///`` URL (kept as
    the absolute path it names when the config is made): the durable spool, where
    ``emit`` returns once the event is journaled on disk (it then survives ``kill -9``);
    processes may share one file. Or a ``postgresql://`` URL
    (the ``postgres`` extra): one spool that processes on many hosts share, where ``emit``
    returns once the row is committed (see ``docs/scaling.md``)."""
    fsync: bool = attrs.field(default=False, validator=_flag)
    """Durable spool only: also survive power loss, at the cost of an ``fdatasync`` per
    ``emit``."""
    max_spool_bytes: int = attrs.field(
        default=256 * 1024 * 1024, validator=_number(64 * 1024, integer=True)
    )
    """Cap on what the spool holds: encoded messages in memory, used pages of a file
    (256 MiB; at least 64 KiB). An empty spool takes the encoder's next chunk of records
    whole, even past the cap, so a small cap slows delivery but never stops it."""
    max_pending: int = attrs.field(default=100_000, validator=_number(1, integer=True))
    """Records accepted but not yet moved into the spool by the encoder; when reached,
    ``on_full`` applies (with a spool file they are journaled already, about 0.25 KB of
    memory each, and ``emit_many`` waits for the encoder instead)."""
    on_full: OnFull = attrs.field(default=OnFull.RAISE, converter=_on_full)
    """What ``emit`` does when ``max_pending`` records wait: ``"raise"`` SpoolFull,
    ``"block"`` up to ``block_timeout`` seconds then SpoolFull, ``"drop_newest"``
    (counted and reported through ``on_failure``)."""
    block_timeout: float = attrs.field(default=1.0, validator=_number(0, maximum=MAX_SECONDS))
    """Seconds ``on_full="block"`` waits for room (at most a week); ``close()`` ends the
    wait (the event is refused: EmitterClosed)."""
    naming: EventNaming = attrs.field(factory=EventNaming, validator=_instance(EventNaming))
    """Event names: profile and per-tenant overrides. Processes sharing a spool file must
    use the same naming."""
    profile_updates: ProfileUpdates | None = attrs.field(default=None, converter=profile_updates)
    """Off by default. True (or a :class:`ProfileUpdates` naming the traits): an
    unsubscribe, a hard bounce or a spam complaint also sends an ``identify`` for the same
    user, setting ``email_unsubscribed`` / ``email_bounced`` + ``email_bounce_type`` /
    ``email_marked_as_spam`` and the time, through the same spool and delivery; it counts
    as one more message in :meth:`Emitter.stats`."""
    batch: BatchPolicy = attrs.field(factory=BatchPolicy, validator=_instance(BatchPolicy))
    """Batch size, bytes, linger and gzip."""
    retry: RetryPolicy | None = attrs.field(
        default=None, validator=_instance(RetryPolicy, optional=True)
    )
    """The retry policy; None: ``RetryPolicy()`` in memory, and with a spool file
    ``RetryPolicy(max_attempts=1_000_000, max_rate_limit_duration=43_200.0)``: batches
    are retried through 12 hours of outage, then become dead letters (kept, requeueable)."""
    aside: AsidePolicy = attrs.field(factory=AsidePolicy, validator=_instance(AsidePolicy))
    """Batches refused with a 5xx naming its own ``Retry-After`` wait that out aside
    while their tenant sends on (4 per tenant, 16,000,000 bytes in all, waits up to
    10 s); ``AsidePolicy(max_batches=0)``: every failure makes the tenant wait."""
    threads: int = attrs.field(default=2, validator=_number(1, integer=True))
    """Sender threads shared by every tenant."""
    max_requests_per_second: float = attrs.field(default=50.0, validator=_rate)
    """Request-rate cap per write key (tenants sharing a key share it); 0: no cap, else
    at least 0.001."""
    timeout: float = attrs.field(
        default=15.0, validator=_number(0, strict=True, maximum=MAX_SECONDS)
    )
    """HTTP read timeout in seconds: each read of the answer (at most a week)."""
    request_deadline: float | None = attrs.field(
        default=None, validator=_optional_number(0, maximum=MAX_SECONDS)
    )
    """Every request, from connecting to the last byte of the answer, ends within this
    many seconds however slowly the endpoint sends; None: 30, or 5 + ``timeout`` when
    longer. An overdue request is retried."""
    proxy: str | bool | None = attrs.field(default=None, validator=_proxy, repr=False)
    """The HTTP proxy requests go through. None: the environment's, as ``requests`` reads
    it (``HTTPS_PROXY``, ``HTTP_PROXY``, ``ALL_PROXY``, lower-case first, and ``NO_PROXY``);
    a URL ``http://[user:password@]host:port``: that proxy for every request, whatever the
    environment says; False: none. ``https://`` endpoints are reached through a
    ``CONNECT`` tunnel; credentials go as ``Proxy-Authorization``, never in a repr or log."""
    ca_bundle: str | os.PathLike[str] | None = attrs.field(default=None, validator=_ca_bundle)
    """A PEM file of the CA certificates TLS is verified with (a TLS-inspecting proxy's
    CA, a private collector's). None: ``$SSL_CERT_FILE``, else ``$REQUESTS_CA_BUNDLE``,
    else certifi's bundle. Verification is always on."""
    on_failure: Callable[[DeliveryFailure], None] | None = attrs.field(
        default=None, validator=_callback
    )
    """Called with a :class:`DeliveryFailure` for events permanently not delivered, on
    the library's threads (or in ``emit``/``close``). What it raises is logged, never
    passed on (in the library's threads, even ``SystemExit``); it may call ``close()``,
    which then never waits for itself (see :meth:`Emitter.close`)."""
    on_pause: Callable[[str, str], None] | None = attrs.field(default=None, validator=_callback)
    """Called with ``(tenant, reason)`` when a tenant's key is refused or missing; its
    events are kept until a new key comes."""
    exit_timeout: float = attrs.field(default=5.0, validator=_number(0, maximum=MAX_SECONDS))
    """Seconds the interpreter-exit hook (and SIGTERM) flushes before giving up (at most
    a week)."""
    handle_sigterm: bool = attrs.field(default=True, validator=_flag)
    """Turn SIGTERM into a clean exit (``SystemExit(143)`` in the main thread) so the
    exit hook flushes and reports; only installed from the main thread when SIGTERM has
    no handler yet."""
    transport: Transport | None = attrs.field(default=None, validator=_having("post", "close"))
    """How requests are sent; None: an :class:`HttpTransport` (urllib3, TLS verified)
    built from ``threads``, ``timeout``, ``request_deadline``, ``batch.gzip``, ``proxy``
    and ``ca_bundle``. A test
    may pass :class:`selligent_segment.testing.MockTransport`."""
    clock: Clock | None = attrs.field(default=None, validator=_having("monotonic", "wait"))
    """The scheduler's clock; None: the system's. A test may pass a fake one."""

    def __attrs_post_init__(self) -> None:
        WriteKeys(self.write_key, self.write_keys)  # raises ConfigurationError
        resolve_endpoint(self.endpoint, self.region, self.allow_insecure_http)

    @property
    def durable(self) -> bool:
        """True with a spool file."""
        return self.spool != "memory"

    @property
    def retry_policy(self) -> RetryPolicy:
        """``retry``, or the default for this spool."""
        if self.retry is not None:
            return self.retry
        return DURABLE_RETRY if self.durable else RetryPolicy()


_FIELDS = attrs.fields_dict(EmitterConfig)


def default(setting: str) -> Any:
    """The default of ``setting``, as written in :class:`EmitterConfig` (None where the
    default is built per Emitter)."""
    field = _FIELDS[setting]
    return None if isinstance(field.default, attrs.Factory) else field.default  # type: ignore[arg-type]


#: Every setting's default by name (``DEFAULTS.threads``), read by ``Emitter``'s
#: signature so that the defaults are written only in :class:`EmitterConfig`.
DEFAULTS: Any = types.SimpleNamespace(**{name: default(name) for name in _FIELDS})
