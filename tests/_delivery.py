"""Helpers shared by the delivery tests (test_emitter, test_dispatch): quick policies, a
record of the dict form, and an Emitter with two tenants pointed at a LocalSegment."""

from __future__ import annotations

from typing import Any

from selligent_segment import BatchPolicy, Emitter, RetryPolicy
from selligent_segment.testing import LocalSegment

FAST_RETRY = RetryPolicy(initial_backoff=0.01, max_backoff=0.05, max_attempts=50)
QUICK = BatchPolicy(linger=0.0)


def record(i: int, tenant: str = "acme", **extra: Any) -> dict[str, Any]:
    """Delivered record ``i`` of ``tenant`` (event id ``ev-i``); ``extra`` adds or replaces."""
    base: dict[str, Any] = {
        "type": "delivered",
        "tenant": tenant,
        "email": f"user{i}@example.com",
        "event_id": f"ev-{i}",
        "email_id": "m-1",
    }
    base.update(extra)
    return base


def emitter(server: LocalSegment, **options: Any) -> Emitter:
    """An Emitter for tenants acme and globex (keys key-acme, key-globex), fast retries,
    no linger; ``options`` override."""
    options.setdefault("write_keys", {"acme": "key-acme", "globex": "key-globex"})
    options.setdefault("retry", FAST_RETRY)
    options.setdefault("batch", QUICK)
    return Emitter(endpoint=server.url, **options)
