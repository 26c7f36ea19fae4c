"""Write keys: which key a tenant's events are sent with. Keys are secrets.

Nothing here puts a key in a repr, a log line or an exception text; a key is compared
through a short fingerprint (the first 8 hex digits of its SHA-256) when it must be told
apart from another, and the fingerprint is never logged either.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import unicodedata
from collections.abc import Callable, Mapping

from selligent_segment._errors import ConfigurationError, shown
from selligent_segment._limits import DEFAULT_TENANT

__all__ = ["DEFAULT_TENANT", "KeyResolver", "WriteKeys", "fingerprint"]

log = logging.getLogger("selligent_segment")


#: A callable that returns a tenant's current write key, or None when it has none.
KeyResolver = Callable[[str], "str | None"]


def fingerprint(key: str) -> str:
    """A short, non-reversible tag of ``key`` to tell keys apart without showing them."""
    return hashlib.sha256(key.encode()).hexdigest()[:8]


def _check_key(setting: str, key: object) -> str:
    """``key`` when it is non-blank text without a space or a control or format character
    anywhere (a pasted key with one inside would be refused by Segment on every request)."""
    if not isinstance(key, str) or not key or any(_unfit_in_key(char) for char in key):
        raise ConfigurationError(
            setting, "a write key must be non-blank text without spaces or control characters"
        )
    return key


def _unfit_in_key(char: str) -> bool:
    return char.isspace() or unicodedata.category(char) in ("Cc", "Cf", "Zs", "Zl", "Zp")


class WriteKeys:
    """One write key for everything, or one per tenant (a mapping or a resolver)."""

    def __init__(
        self,
        write_key: str | None,
        write_keys: Mapping[str, str] | KeyResolver | None,
    ) -> None:
        if (write_key is None) == (write_keys is None):
            raise ConfigurationError("write_key", "give exactly one of write_key or write_keys")
        self._lock = threading.Lock()
        self._single: str | None = None
        self._table: dict[str, str] | None = None
        self._resolver: KeyResolver | None = None
        if write_key is not None:
            self._single = _check_key("write_key", write_key)
        elif isinstance(write_keys, Mapping):
            if not write_keys:
                raise ConfigurationError("write_keys", "the mapping is empty")
            self._table = {
                _check_tenant(t): _check_key(f"write_keys[{shown(t)}]", k)
                for t, k in write_keys.items()
            }
        elif callable(write_keys):
            self._resolver = write_keys
        else:
            raise ConfigurationError("write_keys", "expected a mapping or a callable")

    def __repr__(self) -> str:
        if self._single is not None:
            return "WriteKeys(<1 key>)"
        if self._table is not None:
            return f"WriteKeys(<{len(self._table)} tenants>)"
        return "WriteKeys(<resolver>)"

    @property
    def single(self) -> bool:
        """True when one key serves every tenant."""
        return self._single is not None

    def default_tenant(self) -> str | None:
        """The tenant of records that name none, or None when they must name one."""
        return DEFAULT_TENANT if self._single is not None else None

    def known(self, tenant: str) -> bool:
        """False only when a fixed table is configured and lacks ``tenant``."""
        return self._table is None or tenant in self._table

    def resolve(self, tenant: str) -> str | None:
        """The tenant's key now, or None. A resolver that raises counts as None."""
        if self._single is not None:
            return self._single
        if self._table is not None:
            return self._table.get(tenant)
        assert self._resolver is not None
        try:
            key = self._resolver(tenant)
        except Exception as exc:  # the tenant pauses and is asked again later
            log.error(
                "the write-key resolver raised %s for tenant %s",
                type(exc).__name__,
                shown(tenant),
                extra={"tenant": tenant, "reason": "resolver_error"},
            )
            return None
        return key if isinstance(key, str) and key.strip() else None

    def set(self, tenant: str, key: str) -> None:
        """Replace one tenant's key (table mode) or the single key."""
        _check_key("write_key", key)
        with self._lock:
            if self._single is not None:
                self._single = key
            elif self._table is not None:
                self._table = {**self._table, _check_tenant(tenant): key}
            else:
                raise ConfigurationError("write_keys", "keys come from a resolver; update it there")


def _check_tenant(tenant: object) -> str:
    if not isinstance(tenant, str) or not tenant.strip():
        raise ConfigurationError(
            "write_keys", f"tenant names must be non-blank text: {shown(tenant)}"
        )
    if not tenant.isprintable() and any(
        unicodedata.category(char) in ("Cc", "Cf") for char in tenant
    ):  # a record's tenant never holds one: its key could never be used
        raise ConfigurationError(
            "write_keys", f"tenant names hold no control or format character: {shown(tenant)}"
        )
    return tenant
