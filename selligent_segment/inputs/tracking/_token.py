"""Tracking tokens: what an open pixel, click or unsubscribe link carries, signed.

One job: seal a :class:`Token` into URL-safe text with an HMAC-SHA256 key, and open it
again, refusing anything that was not sealed by one of the keys in :class:`TrackingKeys`.

Format: ``KEYID.PAYLOAD.MAC``. ``PAYLOAD`` is the unpadded base64url of the compact JSON
array of the token's fields; ``MAC`` the first 16 bytes (128 bits) of
HMAC-SHA256(key, ``"selligent-segment/tracking/1\\0" + KEYID + "." + PAYLOAD``), unpadded
base64url. Every character is in ``[A-Za-z0-9_.-]``: safe in a URL path as it is.

Guarantees: :func:`unseal` raises :class:`TokenRefused` (one message, whatever failed: no
oracle) for an unknown key id, a MAC that does not match (compared in constant time), a
payload that is not a token, a token older than ``max_age`` or dated in the future; a
token is signed, **not encrypted**: whoever holds the link can read the recipient it
names. Secrets are never in a repr or an error text.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Mapping
from typing import Any

import attrs
import orjson

from selligent_segment._errors import ConfigurationError, SelligentSegmentError, shown

__all__ = ["KINDS", "Token", "TokenRefused", "TrackingKeys", "seal", "signature", "unseal"]

#: The three kinds of link, as sealed (and as the first path segment of their URL).
KINDS = {"o": "open", "c": "click", "u": "unsubscribe"}

_DOMAIN = b"selligent-segment/tracking/1\x00"
_MAC_BYTES = 16
_KEY_ID = re.compile(r"[A-Za-z0-9_-]{1,32}")
_MIN_SECRET_BYTES = 32
#: A token dated more than this many seconds after now is refused (clocks differ a little).
FUTURE_SKEW = 300.0
#: The longest token text accepted: a link URL is at most 8,192 characters.
MAX_TOKEN_CHARS = 16_384


class TokenRefused(SelligentSegmentError, ValueError):
    """A tracking token that was not sealed by a known key, was changed, is not a token,
    or is expired. The text never says which: a forger learns nothing from it."""

    def __init__(self) -> None:
        super().__init__("invalid or expired tracking link")


def _secret(value: object, where: str) -> bytes:
    if isinstance(value, str):
        value = value.encode("utf-8")
    if not isinstance(value, bytes):
        got = shown(type(value).__name__, quote=False)
        raise ConfigurationError(where, f"expected bytes or text, got {got}")
    if len(value) < _MIN_SECRET_BYTES:
        raise ConfigurationError(where, f"a key needs at least {_MIN_SECRET_BYTES} bytes")
    return value


def _named(value: object) -> str:
    """``value`` as an error text shows a key id: not at all when it could be a secret
    (given in the wrong place: 32 characters or more, or not text)."""
    if isinstance(value, str) and len(value.encode("utf-8", "surrogatepass")) < _MIN_SECRET_BYTES:
        return shown(value)
    return "(value not shown: it could be a secret)"


def _keys(value: object) -> Mapping[str, bytes]:
    if not isinstance(value, Mapping) or not value:
        raise ConfigurationError("keys", "expected a non-empty mapping of key id to key")
    keys: dict[str, bytes] = {}
    for key_id, secret in value.items():
        if not isinstance(key_id, str) or not _KEY_ID.fullmatch(key_id):
            raise ConfigurationError(
                "keys", f"key id {_named(key_id)}: expected 1 to 32 of [A-Za-z0-9_-]"
            )
        # A valid key id of 32 characters may be a secret given the wrong way round.
        where = f"keys[{key_id!r}]" if len(key_id) < _MIN_SECRET_BYTES else "keys"
        keys[key_id] = _secret(secret, where)
    return keys


@attrs.frozen
class TrackingKeys:
    """The HMAC keys of the tracking links: ``keys`` maps a key id to its secret (at least
    32 bytes; text is UTF-8 encoded), ``signing`` names the one new links are sealed with.
    Links sealed with any key listed are accepted: to rotate, add the new key, sign with
    it, and keep the old one as long as its unsubscribe links may be used (they never
    expire: dropping a key breaks every ``List-Unsubscribe`` it signed). The secrets are
    never shown, nor a value given where a key id goes that could be one."""

    keys: Mapping[str, bytes] = attrs.field(converter=_keys, repr=False)
    signing: str = attrs.field()

    @signing.validator
    def _check_signing(self, _attribute: attrs.Attribute[Any], value: object) -> None:
        if not isinstance(value, str) or value not in self.keys:
            raise ConfigurationError("signing", f"{_named(value)} is not a key id in keys")


@attrs.frozen(kw_only=True)
class Token:
    """What one tracking link says: its ``kind`` (``"open"``, ``"click"``,
    ``"unsubscribe"``), the send time ``sent_at`` (POSIX seconds), and the platform's ids.
    ``link_url``/``link_id`` are for clicks, ``list_id`` for unsubscribes."""

    kind: str
    sent_at: int
    tenant: str | None = None
    user_id: str | None = None
    email: str | None = None
    email_id: str | None = None
    campaign_id: str | None = None
    link_url: str | None = None
    link_id: str | None = None
    list_id: str | None = None


_FIELDS = ("tenant", "user_id", "email", "email_id", "campaign_id", "link_url", "link_id")
_ORDER = (*_FIELDS, "list_id")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: bytes, signed: str) -> bytes:
    return hmac.new(secret, _DOMAIN + signed.encode("ascii"), hashlib.sha256).digest()[:_MAC_BYTES]


def seal(token: Token, keys: TrackingKeys) -> str:
    """``token`` as URL-safe text, signed with ``keys.signing``."""
    code = next(c for c, k in KINDS.items() if k == token.kind)
    values: list[Any] = [code, token.sent_at, *(getattr(token, n) for n in _ORDER)]
    while values[-1] is None:
        values.pop()
    signed = f"{keys.signing}.{_b64(orjson.dumps(values))}"
    return f"{signed}.{_b64(_mac(keys.keys[keys.signing], signed))}"


def signature(text: str) -> str:
    """The MAC part of a token's text (unique per token: used for idempotent event ids)."""
    return text.rpartition(".")[2]


def unseal(text: str, keys: TrackingKeys, *, now: float, max_age: float | None) -> Token:
    """The :class:`Token` sealed in ``text``; raises :class:`TokenRefused` for anything
    else (see the module text). ``max_age`` seconds after its ``sent_at`` a token expires
    (None: never)."""
    if len(text) > MAX_TOKEN_CHARS or not text.isascii():
        raise TokenRefused
    parts = text.split(".")
    if len(parts) != 3:
        raise TokenRefused
    key_id, payload, mac = parts
    secret = keys.keys.get(key_id)
    if secret is None:
        raise TokenRefused
    # Compared as text with the one canonical encoding: a MAC spelt another way (base64's
    # unused low bits of the last character) would decode to the same bytes, and give the
    # same unsubscribe a second event id (signature() is part of it).
    if not hmac.compare_digest(mac.encode(), _b64(_mac(secret, f"{key_id}.{payload}")).encode()):
        raise TokenRefused
    try:
        values = orjson.loads(_unb64(payload))
    except (binascii.Error, ValueError):
        raise TokenRefused from None
    token = _token_of(values)
    if token.sent_at > now + FUTURE_SKEW:
        raise TokenRefused
    if max_age is not None and now - token.sent_at > max_age:
        raise TokenRefused
    return token


def _token_of(values: object) -> Token:
    """A signed payload is ours, but check its shape anyway: a bug (or an old format)
    must be a refusal, not a crash."""
    if not isinstance(values, list) or not 2 <= len(values) <= 2 + len(_ORDER):
        raise TokenRefused
    code, sent_at, *rest = values
    kind = KINDS.get(code) if isinstance(code, str) else None
    if kind is None or type(sent_at) is not int:
        raise TokenRefused
    if any(v is not None and not isinstance(v, str) for v in rest):
        raise TokenRefused
    return Token(kind=kind, sent_at=sent_at, **dict(zip(_ORDER, rest, strict=False)))
