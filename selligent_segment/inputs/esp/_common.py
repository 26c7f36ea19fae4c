"""What every ESP adapter shares: the platform ids found in an event's custom data (and the
resolver hook that may replace them), the refusal a signature check raises, and the
collector that turns one provider event after another into records or problems.

Guarantees: a bad or skipped event becomes one :class:`InputProblem` and never costs
another; a refusal (:class:`WebhookRefused`) names the provider, the tenant and the reason,
never a secret or an email address.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import Any, Protocol, TypeVar, runtime_checkable

import attrs
import orjson

from selligent_segment._errors import InvalidEvent, shown
from selligent_segment._record import CallbackRecord, EventKind
from selligent_segment.inputs._result import InputError, InputProblem, Parsed

__all__ = [
    "ID_KEYS",
    "Collector",
    "IdResolver",
    "PlatformIds",
    "Secret",
    "Webhook",
    "WebhookRefused",
    "epoch",
    "ids_from",
    "load_json",
    "load_json_events",
    "load_json_object",
    "secret_for",
    "text",
]

_T = TypeVar("_T")

#: The keys the platform puts in an ESP's custom data (SendGrid custom args, Mailgun
#: user-variables, Postmark Metadata, SparkPost rcpt_meta, SES message tags).
ID_KEYS = ("tenant", "user_id", "email_id", "campaign_id", "campaign_name")

#: A secret: one text for every tenant, or a lookup ``tenant -> secret`` (None: unknown
#: tenant, refused) for platforms with one ESP account or key per tenant. The tenant given
#: to a lookup is the one in the URL (None when the URL names none).
Secret = str | Callable[[str | None], str | None]


@attrs.frozen
class PlatformIds:
    """The platform's ids of one event, as found in the provider's custom data."""

    tenant: str | None = None
    user_id: str | None = None
    email_id: str | None = None
    campaign_id: str | None = None
    campaign_name: str | None = None


#: The resolver hook: ``(provider, raw provider event, ids found by the convention) ->
#: ids to use``; for platforms that keep their ids elsewhere (a lookup by the ESP's
#: message id, a tag naming scheme).
IdResolver = Callable[[str, Mapping[str, Any], PlatformIds], PlatformIds]


def ids_from(*sources: object) -> PlatformIds:
    """The :data:`ID_KEYS` found in ``sources`` (mappings; the first holding a key wins).
    A list value (SES tags) gives its first item; text and integers are kept, the rest
    (objects, booleans, blanks) ignored."""
    values: dict[str, str] = {}
    for source in sources:
        if not isinstance(source, Mapping):
            continue
        for key in ID_KEYS:
            if key in values:
                continue
            value = source.get(key)
            if isinstance(value, list) and value:
                value = value[0]
            if isinstance(value, bool) or not isinstance(value, (str, int)):
                continue
            text = str(value).strip()
            if text:
                values[key] = text
    return PlatformIds(**values)


def secret_for(secret: Secret, tenant: str | None, provider: str) -> str | None:
    """The secret for ``tenant`` (the URL's), or None when the lookup knows none. A
    lookup that raises (a secrets store away) is :class:`WebhookRefused` with 503: the
    provider retries (SNS retries no 4xx)."""
    if isinstance(secret, str):
        return secret
    found = caller_hook(provider, "secret lookup", secret, tenant)
    return found or None


def caller_hook(provider: str, what: str, hook: Callable[..., _T], *args: object) -> _T:
    """``hook(*args)``, a function the caller gave (a secret lookup, a topic check); what
    it raises is :class:`WebhookRefused` with 503, naming ``what`` and the exception's type
    only (its text may hold anything)."""
    try:
        return hook(*args)
    except Exception as exc:
        raise WebhookRefused(
            provider, f"the {what} raised {type(exc).__name__}; retry", status=503
        ) from None


class WebhookRefused(InputError):
    """A request refused as a whole: forged, stale, replayed, or not the provider's shape.
    ``status`` is the HTTP answer (400 unreadable, 401 missing or wrong credentials, 403
    a failed signature, a stale timestamp, a replay or a topic not allowed); ``provider``
    and ``reason`` name it; nothing secret is ever in it."""

    def __init__(self, provider: str, reason: str, *, status: int = 403) -> None:
        super().__init__(provider, "request", reason)
        self.provider = provider
        self.status = status


def load_json(body: bytes, where: str) -> Any:
    """The JSON of a request body, or :class:`InputError` naming ``where``."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InputError(where, "body", f"not JSON ({exc})") from None


def load_json_object(body: bytes, where: str, what: str) -> dict[str, Any]:
    """The JSON object of a request body, or :class:`InputError` naming ``where``: not
    JSON, or ``expected a JSON object (WHAT)``."""
    payload = load_json(body, where)
    if not isinstance(payload, dict):
        raise InputError(where, "body", f"expected a JSON object ({what})")
    return payload


def load_json_events(body: bytes, where: str, what: str) -> list[Any]:
    """The items of a request body holding a JSON array of events (one JSON object is read
    as an array of one), or :class:`InputError` naming ``where``: not JSON, or ``expected a
    JSON array of WHAT``. The items are not checked: each is one event's business."""
    payload = load_json(body, where)
    if isinstance(payload, dict):
        return [payload]
    if not isinstance(payload, list):
        raise InputError(where, "body", f"expected a JSON array of {what}")
    return payload


@runtime_checkable
class Webhook(Protocol):
    """One provider's webhook: check a request and read its events."""

    provider: str

    def handle(self, body: bytes, headers: Mapping[str, str], tenant: str | None = None) -> Parsed:
        """The records of one request (``headers`` with lower-case names; ``tenant`` the
        URL's). Raises :class:`WebhookRefused` for a request refused as a whole and
        :class:`InputError` for a body that is not the provider's format."""
        ...

    def release(self, body: bytes, headers: Mapping[str, str]) -> None:
        """Forget what :meth:`handle` remembered of this request (Mailgun's token) when
        its records could not be accepted, so that the provider's retry is not taken
        for a replay."""
        ...


def epoch(value: object) -> datetime | None:
    """A UNIX time (number or numeric text) as an aware UTC datetime; None when absent."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise InvalidEvent("timestamp", "expected a UNIX time, got bool")
    try:
        seconds = float(value)  # type: ignore[arg-type]
        return datetime.fromtimestamp(seconds, timezone.utc)
    except (TypeError, ValueError, OverflowError, OSError):
        raise InvalidEvent("timestamp", f"not a UNIX time: {shown(value)}") from None


def text(value: object) -> str | None:
    """``value`` when it is non-blank text (or an integer, as text); else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value
    return None


class Collector:
    """Builds the records of one request, event by event, keeping what went wrong as
    problems. ``tenant`` is the URL's: when given it is the tenant of every record, and an
    event whose custom data names another one is refused (a tenant's credentials never
    feed another tenant's workspace)."""

    def __init__(
        self,
        provider: str,
        where: str,
        tenant: str | None = None,
        resolver: IdResolver | None = None,
    ) -> None:
        self.provider = provider
        self.where = where
        self.tenant = tenant
        self.resolver = resolver
        self.records: list[CallbackRecord] = []
        self.places: list[str] = []
        self.problems: list[InputProblem] = []

    def at(self, index: int) -> str:
        """Where event ``index`` (0-based) is, for a problem: ``WHERE:event-N``."""
        return f"{self.where}:event-{index + 1}"

    def problem(self, index: int, field: str, reason: str) -> None:
        """Note that event ``index`` could not be read."""
        self.problems.append(InputProblem(self.at(index), field, reason))

    def read(
        self,
        index: int,
        one: Callable[[Collector, int, dict[str, Any]], None],
        event: dict[str, Any],
    ) -> None:
        """``one(self, index, event)``, an adapter's reading of one event. Whatever else it
        raises (a shape no rule of the adapter foresaw) is that event's problem, naming
        the exception's type only, never the request's: no event costs another. The
        records it made of that event before raising are taken back."""
        made = len(self.records)
        try:
            one(self, index, event)
        except Exception as exc:
            del self.records[made:], self.places[made:]
            self.problem(index, "event", f"cannot be read ({type(exc).__name__})")

    def skip(self, index: int, field: str, name: object, why: str = "") -> None:
        """Note that event ``index`` is not one of the six kinds (``skipped: ...``)."""
        tail = f" ({why})" if why else ""
        reason = f"skipped: {shown(name)} is not one of the six email events{tail}"
        self.problems.append(InputProblem(self.at(index), field, reason))

    def kind_of(
        self,
        index: int,
        field: str,
        name: object,
        kinds: Mapping[str, _T],
        skipped: Mapping[str, str] | None = None,
        unknown: str = "unknown to this adapter",
    ) -> _T | None:
        """What ``kinds`` maps event ``index``'s ``name`` (its ``field``) to; else None,
        having noted why: a name ``kinds`` lacks is skipped (the reason ``skipped`` gives
        for it, else ``unknown``), anything but text is a problem."""
        found = kinds.get(name) if isinstance(name, str) else None
        if found is None:
            if isinstance(name, str):
                self.skip(index, field, name, (skipped or {}).get(name, unknown))
            else:
                self.problem(index, field, f"missing or not text: {shown(name)}")
        return found

    def timestamp(self, index: int, fields: dict[str, Any], value: object) -> bool:
        """Set ``fields["timestamp"]`` to the UNIX time ``value`` (:func:`epoch`) and return
        True; or note event ``index``'s problem and return False."""
        try:
            fields["timestamp"] = epoch(value)
        except InvalidEvent as exc:
            self.problem(index, exc.field, exc.reason)
            return False
        return True

    def add(
        self,
        index: int,
        kind: EventKind,
        raw: Mapping[str, Any],
        ids: PlatformIds,
        properties: dict[str, Any],
        **fields: Any,
    ) -> None:
        """Make the record of event ``index`` (or note why it cannot be made)."""
        if self.resolver is not None:
            try:
                ids = self.resolver(self.provider, raw, ids)
            except Exception as exc:  # the hook is the caller's code: one event, one problem
                self.problem(index, "resolver", f"the id resolver failed: {type(exc).__name__}")
                return
        tenant = ids.tenant
        if self.tenant is not None:
            if tenant is not None and tenant != self.tenant:
                self.problem(index, "tenant", "the event names another tenant than the URL")
                return
            tenant = self.tenant
        try:
            record = CallbackRecord(
                kind,
                tenant=tenant,
                user_id=ids.user_id,
                email_id=ids.email_id,
                campaign_id=ids.campaign_id,
                campaign_name=ids.campaign_name,
                properties={"esp": self.provider, **properties},
                **fields,
            )
        except InvalidEvent as exc:
            self.problem(index, exc.field, exc.reason)
            return
        self.records.append(record)
        self.places.append(self.at(index))

    def parsed(self) -> Parsed:
        """What was collected: each record with its place (``WHERE:event-N``)."""
        return Parsed(tuple(self.records), tuple(self.problems), tuple(self.places))
