"""Helpers shared by the delivery tests (test_emitter, test_dispatch): quick policies, a
record of the dict form, an Emitter with two tenants pointed at a LocalSegment or, on a
FakeClock, answered by a MockTransport, acme's last error once a condition holds, and a
transport that notes the fake time of each real request."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from selligent_segment import BatchPolicy, Emitter, LastError, RetryPolicy, Stats
from selligent_segment._clock import Clock
from selligent_segment.delivery._transport import Response, Transport
from selligent_segment.testing import FakeClock, Handler, LocalSegment, MockTransport

FAST_RETRY = RetryPolicy(initial_backoff=0.01, max_backoff=0.05, max_attempts=50)
QUICK = BatchPolicy(linger=0.0)
SENDERS = 2  # the Emitter's default number of sender threads


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


def _two_tenants(options: dict[str, Any]) -> dict[str, Any]:
    """``options`` with the defaults of the helpers below: tenants acme and globex (keys
    key-acme, key-globex), fast retries, no linger."""
    options.setdefault("write_keys", {"acme": "key-acme", "globex": "key-globex"})
    options.setdefault("retry", FAST_RETRY)
    options.setdefault("batch", QUICK)
    return options


def emitter(server: LocalSegment, **options: Any) -> Emitter:
    """An Emitter for tenants acme and globex (keys key-acme, key-globex), fast retries,
    no linger; ``options`` override."""
    return Emitter(endpoint=server.url, **_two_tenants(options))


def fake_emitter(
    handler: Handler | None = None, *, clock: FakeClock | None = None, **options: Any
) -> tuple[Emitter, MockTransport, FakeClock]:
    """``emitter()``'s settings on a FakeClock (``clock``, or a new one at 0), answered by
    ``handler`` through a MockTransport that stamps each request with the fake time;
    ``options`` override."""
    clock = clock or FakeClock()
    transport = MockTransport(handler, clock=clock)
    return Emitter(transport=transport, clock=clock, **_two_tenants(options)), transport, clock


def acme_last_error(
    handler: Handler, until: Callable[[Stats], bool], *, emit: bool = True, **options: Any
) -> LastError | None:
    """Through ``fake_emitter(handler, **options)``: emit record 1 (unless ``emit`` is
    false), run the fake clock until ``until(stats)`` holds (asserted), and return acme's
    last error then; the emitter is closed."""
    em, _, clock = fake_emitter(handler, **options)
    try:
        if emit:
            em.emit(record(1))
        assert clock.run_until(lambda: until(em.stats()), waiters=SENDERS)
        return em.stats().tenants["acme"].last_error
    finally:
        em.close(0)


def has_last_error(stats: Stats) -> bool:
    """Whether acme has a last error in ``stats``."""
    return getattr(stats.tenants.get("acme"), "last_error", None) is not None


class Timed:
    """A transport that notes the time of ``clock`` at each post and sends it with
    ``inner``: real HTTP, fake scheduling."""

    def __init__(self, inner: Transport, clock: Clock) -> None:
        self.inner = inner
        self.clock = clock
        self.at: list[float] = []

    def post(
        self, endpoint: str, write_key: str, bodies: Sequence[bytes], *, retry_count: int = 0
    ) -> Response:
        self.at.append(self.clock.monotonic())
        return self.inner.post(endpoint, write_key, bodies, retry_count=retry_count)

    def close(self) -> None:
        self.inner.close()
