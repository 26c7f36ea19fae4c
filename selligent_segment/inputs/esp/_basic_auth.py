"""HTTP basic authentication, as Postmark and SparkPost secure their webhooks (the
credentials are written into the webhook URL, ``https://user:password@host/...``).

Guarantee: :func:`basic_auth_ok` compares both the user name and the password in constant
time, whatever the input, and is False for a missing or malformed header; a
:class:`BasicAuthWebhook` parses nothing before the credentials are checked.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Protocol

from selligent_segment.inputs._result import Parsed
from selligent_segment.inputs.esp._common import IdResolver, Secret, WebhookRefused, secret_for

__all__ = ["BasicAuthConfig", "BasicAuthWebhook", "basic_auth_ok", "check_basic_auth"]


def basic_auth_ok(header: str | None, username: str, password: str) -> bool:
    """Whether the ``Authorization`` header carries exactly ``username:password``."""
    if not header:
        return False
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        given = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    user, sep, secret = given.partition(b":")
    user_ok = hmac.compare_digest(user, username.encode("utf-8"))
    password_ok = hmac.compare_digest(secret, password.encode("utf-8"))
    return bool(sep) and user_ok and password_ok


def check_basic_auth(
    provider: str,
    headers: Mapping[str, str],
    username: str,
    password: Secret,
    tenant: str | None,
) -> None:
    """Return when ``headers`` carry the credentials (the password for ``tenant``);
    raise :class:`WebhookRefused` (401) otherwise."""
    secret = secret_for(password, tenant, provider)
    if secret is None:
        raise WebhookRefused(provider, "no credentials for this tenant", status=401)
    if not basic_auth_ok(headers.get("authorization"), username, secret):
        raise WebhookRefused(provider, "missing or wrong basic-auth credentials", status=401)


class BasicAuthConfig(Protocol):
    """The settings of a webhook secured by basic authentication."""

    @property
    def username(self) -> str:
        """The user name."""
        ...

    @property
    def password(self) -> Secret:
        """The password, or a lookup by tenant."""
        ...


class BasicAuthWebhook:
    """A webhook secured by basic authentication (Postmark, SparkPost): :meth:`handle`
    checks the credentials (401 when wrong), then parses with the subclass's ``parse``.
    Thread-safe."""

    provider: ClassVar[str]
    parse: ClassVar[Callable[..., Parsed]]

    def __init__(self, config: Any, resolver: IdResolver | None = None) -> None:
        self.config: BasicAuthConfig = config
        self.resolver = resolver

    def handle(self, body: bytes, headers: Mapping[str, str], tenant: str | None = None) -> Parsed:
        """Check the credentials, then parse."""
        config = self.config
        check_basic_auth(self.provider, headers, config.username, config.password, tenant)
        return type(self).parse(body, self.provider, tenant=tenant, resolver=self.resolver)

    def release(self, body: bytes, headers: Mapping[str, str]) -> None:
        """Nothing to forget."""
