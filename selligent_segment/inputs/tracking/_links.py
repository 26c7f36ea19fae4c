"""Building the tracking links of an outgoing message: the open pixel, click and
unsubscribe URLs, and the ``List-Unsubscribe`` headers of RFC 8058.

Guarantees: every URL is ``{base_url}/{o|c|u}/{token}``, its token sealed with the
signing key; what a link seals is checked when it is built (the recipient and ids as a
:class:`~selligent_segment.CallbackRecord` would check them, a click's target by
``check_target``), so the endpoints never meet a link this module would not make.
"""

from __future__ import annotations

import math
import time
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import attrs

from selligent_segment._errors import ConfigurationError, InvalidEvent, shown
from selligent_segment._record import CallbackRecord
from selligent_segment.delivery._endpoint import is_loopback_host
from selligent_segment.inputs.tracking._target import check_target
from selligent_segment.inputs.tracking._token import (
    MAX_TOKEN_CHARS,
    Token,
    TrackingKeys,
    seal,
)

__all__ = ["ONE_CLICK", "TrackingLinks"]

#: The ``List-Unsubscribe-Post`` header value (and POST body) of RFC 8058.
ONE_CLICK = "List-Unsubscribe=One-Click"


#: Characters that end or split a URL in a ``List-Unsubscribe`` header (``<``, ``>``,
#: ``,``) or that RFC 3986 does not allow unencoded in one.
_UNSAFE = frozenset('<>",\\`{}|^')


def _base_url(_instance: object, _attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, str):
        raise ConfigurationError("base_url", "expected text")
    if not value.isascii() or not value.isprintable() or " " in value:
        raise ConfigurationError(
            "base_url", "must be printable ASCII, without spaces (it goes into mail headers)"
        )
    unsafe = sorted(set(value) & _UNSAFE)
    if unsafe:
        raise ConfigurationError(
            "base_url",
            f"{shown(''.join(unsafe))}: not allowed (a List-Unsubscribe header would end or "
            "split the URL there; percent-encode the path)",
        )
    try:
        parts = urlsplit(value)
    except ValueError:
        raise ConfigurationError("base_url", "not a valid URL") from None
    if "?" in value or "#" in value or "@" in parts.netloc or not parts.hostname:
        raise ConfigurationError(
            "base_url", "expected https://host[/path], without credentials, query or fragment"
        )
    if parts.scheme != "https" and not (
        parts.scheme == "http" and is_loopback_host(parts.hostname)
    ):
        raise ConfigurationError(
            "base_url", "must be https:// (RFC 8058; plain http only on loopback)"
        )


#: How far ahead of now a link's send time may be (a send scheduled ahead); beyond it the
#: value is taken for a mistake (milliseconds, most often), whose links would never work.
MAX_SEND_AHEAD = 366 * 86400


def _send_time(sent_at: datetime | float | None) -> int:
    now = time.time()
    if sent_at is None:
        return int(now)
    if isinstance(sent_at, datetime):
        if sent_at.tzinfo is None:
            raise InvalidEvent("sent_at", "a datetime needs a time zone")
        seconds: float = sent_at.timestamp()
    elif isinstance(sent_at, bool) or not isinstance(sent_at, (int, float)):
        raise InvalidEvent("sent_at", f"expected a datetime or POSIX seconds, got {shown(sent_at)}")
    elif isinstance(sent_at, float) and not math.isfinite(sent_at):
        raise InvalidEvent("sent_at", "not a finite number of seconds")
    else:
        seconds = sent_at
    if seconds > now + MAX_SEND_AHEAD:
        raise InvalidEvent(
            "sent_at", "more than a year ahead: POSIX seconds are expected, not milliseconds"
        )
    if seconds < 0:
        raise InvalidEvent("sent_at", "before 1970")
    return int(seconds)


def _strip_slash(value: object) -> object:
    return value.rstrip("/") if isinstance(value, str) else value


def _text(value: object) -> str | None:
    return None if value is None else str(value)


@attrs.frozen
class TrackingLinks:
    """Makes the tracking links of outgoing mail, served by a
    :class:`~selligent_segment.inputs.tracking.TrackingApp` mounted at ``base_url``
    (``https://``; plain ``http://`` only on loopback, for tests).

    Each method takes the recipient (``user_id`` and/or ``email``), the ``tenant`` and
    the platform's ``email_id`` / ``campaign_id``, and ``sent_at`` (an aware datetime or
    POSIX seconds; default: now) which the endpoints use to spot scanners and expiry.
    Invalid values raise :class:`~selligent_segment.InvalidEvent` naming the field.
    """

    base_url: str = attrs.field(validator=_base_url, converter=_strip_slash)
    keys: TrackingKeys = attrs.field()

    @keys.validator
    def _check_keys(self, _attribute: attrs.Attribute[Any], value: object) -> None:
        if not isinstance(value, TrackingKeys):
            raise ConfigurationError("keys", "expected a TrackingKeys")

    def _url(self, kind: str, record: dict[str, Any], sent_at: datetime | float | None) -> str:
        record = {k: v for k, v in record.items() if v is not None}
        checked = CallbackRecord.from_dict(record).to_dict()  # raises InvalidEvent
        token = Token(
            kind=kind,
            sent_at=_send_time(sent_at),
            **{k: _text(checked.get(k)) for k in record if k != "type"},
        )
        text = seal(token, self.keys)
        if len(text) > MAX_TOKEN_CHARS:
            raise InvalidEvent(
                "link",
                f"its token would be {len(text):,} characters, over the {MAX_TOKEN_CHARS:,} "
                "the endpoints read: shorten the ids or the link URL",
            )
        return f"{self.base_url}/{kind[0]}/{text}"

    def open_pixel_url(
        self,
        *,
        tenant: str | None = None,
        email: str | None = None,
        user_id: str | int | None = None,
        email_id: str | int | None = None,
        campaign_id: str | int | None = None,
        sent_at: datetime | float | None = None,
    ) -> str:
        """The URL of a 1x1 open pixel for this recipient and message."""
        fields = {"type": "opened", "tenant": tenant, "email": email, "user_id": user_id}
        fields.update(email_id=email_id, campaign_id=campaign_id)
        return self._url("open", fields, sent_at)

    def click_url(
        self,
        link_url: str,
        *,
        link_id: str | int | None = None,
        tenant: str | None = None,
        email: str | None = None,
        user_id: str | int | None = None,
        email_id: str | int | None = None,
        campaign_id: str | int | None = None,
        sent_at: datetime | float | None = None,
    ) -> str:
        """The URL that records a click and redirects to ``link_url`` (``http``/``https``
        only, ASCII, no credentials: see ``check_target``)."""
        fields = {"type": "link_clicked", "tenant": tenant, "email": email, "user_id": user_id}
        fields.update(email_id=email_id, campaign_id=campaign_id, link_id=link_id)
        fields["link_url"] = check_target(link_url)
        return self._url("click", fields, sent_at)

    def unsubscribe_url(
        self,
        *,
        list_id: str | int | None = None,
        tenant: str | None = None,
        email: str | None = None,
        user_id: str | int | None = None,
        email_id: str | int | None = None,
        campaign_id: str | int | None = None,
        sent_at: datetime | float | None = None,
    ) -> str:
        """The one-click unsubscribe URL (RFC 8058): a POST unsubscribes, a GET shows a
        confirmation page."""
        fields = {"type": "unsubscribed", "tenant": tenant, "email": email, "user_id": user_id}
        fields.update(email_id=email_id, campaign_id=campaign_id, list_id=list_id)
        return self._url("unsubscribe", fields, sent_at)

    def list_unsubscribe_headers(
        self,
        *,
        mailto: str | None = None,
        list_id: str | int | None = None,
        tenant: str | None = None,
        email: str | None = None,
        user_id: str | int | None = None,
        email_id: str | int | None = None,
        campaign_id: str | int | None = None,
        sent_at: datetime | float | None = None,
    ) -> dict[str, str]:
        """The two headers RFC 8058 asks for: ``List-Unsubscribe: <https URL>`` (then
        ``<mailto:...>`` when ``mailto`` is given: an address or a ``mailto:`` URI) and
        ``List-Unsubscribe-Post: List-Unsubscribe=One-Click``. DKIM must sign both."""
        url = self.unsubscribe_url(
            list_id=list_id,
            tenant=tenant,
            email=email,
            user_id=user_id,
            email_id=email_id,
            campaign_id=campaign_id,
            sent_at=sent_at,
        )
        value = f"<{url}>"
        if mailto is not None:
            value += f", <{_mailto(mailto)}>"
        return {"List-Unsubscribe": value, "List-Unsubscribe-Post": ONE_CLICK}


def _mailto(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidEvent("mailto", "expected an address or a mailto: URI")
    uri = value.strip()
    if not uri.lower().startswith("mailto:"):
        uri = f"mailto:{uri}"
    if (
        not uri.isascii()
        or any(c <= " " or c in "<>,\x7f" for c in uri)
        or "@" not in uri.partition("?")[0]
    ):
        raise InvalidEvent(
            "mailto", "expected an ASCII address or mailto: URI, without spaces, < > or ,"
        )
    return uri
