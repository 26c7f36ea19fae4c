"""How a report finds the platform's own ids: the join keys a report carries (the original
``Message-ID``, a VERP token in the envelope, the platform's own header in the returned
message) and the platform's resolver that turns them into record fields (``tenant``,
``email_id``, ``user_id``, ...)."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from selligent_segment._errors import ConfigurationError, shown

__all__ = ["PROTECTED_FIELDS", "Join", "JoinKey", "Resolver", "table_resolver"]


@attrs.frozen
class JoinKey:
    """What a report says about the message it is about, handed to the resolver.

    ``message_id``: the original message's ``Message-ID`` without its angle brackets;
    ``verp``: the token the :attr:`Join.verp` pattern found in an envelope address;
    ``header``: the value of the first of :attr:`Join.headers` found in the original
    message; ``recipient``: the address the report names (None when absent or redacted);
    ``kind``: ``bounced`` or ``marked_as_spam``. Any of them may be None.
    """

    message_id: str | None = None
    verp: str | None = None
    header: str | None = None
    recipient: str | None = None
    kind: str = "bounced"


#: The platform's resolver: record fields (``tenant``, ``email_id``, ``user_id``,
#: ``campaign_id``, ``email``, ``properties``, ...) for a join key, or None when it knows
#: nothing of it. Raising ``LookupError`` refuses the report's record (its message is
#: shown); any other exception refuses it too, showing only the exception's type.
Resolver = Callable[[JoinKey], "Mapping[str, Any] | None"]

#: Fields a resolver may not set: they are the report's facts.
PROTECTED_FIELDS = frozenset(
    {"type", "event_id", "timestamp", "bounce_type", "bounce_reason", "smtp_status"}
)


def _pattern(value: object) -> re.Pattern[str] | Callable[[str], str | None] | None:
    if value is None or (callable(value) and not isinstance(value, re.Pattern)):
        return value
    if isinstance(value, str):
        try:
            value = re.compile(value, re.IGNORECASE)
        except re.error as exc:
            raise ConfigurationError("verp", f"not a regular expression: {exc}") from None
    if not isinstance(value, re.Pattern):
        raise ConfigurationError("verp", "expected a pattern, its text or a callable")
    if value.groups < 1:
        raise ConfigurationError("verp", "the pattern needs a group (named 'token', or the first)")
    return value


def _headers(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    return tuple(str(name) for name in value)  # type: ignore[attr-defined]


@attrs.frozen
class Join:
    """How reports are joined back to the platform's sends. Every field is optional.

    ``resolver``: called once per record with its :class:`JoinKey`; the fields it returns
    complete the record (default: none). ``verp``: a regular expression (text or compiled;
    text is matched ignoring case) searched in the envelope addresses a report shows (the
    bounce's ``To``/``Delivered-To``/``X-Original-To``/``Envelope-To``, the original's
    ``Return-Path``, an ARF's ``Original-Mail-From``); its group ``token`` (or its first
    group) is the VERP token; or a callable ``address -> token or None`` (default: none).
    ``headers``: the platform's own headers in the original message, first found wins
    (default: ``X-Platform-Recipient``). ``tenant``: the tenant of records the resolver
    does not place (default: none).
    """

    resolver: Resolver | None = None
    verp: re.Pattern[str] | Callable[[str], str | None] | None = attrs.field(
        default=None, converter=_pattern
    )
    headers: tuple[str, ...] = attrs.field(default=("X-Platform-Recipient",), converter=_headers)
    tenant: str | None = None

    def token_in(self, address: str | None) -> str | None:
        """The VERP token in ``address``, or None."""
        if not address or self.verp is None:
            return None
        if not isinstance(self.verp, re.Pattern):
            return self.verp(address) or None
        found = self.verp.search(address)
        if found is None:
            return None
        token = found.group("token") if "token" in self.verp.groupindex else found.group(1)
        return token or None

    def resolve(self, key: JoinKey) -> tuple[dict[str, Any], str | None]:
        """The fields the resolver gives for ``key`` (the default tenant first), and a
        reason when it refused; never raises."""
        fields: dict[str, Any] = {}
        if self.tenant is not None:
            fields["tenant"] = self.tenant
        if self.resolver is None:
            return fields, None
        try:
            found = self.resolver(key)
        except LookupError as exc:
            return fields, f"the resolver refused it: {shown(str(exc))}"
        except Exception as exc:  # the platform's code: never crash a run
            return fields, f"the resolver raised {type(exc).__name__}"
        if found is None:
            return fields, None
        if not isinstance(found, Mapping):
            return fields, f"the resolver returned a {type(found).__name__}, not a mapping"
        for name, value in found.items():
            if name in PROTECTED_FIELDS:
                return fields, f"the resolver may not set {shown(name, quote=False)}"
            fields[name] = value
        return fields, None


def _bare(message_id: str) -> str:
    return message_id.strip().strip("<>").strip()


def table_resolver(table: Mapping[str, Mapping[str, Any]]) -> Resolver:
    """A resolver reading ``table``, keyed by VERP token, platform header value or
    ``Message-ID`` (angle brackets optional), tried in that order."""
    bare = {_bare(key) if key.startswith("<") else key: value for key, value in table.items()}

    def resolve(key: JoinKey) -> Mapping[str, Any] | None:
        for candidate in (key.verp, key.header, key.message_id):
            if candidate is not None and candidate in bare:
                return bare[candidate]
        return None

    return resolve
