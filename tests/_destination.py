"""Shared set-up of the destination's tests: the example config pointed at a LocalSelligent,
a minimal tenant table, secrets in a dict (never the process's environment), events and
signatures."""

from __future__ import annotations

import hashlib
import hmac
import sys
from pathlib import Path
from typing import Any

import orjson

from selligent_segment.destination import DestinationConfig, parse_config

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "destination.toml"

ENV = {
    "ACME_SELLIGENT_API_KEY": "acme-key:acme-secret",
    "ACME_SEGMENT_SHARED_SECRET": "acme-shared",
    "GLOBEX_SELLIGENT_API_KEY": "globex-key:globex-secret",
    "GLOBEX_SEGMENT_SHARED_SECRET": "globex-shared",
}


def tenant_table(**overrides: Any) -> dict[str, Any]:
    """A minimal tenant's table (acme's organization, its API key from ``KEY``, identify
    into CONTACTS, track into EVENTS); ``overrides`` add or replace, a None removes."""
    table: dict[str, Any] = {
        "selligent_url": "https://acme.slgnt.eu",
        "organization": "acme",
        "api_key_env": "KEY",
        "identify": {"list": "CONTACTS"},
        "track": {"list": "EVENTS"},
    }
    table.update(overrides)
    return {k: v for k, v in table.items() if v is not None}


def example_data(url: str) -> dict[str, Any]:
    """The example file as data, every tenant's selligent_url set to ``url``."""
    data = tomllib.loads(EXAMPLE.read_text())
    for tenant in data["tenants"].values():
        tenant["selligent_url"] = url
    return data


def example_config(url: str, env: dict[str, str] | None = None) -> DestinationConfig:
    """The example config (acme and globex) loading into ``url``."""
    return parse_config(example_data(url), ENV if env is None else env, source="example")


def toml_text(data: dict[str, Any]) -> str:
    """A minimal TOML writer for the example's shapes (tables, strings, lists, inline tables)."""
    lines: list[str] = []

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return orjson.dumps(v).decode()
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{" + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + "}"
        return str(v)

    def table(prefix: str, d: dict[str, Any]) -> None:
        scalars = {k: v for k, v in d.items() if not (isinstance(v, dict) and _is_table(k, v))}
        lines.append(f"[{prefix}]")
        lines.extend(f"{k} = {value(v)}" for k, v in scalars.items())
        for k, v in d.items():
            if k not in scalars:
                table(f"{prefix}.{k}", v)

    for name, tenant in data["tenants"].items():
        table(f"tenants.{name}", tenant)
    return "\n".join(lines) + "\n"


def _is_table(key: str, value: dict[str, Any]) -> bool:
    return key in ("identify", "track", "fields")


def sign(secret: str, body: bytes) -> str:
    """Segment's ``X-Signature``: hex HMAC-SHA1 of ``body``."""
    return hmac.new(secret.encode(), body, hashlib.sha1).hexdigest()


def identify(n: int, **traits: Any) -> dict[str, Any]:
    """An identify call of user ``n``."""
    return {
        "type": "identify",
        "messageId": f"id-{n}",
        "userId": f"user-{n}",
        "timestamp": "2026-11-30T09:15:00.000Z",
        "traits": {
            "email": f"User{n}@Example.com",
            "firstName": "Ann",
            "lastName": f"N{n}",
            **traits,
        },
    }


def track(n: int, event: str = "Order Completed", **properties: Any) -> dict[str, Any]:
    """A track call of user ``n``."""
    return {
        "type": "track",
        "messageId": f"tr-{n}",
        "userId": f"user-{n}",
        "event": event,
        "timestamp": "2026-11-30T09:16:00.000Z",
        "properties": {"total": 12.5, "plan_name": "Pro", **properties},
    }
