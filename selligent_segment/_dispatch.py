"""Sending: a fixed pool of sender threads shared by every tenant.

Each tenant has a FIFO queue in the spool and a small state here: when it may send next
(linger, backoff, Retry-After, the request-rate cap), whether a request of its is in
flight (at most one, which keeps its order), and whether it is paused (its key was
refused or is missing). Ready tenants wait in one round-robin queue, so a tenant with a
million queued events sends one batch and then goes to the back of the line: it cannot
starve the others. No lock is held across a request.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence

import attrs

from selligent_segment._batch_policy import BatchPolicy
from selligent_segment._keys import WriteKeys, fingerprint
from selligent_segment._mapping import EncodedMessage
from selligent_segment._retry import Outcome, RetryPolicy, server_paced
from selligent_segment._spool import Lease, Spool
from selligent_segment._stats import Counters
from selligent_segment._transport import Response, Transport, envelope_overhead

__all__ = ["DeliveryFailure", "Dispatcher"]

log = logging.getLogger("selligent_segment")


@attrs.frozen
class DeliveryFailure:
    """Messages settled without delivery, handed to ``on_failure``.

    ``reason`` is a short code (``rejected``, ``retries_exhausted``, ``too_large``,
    ``spool_full``, ``unsent_at_close``); ``detail`` says more (never a write key);
    ``status`` is the HTTP status when there was one.
    """

    tenant: str
    reason: str
    detail: str
    status: int | None
    message_ids: tuple[str, ...]
    bodies: tuple[bytes, ...] = attrs.field(repr=False)


@attrs.define
class _Tenant:
    name: str
    gen: int = 0
    scheduled: bool = False
    in_flight: bool = False
    not_before: float = 0.0
    tokens: float = 0.0
    refilled: float = float("-inf")
    attempts: int = 0
    retries: int = 0
    backoff_spent: float = 0.0
    rate_limited_spent: float = 0.0
    paused: str | None = None
    paused_key: str | None = None


PAUSED_RECHECK = 30.0


class Dispatcher:
    """Schedules tenants fairly onto ``threads`` sender threads and settles results."""

    def __init__(
        self,
        *,
        spool: Spool,
        keys: WriteKeys,
        endpoint: str,
        transport: Transport,
        batch: BatchPolicy,
        retry: RetryPolicy,
        threads: int,
        max_requests_per_second: float,
        counters: Counters,
        on_failure: Callable[[DeliveryFailure], None],
        on_pause: Callable[[str, str], None],
        paused_recheck: float = PAUSED_RECHECK,
    ) -> None:
        self.spool = spool
        self.keys = keys
        self.endpoint = endpoint
        self.transport = transport
        self.batch = batch
        self.retry = retry
        self.n_threads = threads
        # The request-rate cap is a token bucket: ``rate`` requests per second on average,
        # bursts of up to ``burst`` (a tenth of a second's worth) without waiting.
        self.rate = max_requests_per_second
        self.burst = max(1.0, max_requests_per_second / 10)
        self.full_at = batch.max_messages  # messages that fill a batch; refined by sizes
        self.counters = counters
        self.on_failure = on_failure
        self.on_pause = on_pause
        self.paused_recheck = paused_recheck
        self.cv = threading.Condition(threading.Lock())
        self.settled = threading.Condition(threading.Lock())
        self._tenants: dict[str, _Tenant] = {}
        self._ready: deque[str] = deque()
        self._timers: list[tuple[float, int, str, int]] = []
        self._seq = itertools.count()
        self._threads: list[threading.Thread] = []
        self._stopping = False
        self.flushing = 0

    # -- scheduling (all under self.cv) ------------------------------------------------

    def _state(self, tenant: str) -> _Tenant:
        state = self._tenants.get(tenant)
        if state is None:
            state = self._tenants[tenant] = _Tenant(tenant)
        return state

    def _schedule(self, state: _Tenant, at: float, now: float) -> None:
        state.gen += 1
        state.scheduled = True
        if at <= now:
            self._ready.append(state.name)
        else:
            heapq.heappush(self._timers, (at, next(self._seq), state.name, state.gen))
        self.cv.notify()

    def _ready_at(self, state: _Tenant, now: float, lingering: bool) -> float:
        at = state.not_before
        if self.rate:
            tokens = min(self.burst, state.tokens + (now - state.refilled) * self.rate)
            if tokens < 1.0:
                at = max(at, now + (1.0 - tokens) / self.rate)
        if state.paused is not None:
            return max(at, now + self.paused_recheck)
        if lingering and not self.flushing:
            at = max(at, now + self.batch.linger)
        return at

    def notify_put(self, tenants: Sequence[str], mean_size: float = 0.0) -> None:
        """Tell the senders that ``tenants`` have new messages (of ``mean_size`` bytes)."""
        now = time.monotonic()
        if mean_size:
            by_bytes = int(self.batch.max_bytes // (mean_size + 1))
            self.full_at = max(1, min(self.batch.max_messages, by_bytes))
        with self.cv:
            for tenant in tenants:
                state = self._state(tenant)
                if state.in_flight or state.paused is not None:
                    continue
                full = self.spool.backlog(tenant) >= self.full_at
                if state.scheduled and not full:
                    continue
                self._schedule(state, self._ready_at(state, now, lingering=not full), now)

    def start_flush(self) -> None:
        """Send lingering batches now, until :meth:`end_flush`."""
        now = time.monotonic()
        with self.cv:
            self.flushing += 1
            for state in self._tenants.values():
                if state.scheduled and state.paused is None and not state.in_flight:
                    self._schedule(state, self._ready_at(state, now, lingering=False), now)

    def end_flush(self) -> None:
        with self.cv:
            self.flushing -= 1

    def resume(self, tenant: str) -> None:
        """Unpause ``tenant`` (its key was replaced) and send its backlog now."""
        now = time.monotonic()
        with self.cv:
            state = self._state(tenant)
            self._unpause(state)
            state.not_before = 0.0
            if not state.in_flight:
                self._schedule(state, self._ready_at(state, now, lingering=False), now)

    def paused(self) -> dict[str, str]:
        with self.cv:
            return {t: s.paused for t, s in self._tenants.items() if s.paused is not None}

    def _next_tenant(self) -> _Tenant | None:
        with self.cv:
            while True:
                now = time.monotonic()
                while self._timers and self._timers[0][0] <= now:
                    _, _, name, gen = heapq.heappop(self._timers)
                    if self._tenants[name].gen == gen:
                        self._ready.append(name)
                while self._ready:
                    state = self._tenants[self._ready.popleft()]
                    if state.scheduled and not state.in_flight:
                        state.scheduled = False
                        state.in_flight = True
                        return state
                if self._stopping:
                    return None
                timeout = self._timers[0][0] - now if self._timers else None
                self.cv.wait(timeout)

    # -- threads -----------------------------------------------------------------------

    def start(self) -> None:
        """Start the sender threads (idempotent)."""
        with self.cv:
            if self._threads:
                return
            self._stopping = False
            for i in range(self.n_threads):
                thread = threading.Thread(
                    target=self._run, name=f"selligent-segment-sender-{i}", daemon=True
                )
                self._threads.append(thread)
                thread.start()

    def stop(self, timeout: float | None) -> None:
        """Stop the senders after their current request."""
        with self.cv:
            self._stopping = True
            self.cv.notify_all()
            threads, self._threads = self._threads, []
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))

    def _run(self) -> None:
        while True:
            state = self._next_tenant()
            if state is None:
                return
            try:
                self._serve(state)
            except Exception:  # a bug must not kill the sender; the lease is released
                log.exception("selligent-segment: sender error for tenant %r", state.name)
                self._finish(state, delay=1.0)

    # -- one turn of one tenant ----------------------------------------------------------

    def _serve(self, state: _Tenant) -> None:
        key = self.keys.resolve(state.name)
        if key is None:
            self._pause(state, "no write key configured", None)
            return
        if state.paused is not None:
            if fingerprint(key) == state.paused_key:
                self._finish(state, delay=self.paused_recheck)
                return
            self._resume_with_new_key(state)
        lease = self.spool.lease(
            state.name, self.batch.max_messages, self.batch.max_bytes - envelope_overhead(key)
        )
        if lease is None:
            self._finish(state)
            return
        self._take_token(state)
        response = self.transport.post(
            self.endpoint, key, [m.body for m in lease.messages], retry_count=state.retries
        )
        self.counters.request()
        outcome = response.outcome
        if outcome is Outcome.DELIVERED:
            self._delivered(lease, lease.messages)
            self._reset_backoff(state)
            self._finish(state)
        elif outcome is Outcome.UNAUTHORIZED:
            self.spool.release(lease, lease.messages)
            self._pause(state, f"write key refused ({response.status})", key)
        elif outcome is Outcome.REJECTED:
            self._bisect(lease, lease.messages, key, response.status, response.error)
            self._reset_backoff(state)
            self._finish(state)
        else:
            self._retry_later(state, lease, response)

    def _take_token(self, state: _Tenant) -> None:
        if self.rate:
            now = time.monotonic()
            with self.cv:
                tokens = min(self.burst, state.tokens + (now - state.refilled) * self.rate)
                state.tokens = tokens - 1.0
                state.refilled = now

    @staticmethod
    def _reset_backoff(state: _Tenant) -> None:
        state.attempts = state.retries = 0
        state.backoff_spent = state.rate_limited_spent = 0.0

    def _unpause(self, state: _Tenant) -> None:
        """Clear a pause and its backoff (under self.cv)."""
        state.paused = state.paused_key = None
        self._reset_backoff(state)

    def _resume_with_new_key(self, state: _Tenant) -> None:
        with self.cv:
            self._unpause(state)
        log.warning("selligent-segment: tenant %r resumed with a new write key", state.name)

    def _pause(self, state: _Tenant, reason: str, key: str | None) -> None:
        first = state.paused is None
        with self.cv:
            state.paused = reason
            state.paused_key = fingerprint(key) if key is not None else None
        if first:
            log.error(
                "selligent-segment: tenant %r paused: %s; its events are kept", state.name, reason
            )
            self._call(self.on_pause, state.name, reason)
        self._finish(state, delay=self.paused_recheck)

    def _retry_later(self, state: _Tenant, lease: Lease, response: Response) -> None:
        error = response.error
        if server_paced(response.outcome, response.retry_after):
            assert response.retry_after is not None  # server_paced() checked it
            delay = response.retry_after
            state.rate_limited_spent += delay
        else:
            state.attempts += 1
            delay = self.retry.next_delay(state.attempts)
            state.backoff_spent += delay
        state.retries += 1
        give_up = self.retry.should_give_up(
            state.attempts, state.backoff_spent, state.rate_limited_spent
        )
        if give_up is not None:
            self._failed(lease, lease.messages, "retries_exhausted", f"{give_up}: {error}", None)
            self._reset_backoff(state)
            self._finish(state)
            return
        self.spool.release(lease, lease.messages)
        self.counters.add("retried", state.name, len(lease.messages))
        log.info(
            "selligent-segment: tenant %r: %d events retried in %.2f s (%s)",
            state.name,
            len(lease.messages),
            delay,
            error,
        )
        self._finish(state, delay=delay)

    def _bisect(
        self,
        lease: Lease,
        messages: Sequence[EncodedMessage],
        key: str,
        status: int | None,
        error: str | None,
    ) -> None:
        """Isolate the messages a permanent refusal is about; deliver the rest."""
        if len(messages) == 1 or status not in (400, 413, 422):
            self._failed(lease, messages, "rejected", error or f"HTTP {status}", status)
            return
        half = len(messages) // 2
        for part in (messages[:half], messages[half:]):
            response = self.transport.post(self.endpoint, key, [m.body for m in part])
            self.counters.request()
            if response.outcome is Outcome.DELIVERED:
                self._delivered(lease, part)
            elif response.outcome is Outcome.REJECTED:
                self._bisect(lease, part, key, response.status, response.error)
            else:  # a transient fault mid-bisection: send these again later
                self.spool.release(lease, part)
                self.counters.add("retried", lease.tenant, len(part))

    def _delivered(self, lease: Lease, messages: Sequence[EncodedMessage]) -> None:
        self.spool.ack(lease, messages)
        self.counters.add("delivered", lease.tenant, len(messages))
        self._notify_settled()

    def _failed(
        self,
        lease: Lease,
        messages: Sequence[EncodedMessage],
        reason: str,
        detail: str,
        status: int | None,
    ) -> None:
        self.spool.reject(lease, messages, f"{reason}: {detail}", status)
        self.counters.add_reason(
            "rejected" if reason == "rejected" else "dropped", lease.tenant, reason, len(messages)
        )
        log.error(
            "selligent-segment: tenant %r: %d events not delivered: %s (%s)",
            lease.tenant,
            len(messages),
            reason,
            detail,
        )
        failure = DeliveryFailure(
            lease.tenant,
            reason,
            detail,
            status,
            tuple(m.message_id for m in messages),
            tuple(m.body for m in messages),
        )
        self._call(self.on_failure, failure)
        self._notify_settled()

    def _notify_settled(self) -> None:
        with self.settled:
            self.settled.notify_all()

    def _finish(self, state: _Tenant, delay: float = 0.0) -> None:
        now = time.monotonic()
        with self.cv:
            state.in_flight = False
            if delay:
                state.not_before = now + delay
            if state.paused is not None or self.spool.backlog(state.name):
                self._schedule(state, self._ready_at(state, now, lingering=False), now)

    @staticmethod
    def _call(callback: Callable[..., None], *args: object) -> None:
        try:
            callback(*args)
        except Exception:  # a user callback must never break delivery
            log.exception("selligent-segment: callback %r raised", callback)
