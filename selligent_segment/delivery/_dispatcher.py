"""The sender pool and one turn of a tenant: a fixed pool of sender threads shared by
every tenant, each taking the next turn and seeing it through.

One turn: take a request token from the write key's bucket (:mod:`._rate`), lease a batch
from the head of the tenant's spool queue (or the next part of a refused batch,
:mod:`._bisection`), post it through the :class:`~._transport.Transport`, and settle the
answer (:mod:`._settle`): delivered; refused (bisected); set aside to wait out its own
``Retry-After`` while the tenant sends on, when the failure is about that request alone
(:mod:`._aside`); else retried after the wait the tenant's :class:`~._retry.Backoff`
gives; or, on 401/403 or a missing key, the tenant paused, its events kept, until its key
is replaced. The dispatcher decides when each tenant deserves its next turn (linger,
backoff, Retry-After, the rate bucket, a paused re-check, a second request beside one in
flight, a batch set aside coming due); the :class:`~._schedule.Schedule` keeps the turns
in order.

Guarantees: no lock is held across a request; a tenant with a million queued events
sends one batch and then goes to the back of the line, so it cannot starve the others;
tenants sharing a write key share its rate cap; a batch refused as a whole (400, 413,
422) is bisected through the same scheduler, each part a turn of its own, so the rate cap
and the round-robin apply to those requests too.

Time is read, and timed waits are made, through ``self.clock`` (a
:class:`~selligent_segment._clock.Clock`): the system's by default, a
:class:`~selligent_segment.testing.FakeClock` in tests, which then decide when timers,
linger, backoff, server pacing and the rate buckets come due. Only :meth:`Dispatcher.stop`
bounds its thread joins on the wall clock.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import NamedTuple

import attrs

from selligent_segment._clock import SYSTEM_CLOCK, Clock
from selligent_segment._errors import SpoolError, shown
from selligent_segment._mapping import BODY_OF, EncodedMessage
from selligent_segment._process_life import in_library_thread
from selligent_segment._results import DeliveryFailure
from selligent_segment._throttle import Throttle
from selligent_segment.delivery._aside import Aside, AsidePolicy, about_request
from selligent_segment.delivery._batch_policy import BatchPolicy
from selligent_segment.delivery._bisection import Bisection
from selligent_segment.delivery._keys import WriteKeys, fingerprint
from selligent_segment.delivery._rate import Bucket, RateLimits
from selligent_segment.delivery._retry import Backoff, GiveUp, Outcome, RetryPolicy, server_wait
from selligent_segment.delivery._schedule import Schedule
from selligent_segment.delivery._settle import Settler, call_back
from selligent_segment.delivery._stats import Counters
from selligent_segment.delivery._transport import (
    BatchBodies,
    Response,
    Transport,
    envelope_overhead,
)
from selligent_segment.spool._protocol import Lease, Spool

__all__ = ["Dispatcher"]

log = logging.getLogger("selligent_segment")


@attrs.define
class _Tenant:
    """What the dispatcher knows of one tenant besides its spool queue: its backoff, when
    it may send next, its requests in flight, its key's bucket, a pause, a bisection, its
    batches set aside."""

    name: str
    backoff: Backoff
    in_flight: int = 0
    not_before: float = 0.0
    bucket: Bucket | None = None  # of the key it last sent with
    paused: str | None = None
    paused_key: str | None = None  # the refused key's fingerprint
    resumes: int = 0  # resume() calls ever: tells a refused request the key was replaced
    bisection: Bisection = attrs.field(factory=Bisection)  # of a refused batch
    aside: list[Aside] = attrs.field(factory=list)  # failed batches waiting their own wait


PAUSED_RECHECK = 30.0
#: Seconds between two log lines of the same spool error (a damaged or unwritable file).
SPOOL_ERROR_EVERY = 10.0
#: Requests of one tenant in flight at once while its order allows (see _may_overlap).
MAX_IN_FLIGHT = 2


class _Turn(NamedTuple):
    """A turn granted to a tenant, with what its request is checked against: the
    tenant's state as the turn was granted (under the lock that granted it). A failure
    settled since (a request beside it) holds its batch back; a resume() since makes a
    401 for the key it looked up no reason to pause."""

    state: _Tenant
    seen: int  # state.backoff.failures
    resumes: int  # state.resumes


class Dispatcher:
    """Schedules tenants fairly onto ``threads`` sender threads and settles results.

    Guarantees: at most ``max_requests_per_second`` requests per second on average per
    write key (bursts of a tenth of a second's worth); a tenant has two requests in flight
    only while :meth:`_may_overlap` allows it, otherwise one: a tenant in backoff or
    paused sends its batches one at a time. A batch set aside (``aside``, an
    :class:`~._aside.AsidePolicy`) stays leased and is sent again, with its own
    ``X-Retry-Count``, once its own wait is over and its tenant's turn comes; a tenant
    holds at most ``aside.max_batches`` aside, and all tenants together at most
    ``aside.max_bytes``; a paused tenant holds none (they go back to its queue).
    """

    def __init__(
        self,
        *,
        spool: Spool,
        keys: WriteKeys,
        endpoint: str | Callable[[str], str],
        transport: Transport,
        batch: BatchPolicy,
        retry: RetryPolicy,
        threads: int,
        max_requests_per_second: float,
        counters: Counters,
        on_failure: Callable[[DeliveryFailure], None],
        on_pause: Callable[[str, str], None],
        on_resume: Callable[[str], None] | None = None,
        paused_recheck: float = PAUSED_RECHECK,
        max_in_flight: int = MAX_IN_FLIGHT,
        aside: AsidePolicy = AsidePolicy(),  # noqa: B008 - an immutable value
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.spool = spool
        self.keys = keys
        # One base URL for every tenant, or a function of the tenant (its queue) giving its
        # own: the destination's loader posts each customer's rows to its own instance.
        self.endpoint = endpoint
        self.transport = transport
        self.batch = batch
        self.retry = retry
        self.n_threads = threads
        # The request-rate cap is a token bucket per write key: ``rate`` requests per second
        # on average, bursts of up to ``burst`` (a tenth of a second's worth) at once.
        self.limits = RateLimits(max_requests_per_second)
        self.full_at = batch.max_messages  # messages that fill a batch; refined by sizes
        self.counters = counters
        self.on_pause = on_pause
        self.on_resume = on_resume  # a paused tenant resumed with a new key (by itself)
        self.paused_recheck = paused_recheck
        self.max_in_flight = max_in_flight
        self.aside_policy = aside
        self.aside_bytes = 0  # of every tenant's batches set aside, under self.cv
        self.clock = clock
        self.cv = threading.Condition(threading.Lock())
        self.settler = Settler(spool, counters, on_failure)
        self.settled = self.settler.settled
        self._tenants: dict[str, _Tenant] = {}
        self.turns = Schedule()
        self._threads: list[threading.Thread] = []
        self._started: set[threading.Thread] = set()  # every sender ever started (owns())
        self._stopping = False
        self.flushing = 0
        self._spool_errors = Throttle(SPOOL_ERROR_EVERY)  # by error text, under self.cv

    # -- scheduling (all under self.cv) ------------------------------------------------

    def _state(self, tenant: str) -> _Tenant:
        state = self._tenants.get(tenant)
        if state is None:
            state = self._tenants[tenant] = _Tenant(tenant, Backoff(self.retry))
        return state

    def _schedule(self, state: _Tenant, at: float, now: float) -> None:
        self.turns.put(state.name, at, now)
        self.cv.notify()

    def _ready_at(self, state: _Tenant, now: float, lingering: bool) -> float:
        at = state.not_before
        if self.limits.rate and state.bucket is not None:
            at = max(at, self.limits.ready_at(state.bucket, now))
        if state.paused is not None:
            return max(at, now + self.paused_recheck)
        if lingering and not self.flushing:
            at = max(at, now + self.batch.linger)
        return at

    def _may_overlap(self, state: _Tenant, now: float) -> bool:
        """True when the tenant may start another request beside the one in flight: it is
        healthy (not paused, no retry pending, not waiting out a backoff, no refused
        batch being bisected: its parts go one at a time, to the last), a full batch
        waits behind the one in flight (or a batch set aside is due again), and no other
        tenant waits for a sender. Only then are two of its batches sent at once, and only
        then may they arrive in either order; a failed one is sent again alone, before
        anything queued after it, unless it was set aside (:mod:`._aside`)."""
        return (
            0 < state.in_flight < self.max_in_flight
            and state.paused is None
            and state.backoff.retries == 0
            and not state.bisection.active
            and state.not_before <= now
            and (self._aside_due(state, now) or self.spool.backlog(state.name) >= self.full_at)
            and not self.turns.others_ready(state.name, now)
        )

    @staticmethod
    def _aside_due(state: _Tenant, now: float) -> bool:
        """True when a batch ``state`` set aside may be sent again (under self.cv)."""
        return any(aside.due <= now for aside in state.aside)

    def _take_aside(self, state: _Tenant) -> Aside | None:
        """The first batch ``state`` set aside that is due again, taken out of the aside
        list (and the bytes held aside), or None. A batch held past its ``stale_at`` (its
        tenant's turn came too late: a backoff, a 429, many tenants) is not sent: it goes
        back to the queue, since its lease may have expired and another host may have sent
        its rows."""
        now = self.clock.monotonic()
        with self.cv:
            stale = [aside for aside in state.aside if aside.stale_at <= now]
            for aside in stale:
                state.aside.remove(aside)
                self.aside_bytes -= aside.nbytes
            due = [aside for aside in state.aside if aside.due <= now]
            taken = min(due, key=lambda a: (a.due, a.lease.id)) if due else None
            if taken is not None:
                state.aside.remove(taken)
                self.aside_bytes -= taken.nbytes
        for aside in sorted(stale, key=lambda a: a.lease.id, reverse=True):
            self.settler.release(aside.lease, aside.messages)
        return taken

    def _half_lease(self) -> float:
        """Half a lease, with a spool whose leases expire (``lease_seconds``, the
        PostgreSQL spool's: past a lease another host may take its rows), else infinity."""
        lease_seconds = getattr(self.spool, "lease_seconds", None)
        if isinstance(lease_seconds, (int, float)):
            return lease_seconds / 2
        return float("inf")

    def _aside_wait(self) -> float:
        """The longest wait a batch is set aside for: the policy's ``max_wait``, and under
        half a lease when the spool's leases expire (``lease_seconds``, the PostgreSQL
        spool's: another host may take the rows of a lease past it)."""
        return min(self.aside_policy.max_wait, self._half_lease())

    def _may_set_aside(
        self,
        state: _Tenant,
        lease: Lease,
        response: Response,
        seen: int,
        nbytes: int,
        stale_at: float,
    ) -> bool:
        """True when the batch of ``lease``, failed with ``response``, may wait out its own
        wait aside while the tenant sends on (under self.cv): the failure is about that
        request (:func:`._aside.about_request`) and its wait no longer than
        :meth:`_aside_wait` and over before ``stale_at``, the tenant is healthy (not
        paused, no backoff pending, no failure of another of its requests since this one
        left), the batch is not part of a bisection, and the tenant's and everyone's aside
        limits of :class:`._aside.AsidePolicy` have room."""
        wait = server_wait(response.outcome, response.retry_after, response.rate_limit_reset)
        return (
            about_request(response)
            and wait is not None
            and wait <= self._aside_wait()
            and self.clock.monotonic() + wait < stale_at  # due before half its lease is gone
            and state.paused is None
            and state.backoff.retries == 0
            and seen == state.backoff.failures
            and not state.bisection.owns(lease)
            and len(state.aside) < self.aside_policy.max_batches
            and self.aside_bytes + nbytes <= self.aside_policy.max_bytes
        )

    def _overlap(self, state: _Tenant, now: float) -> None:
        """Offer a second request slot of ``state`` to the other senders, if allowed."""
        if not self.turns.scheduled(state.name) and self._may_overlap(state, now):
            self._schedule(state, self._ready_at(state, now, lingering=False), now)

    def notify_put(self, tenants: Sequence[str], mean_size: float = 0.0) -> None:
        """Tell the senders that ``tenants`` have new messages (of ``mean_size`` bytes)."""
        now = self.clock.monotonic()
        if mean_size:
            by_bytes = int(self.batch.max_bytes // (mean_size + 1))
            self.full_at = max(1, min(self.batch.max_messages, by_bytes))
        with self.cv:
            for tenant in tenants:
                state = self._state(tenant)
                if state.paused is not None:
                    continue
                if state.in_flight:
                    self._overlap(state, now)
                    continue
                full = self.spool.backlog(tenant) >= self.full_at
                if not full and self.turns.scheduled(tenant):
                    continue
                self._schedule(state, self._ready_at(state, now, lingering=not full), now)

    def start_flush(self) -> None:
        """Send lingering batches now, until :meth:`end_flush`."""
        now = self.clock.monotonic()
        with self.cv:
            self.flushing += 1
            for state in self._tenants.values():
                if (
                    self.turns.scheduled(state.name)
                    and state.paused is None
                    and not state.in_flight
                ):
                    self._schedule(state, self._ready_at(state, now, lingering=False), now)

    def end_flush(self) -> None:
        with self.cv:
            self.flushing -= 1

    def resume(self, tenant: str) -> None:
        """Unpause ``tenant`` (its key was replaced) and send its backlog now; a tenant
        that is not paused keeps the wait it is in (a server's Retry-After, a backoff)."""
        now = self.clock.monotonic()
        with self.cv:
            state = self._state(tenant)
            state.resumes += 1
            if state.paused is not None:
                self._unpause(state)
                state.not_before = 0.0
            if not state.in_flight:
                self._schedule(state, self._ready_at(state, now, lingering=False), now)

    def abandon(self, collect: Callable[[], object] | None = None) -> None:
        """Settle nothing more: results of requests still out are dropped (logged at
        INFO). ``collect`` runs under the settle lock, after which no settle can land, so
        it sees exactly what stays unsettled."""
        self.settler.abandon(collect)

    def paused(self) -> dict[str, str]:
        with self.cv:
            return {t: s.paused for t, s in self._tenants.items() if s.paused is not None}

    def _next_tenant(self) -> _Turn | None:
        """The next tenant's turn, with its state as the turn is granted (see _Turn)."""
        turns = self.turns
        with self.cv:
            while True:
                if self._stopping:  # even with turns due: each would be a new request
                    return None
                now = self.clock.monotonic()
                while (name := turns.take(now)) is not None:
                    state = self._tenants[name]
                    if state.in_flight and not self._may_overlap(state, now):
                        continue  # its request in flight reschedules it when done
                    state.in_flight += 1
                    return _Turn(state, state.backoff.failures, state.resumes)
                self.clock.wait(self.cv, turns.timeout(now))

    # -- threads -----------------------------------------------------------------------

    def start(self) -> None:
        """Start the sender threads (idempotent); never after :meth:`stop`, which no
        start undoes (a start racing a close would leave senders running for ever)."""
        with self.cv:
            if self._threads or self._stopping:
                return
            for i in range(self.n_threads):
                thread = threading.Thread(
                    target=in_library_thread(self._run),
                    name=f"selligent-segment-sender-{i}",
                    daemon=True,
                )
                self._threads.append(thread)
                self._started.add(thread)
                thread.start()

    def owns(self, thread: threading.Thread) -> bool:
        """True when ``thread`` is one of these senders (running or stopped)."""
        return thread in self._started

    def stop(self, timeout: float | None) -> None:
        """Stop the senders after their current request."""
        with self.cv:
            self._stopping = True
            self.cv.notify_all()
            threads, self._threads = self._threads, []
        # Joining threads is a wait on the wall clock, whatever clock schedules the turns:
        # on a fake clock that never moves, each join would get the whole timeout.
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))

    def _run(self) -> None:
        while True:
            turn = self._next_tenant()
            if turn is None:
                return
            state = turn.state
            try:
                self._serve(turn)
            except SpoolError as exc:  # a damaged or unwritable file: said, not a traceback
                self._log_spool_error(exc)
                self._finish(state, delay=1.0)
            except Exception:  # a bug must not kill the sender; the lease is released
                log.exception(
                    "sender error for tenant %s",
                    shown(state.name),
                    extra={"tenant": state.name, "reason": "sender_error"},
                )
                self._finish(state, delay=1.0)

    def _log_spool_error(self, exc: SpoolError) -> None:
        """One ERROR line per distinct spool error, then at most one every
        :data:`SPOOL_ERROR_EVERY` seconds while it lasts."""
        text = str(exc)
        with self.cv:
            if not self._spool_errors.allows(self.clock.monotonic(), text):
                return
        log.error("delivery waits: %s", text, extra={"reason": "spool_error"})

    # -- one turn of one tenant ----------------------------------------------------------

    def _serve(self, turn: _Turn) -> None:
        state, seen, resumes = turn
        key = self.keys.resolve(state.name)
        if key is None:
            self._pause(state, "no write key configured", None, resumes=resumes)
            return
        tag = fingerprint(key)
        if state.paused is not None:
            if tag == state.paused_key:
                self._finish(state, delay=self.paused_recheck)
                return
            self._resume_with_new_key(state)  # its backoff starts afresh
        if not self._take_token(state, tag):
            self._finish(state)  # another tenant with this key took it: wait for the next
            return
        aside = self._take_aside(state) if state.aside else None
        leased_at = self.clock.monotonic()
        if aside is not None:  # a batch set aside, due again: its own bodies and backoff
            lease, messages, bodies = aside.lease, aside.messages, aside.bodies
            leased_at = aside.leased_at
        elif state.bisection.parts:  # the next part of a refused batch being bisected
            lease, messages = state.bisection.parts.popleft()
            bodies = BatchBodies(map(BODY_OF, messages))
        else:
            leased = self.spool.lease(
                state.name,
                self.batch.max_messages,
                self.batch.max_bytes - envelope_overhead(key),
            )
            if leased is None:
                self._refund_token(state)
                self._finish(state)
                return
            lease, messages = leased, leased.messages
            bodies = BatchBodies(map(BODY_OF, messages))
        now = self.clock.monotonic()
        with self.cv:
            # A request beside this one failed (a 429, a 5xx, a dropped connection) or had
            # its key refused since this turn was granted: the batch is not sent now, but
            # goes back to its place in the queue and waits with the tenant. (Else it
            # could be the very batch that request just gave back, sent again at once,
            # its Retry-After or the refused key ignored.) So too once the senders stop.
            held_back = state.backoff.failures != seen or state.paused is not None or self._stopping
            if not held_back and self.max_in_flight > 1:
                self._overlap(state, now)
        if held_back:
            self.settler.release(lease, state.bisection.gather(state.name, lease, messages))
            self._refund_token(state)
            self._finish(state)
            return
        posting = False
        try:
            # The batch's own retries (each message's, kept by the settler), whatever
            # else of the tenant failed or was delivered meanwhile.
            retries = self.settler.retry_count(messages)
            endpoint = self.endpoint
            if not isinstance(endpoint, str):
                endpoint = endpoint(state.name)
            posting = True
            response = self.transport.post(endpoint, key, bodies, retry_count=retries)
        except Exception:  # the endpoint or the transport raised: the batch goes back,
            self.settler.release(lease, state.bisection.gather(state.name, lease, messages))
            if not posting:  # and its rate token with it when no request left
                self._refund_token(state)
            raise
        self.counters.request()
        if response.requests > 1:
            self._charge_tokens(state, response.requests - 1)
        outcome = response.outcome
        if response.items:
            messages = self._settle_items(state, lease, messages, response)
            if not messages:
                self._reset_backoff(state, seen, aside)
                state.bisection.end(state.name, lease)
                self._finish(state)
                return
        if outcome is Outcome.DELIVERED:
            self.settler.delivered(lease, messages)
            state.bisection.count_delivered(lease, len(messages))
            self._reset_backoff(state, seen, aside)
            state.bisection.end(state.name, lease)
            self._finish(state)
        elif outcome is Outcome.UNAUTHORIZED:
            # Back to the queue with the batches set aside, oldest first (a memory queue
            # takes each at its head: the newest goes back first).
            self._release_with_asides(
                state, lease, state.bisection.gather(state.name, lease, messages)
            )
            reason = f"write key refused ({response.status})"
            self._pause(state, reason, tag, response.status, resumes=resumes)
        elif outcome is Outcome.REJECTED:
            self._refused(state, lease, messages, response.status, response.error)
            self._reset_backoff(state, seen, aside)
            self._finish(state)
        else:
            if len(messages) != len(bodies):  # a partial answer settled some of them
                bodies = BatchBodies(map(BODY_OF, messages))
            if self._set_aside(state, lease, messages, bodies, response, seen, aside, leased_at):
                self._finish(state)
                return
            messages = state.bisection.gather(state.name, lease, messages)
            self._retry_later(state, lease, messages, response, seen)

    def _refused(
        self,
        state: _Tenant,
        lease: Lease,
        messages: tuple[EncodedMessage, ...],
        status: int | None,
        error: str | None,
    ) -> None:
        """A permanent refusal: isolate the messages it is about by bisection (each half
        a turn of its own, so the rate cap applies); deliver the rest."""
        bisection = state.bisection
        if bisection.must_wait(lease, messages, status):
            self.settler.release(lease, messages)
            return
        if bisection.split(lease, messages, status, error):
            return
        quiet = bisection.owns(lease)
        bisection.count_rejected(lease, len(messages))
        detail = error or f"HTTP {status}"
        self.settler.failed(lease, messages, "rejected", detail, status, quiet)
        bisection.end(state.name, lease)

    def _settle_items(
        self,
        state: _Tenant,
        lease: Lease,
        messages: tuple[EncodedMessage, ...],
        response: Response,
    ) -> tuple[EncodedMessage, ...]:
        """Settle the messages a partial answer settled on their own (``response.items``):
        delivered, or refused for good with their own reason (each a dead letter). The
        others are returned, to follow the answer's outcome."""
        items = response.items or {}
        delivered: list[EncodedMessage] = []
        refused: dict[str, list[EncodedMessage]] = {}
        rest: list[EncodedMessage] = []
        for index, message in enumerate(messages):
            if index not in items:
                rest.append(message)
            elif (reason := items[index]) is None:
                delivered.append(message)
            else:
                refused.setdefault(reason, []).append(message)
        if delivered:
            self.settler.delivered(lease, delivered)
            state.bisection.count_delivered(lease, len(delivered))
        for reason, group in refused.items():
            state.bisection.count_rejected(lease, len(group))
            self.settler.failed(lease, group, "rejected", reason, response.status)
        return tuple(rest)

    def _charge_tokens(self, state: _Tenant, n: int) -> None:
        """Take ``n`` more tokens (a post that made several requests); the bucket may go
        below zero, and the next turn then waits for it to refill."""
        if self.limits.rate and state.bucket is not None:
            with self.cv:
                self.limits.charge(state.bucket, n)

    def _take_token(self, state: _Tenant, tag: str) -> bool:
        """Take a request token from the bucket of the key fingerprinted ``tag``; False
        (nothing taken) when that bucket is empty."""
        limits = self.limits
        if not limits.rate:
            return True
        now = self.clock.monotonic()
        with self.cv:
            bucket = state.bucket = limits.bucket(tag)
            return limits.take(bucket, now)

    def _refund_token(self, state: _Tenant) -> None:
        """Give back the token of a turn that found nothing to send."""
        if self.limits.rate and state.bucket is not None:
            with self.cv:
                self.limits.refund(state.bucket)

    def _reset_backoff(self, state: _Tenant, seen: int, aside: Aside | None) -> None:
        """Clear the backoff after a settled request, unless a request sent beside it
        failed meanwhile (``seen`` is the failure count as its turn was granted), or it
        was a batch set ``aside`` and the backoff holds a counted attempt: that is the
        head batch's budget, which another batch's success must not refill (it would be
        retried past ``max_attempts`` for as long as batches come and go aside). A
        backoff of server-paced waits alone (a 429's) is cleared by any delivered
        request: the key is let through again, and the tenant sends on."""
        with self.cv:
            state.backoff.record_success(seen, aside=aside is not None)

    def _unpause(self, state: _Tenant) -> None:
        """Clear a pause and its backoff (under self.cv)."""
        state.paused = state.paused_key = None
        state.backoff.reset()

    def _resume_with_new_key(self, state: _Tenant) -> None:
        with self.cv:
            self._unpause(state)
        log.warning(
            "tenant %s resumed with a new write key",
            shown(state.name),
            extra={"tenant": state.name, "reason": "resumed"},
        )
        if self.on_resume is not None:  # the pause its spool records goes too
            call_back(self.on_resume, state.name)

    def _pause(
        self,
        state: _Tenant,
        reason: str,
        tag: str | None,
        status: int | None = None,
        *,
        resumes: int | None = None,
    ) -> None:
        """Pause ``state`` for ``reason`` (its key, fingerprinted ``tag``, was refused or is
        missing); not when :meth:`resume` was called since ``resumes`` was read (as the
        turn was granted): the next turn then tries the new key at once."""
        with self.cv:
            resumed = resumes is not None and state.resumes != resumes
            first = state.paused is None
            if not resumed:
                state.paused = reason
                state.paused_key = tag
        if resumed:
            self._finish(state)
            return
        self.settler.note_error(state.name, reason, status)
        # A paused tenant holds nothing aside: its batches wait in the queue, oldest first.
        self._release_with_asides(state)
        if first:
            log.error(
                "tenant %s paused: %s; its events are kept",
                shown(state.name),
                reason,
                extra={"tenant": state.name, "reason": "paused", "status": status},
            )
            call_back(self.on_pause, state.name, reason)
        self._finish(state, delay=self.paused_recheck)

    def _release_with_asides(
        self,
        state: _Tenant,
        lease: Lease | None = None,
        messages: Sequence[EncodedMessage] = (),
    ) -> None:
        """Give ``state``'s batches set aside back to the queue, with ``lease``'s
        ``messages`` when given, newest lease first: a memory queue takes each back at its
        head, so they end up oldest first (the files and tables keep their rows' order)."""
        with self.cv:
            asides, state.aside = state.aside, []
            self.aside_bytes -= sum(aside.nbytes for aside in asides)
        batches: list[tuple[Lease, Sequence[EncodedMessage]]] = [
            (aside.lease, aside.messages) for aside in asides
        ]
        if lease is not None:
            batches.append((lease, messages))
        for held, held_messages in sorted(batches, key=lambda b: b[0].id, reverse=True):
            self.settler.release(held, held_messages)

    def _set_aside(
        self,
        state: _Tenant,
        lease: Lease,
        messages: tuple[EncodedMessage, ...],
        bodies: BatchBodies,
        response: Response,
        seen: int,
        aside: Aside | None,
        leased_at: float,
    ) -> bool:
        """Set the failed batch aside to wait its own wait while the tenant sends on, or
        settle it when its own budget is spent; False (nothing done) when it may not be
        set aside (:meth:`_may_set_aside`): the tenant then waits, as for any failure."""
        if not about_request(response):
            return False
        # As held in memory: the messages' bodies, and their joined array (the same again).
        nbytes = 2 * (sum(map(len, bodies)) + len(bodies))
        now = self.clock.monotonic()
        with self.cv:
            stale_at = leased_at + self._half_lease()  # past it, not sent from aside
            if not self._may_set_aside(state, lease, response, seen, nbytes, stale_at):
                return False
            backoff = aside.backoff if aside is not None else Backoff(self.retry)
            delay = backoff.record_failure(
                response.outcome, response.retry_after, response.rate_limit_reset
            )
            if not isinstance(delay, GiveUp):
                state.aside.append(
                    Aside(
                        lease, messages, bodies, backoff, now + delay, nbytes, stale_at, leased_at
                    )
                )
                self.aside_bytes += nbytes
        error = response.error or f"HTTP {response.status}"
        self.settler.note_error(state.name, error, response.status)
        if isinstance(delay, GiveUp):
            detail = f"{delay.reason}: {response.error}"
            self.settler.failed(lease, messages, "retries_exhausted", detail, None)
            return True
        if self.settler.set_aside(lease, messages):
            log.info(
                "tenant %s: %d events set aside, retried in %.2f s (%s)",
                shown(state.name),
                len(messages),
                delay,
                response.error,
                extra={
                    "tenant": state.name,
                    "reason": "retry",
                    "status": response.status,
                    "count": len(messages),
                },
            )
        return True

    def _retry_later(
        self,
        state: _Tenant,
        lease: Lease,
        messages: tuple[EncodedMessage, ...],
        response: Response,
        seen: int,
    ) -> None:
        error = response.error
        # The server's own wait (Retry-After, X-RateLimit-Reset) is obeyed in every case.
        paced = server_wait(response.outcome, response.retry_after, response.rate_limit_reset)
        with self.cv:
            # A request sent beside this one that failed first (``seen`` is behind) set the
            # tenant's backoff: this batch then goes back to the head of the queue, no wait
            # of its own but the server's.
            delay = state.backoff.record_failure(
                response.outcome, response.retry_after, response.rate_limit_reset, seen=seen
            )
        self.settler.note_error(state.name, error or f"HTTP {response.status}", response.status)
        if isinstance(delay, GiveUp):
            detail = f"{delay.reason}: {error}"
            self.settler.failed(lease, messages, "retries_exhausted", detail, None)
            # The batch is given up, not the server's word: the tenant's next batch still
            # waits the Retry-After (or X-RateLimit-Reset) of this answer.
            self._finish(state, delay=paced or 0.0)
            return
        delay = max(delay, paced or 0.0)
        if self.settler.release(lease, messages, retried=True):
            log.info(
                "tenant %s: %d events retried in %.2f s (%s)",
                shown(state.name),
                len(messages),
                delay,
                error,
                extra={
                    "tenant": state.name,
                    "reason": "retry",
                    "status": response.status,
                    "count": len(messages),
                },
            )
        self._finish(state, delay=delay)

    def _finish(self, state: _Tenant, delay: float = 0.0) -> None:
        """End one turn of ``state``; with ``delay``, its next turn waits that long."""
        now = self.clock.monotonic()
        with self.cv:
            state.in_flight = max(0, state.in_flight - 1)
            if delay:
                state.not_before = max(state.not_before, now + delay)
            if state.in_flight:  # the request still out reschedules it when done
                self._overlap(state, now)
            elif (
                state.paused is not None or state.bisection.parts or self.spool.backlog(state.name)
            ):
                self._schedule(state, self._ready_at(state, now, lingering=False), now)
            elif state.aside:  # nothing queued: its next turn when a batch set aside is due
                due = min(aside.due for aside in state.aside)
                self._schedule(state, max(due, self._ready_at(state, now, lingering=False)), now)
