"""Retrying: how an HTTP answer is classified, how long a batch waits, and the backoff
state of one queue of batches.

The rules are those the official Segment clients agree on (Python 2.4, Node 3.1, Java):

* retry 408, 410, 429, 460, every 5xx except 501 and 505, and network errors/timeouts;
* never retry 400, 401, 403, 404, 413, 422 or any other 4xx;
* obey ``Retry-After`` (seconds or an HTTP date), capped at :data:`MAX_RETRY_AFTER`; such
  server-paced waits do not use up the retry budget, they are bounded by their own total;
* on a 429 also obey ``X-RateLimit-Reset``, which Segment sends with ``Retry-After`` (see
  :func:`parse_rate_limit_reset`); when both are given the later one wins;
* otherwise back off exponentially with jitter, 0.5 s doubling to a 60 s cap.

:class:`RetryPolicy` is the immutable rule; :class:`Backoff` is the state of one tenant's
queue under it (attempts, waits spent), which turns each failure into a delay or a
:class:`GiveUp`. Nothing here sleeps: a sender asks for the wait and schedules the batch
for later, so one slow batch never holds a thread.
"""

from __future__ import annotations

import enum
import math
import random
import re
from datetime import timezone
from email.utils import parsedate_to_datetime
from typing import Any

import attrs

from selligent_segment._errors import ConfigurationError, shown
from selligent_segment._validate import check_number

__all__ = [
    "JITTER_FRACTION",
    "MAX_RETRY_AFTER",
    "Backoff",
    "GiveUp",
    "Outcome",
    "RetryPolicy",
    "classify",
    "parse_rate_limit_reset",
    "parse_retry_after",
    "server_wait",
]

#: Upper bound (seconds) on any ``Retry-After`` we obey. A guard against an absurd header,
#: not a second budget: how long we keep trying is ``max_rate_limit_duration``'s job.
MAX_RETRY_AFTER = 300.0

#: With jitter on, a backoff delay is ``base * (1 + uniform(0, JITTER_FRACTION))`` capped
#: at ``max_backoff``: the 0-10 % the official Python client adds.
JITTER_FRACTION = 0.1


class Outcome(enum.Enum):
    """What one POST of a batch came to; decides what happens to the batch next."""

    #: 2xx: Segment took the batch (a 200 does not prove every message was kept).
    DELIVERED = "delivered"
    #: Transient: 408, 410, 460, 5xx except 501/505, network error, timeout. Counted backoff.
    RETRY = "retry"
    #: 429: the server is pacing us; obey ``Retry-After`` when it is given.
    RATE_LIMITED = "rate_limited"
    #: Permanent for this batch: 400, 404, 413, 422, other 4xx, 501, 505, and 3xx (a
    #: redirect we deliberately do not follow: nothing was uploaded).
    REJECTED = "rejected"
    #: 401/403: the write key is wrong or revoked; retrying the same key cannot help.
    UNAUTHORIZED = "unauthorized"

    @property
    def retryable(self) -> bool:
        """True for the outcomes after which the same batch may be sent again."""
        return self is Outcome.RETRY or self is Outcome.RATE_LIMITED


# delay-seconds; a fraction is tolerated. float() alone would also take nan, 1e3 and 1_0.
_DECIMAL = re.compile(r"[0-9]+(?:\.[0-9]+)?")

_RETRYABLE_4XX = frozenset({408, 410, 460})
_PERMANENT_5XX = frozenset({501, 505})


def classify(status: int | None) -> Outcome:
    """Map an HTTP status (``None`` for a network error, timeout or dropped connection)
    to an :class:`Outcome`, following the official clients' retry table.

    A value that is not a final HTTP status (below 200 or above 599) says something broke
    between us and Segment, so it is treated like a network error: :attr:`Outcome.RETRY`.
    """
    if status is None:
        return Outcome.RETRY
    if 200 <= status < 300:
        return Outcome.DELIVERED
    if 300 <= status < 400:
        # We never follow redirects (the body would go to a host nobody configured), so a
        # 3xx means nothing was uploaded and the endpoint setting is probably wrong.
        return Outcome.REJECTED
    if 400 <= status < 500:
        if status == 429:
            return Outcome.RATE_LIMITED
        if status in (401, 403):
            return Outcome.UNAUTHORIZED
        if status in _RETRYABLE_4XX:
            return Outcome.RETRY
        return Outcome.REJECTED
    if 500 <= status < 600:
        return Outcome.REJECTED if status in _PERMANENT_5XX else Outcome.RETRY
    return Outcome.RETRY


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Parse a ``Retry-After`` header into whole seconds to wait, or ``None`` to ignore it.

    ``value`` is either delay-seconds (a non-negative decimal; a fraction is tolerated) or an
    HTTP date; a date without a zone (the RFC 5322 ``-0000`` form) is read as UTC, never as
    local time. ``now`` is the wall clock (``time.time()``) used to turn a date into a delay.

    Guarantee: the result is ``None`` or a whole number of seconds in ``[1, MAX_RETRY_AFTER]``.
    A wait is rounded *up* (we never come back before the server asked), and there is
    nothing to wait for (``None``) when the header is missing, unparseable, negative, zero
    or a date already past. So a caller may treat any non-``None`` value as a server-paced
    wait without a stream of ``Retry-After: 0`` answers turning into a busy loop. A header
    given twice (joined with a comma: ``30, 30``) is read at its longest wait.
    """
    if value is None:
        return None
    text = value.strip()
    wait = _one_wait(text, now)
    if wait is not None or "," not in text:
        return wait
    # The header sent twice reaches us joined ("30, 30"): the longest wait that can be
    # read of it (never come back before any of them). A date has a comma of its own.
    dates = _HTTP_DATE.findall(text)
    pieces = [*dates, *_HTTP_DATE.sub(",", text).split(",")]
    return max((w for p in pieces if (w := _one_wait(p.strip(), now)) is not None), default=None)


#: An HTTP date as servers write it (IMF-fixdate, RFC 9110 5.6.7), in a joined header.
_HTTP_DATE = re.compile(r"[A-Z][a-z]{2}, \d{1,2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} [A-Z]{3}")


def _one_wait(text: str, now: float) -> float | None:
    """One ``Retry-After`` value: delay-seconds or an HTTP date (see parse_retry_after)."""
    if not text:
        return None
    if _DECIMAL.fullmatch(text):
        delay = float(text)
    else:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        try:
            delay = when.timestamp() - now
        except (OverflowError, OSError, ValueError):
            return None
    return _whole_wait(delay)


def _whole_wait(delay: float) -> float | None:
    """``delay`` as a whole number of seconds in ``[1, MAX_RETRY_AFTER]``, rounded up;
    ``None`` when there is nothing to wait for (zero, negative or NaN)."""
    if not delay > 0:
        return None
    if not math.isfinite(delay):
        return MAX_RETRY_AFTER
    return float(min(math.ceil(delay), MAX_RETRY_AFTER))


#: An ``X-RateLimit-Reset`` number at least this large is a Unix time in seconds (2001 on),
#: not a delay: nobody asks a client to wait 31 years.
_EPOCH_SECONDS = 1e9
#: ... and at least this large, a Unix time in milliseconds.
_EPOCH_MILLISECONDS = 1e12


def parse_rate_limit_reset(value: str | None, now: float) -> float | None:
    """Parse an ``X-RateLimit-Reset`` header into whole seconds to wait, or ``None``.

    Segment sends it with ``Retry-After`` on a 429 and documents both as the number of
    seconds after which the request may be retried, so a plain number is read as
    delay-seconds. Other servers put a point in time there, so these are accepted too: a
    number of at least 10**9 is a Unix time in seconds, of at least 10**12 a Unix time in
    milliseconds, and anything else is tried as an HTTP date. ``now`` is ``time.time()``.

    Guarantee: as :func:`parse_retry_after`: ``None`` or a whole number of seconds in
    ``[1, MAX_RETRY_AFTER]``, rounded up; ``None`` for a missing, unparseable, zero or
    past value.
    """
    if value is None:
        return None
    text = value.strip()
    if _DECIMAL.fullmatch(text):
        number = float(text)
        if number >= _EPOCH_MILLISECONDS:
            return _whole_wait(number / 1000.0 - now)
        if number >= _EPOCH_SECONDS:
            return _whole_wait(number - now)
    return parse_retry_after(text, now)


def server_wait(
    outcome: Outcome, retry_after: float | None, rate_limit_reset: float | None = None
) -> float | None:
    """The server's wait before the next attempt, or ``None`` when it set none.

    ``retry_after`` counts on any retryable answer (a 503 may carry it too);
    ``rate_limit_reset`` (an ``X-RateLimit-Reset``) only on a 429, where Segment documents
    it: elsewhere such headers describe a quota window, not a wait. When both apply the
    later one wins, so we never come back before the server asked. Both are the parsed
    values (:func:`parse_retry_after`, :func:`parse_rate_limit_reset`).

    An attempt with such a wait is server-paced: it is not counted against
    ``max_attempts``, and its wait is bounded by ``max_rate_limit_duration``. A 429 with
    neither header takes a counted backoff, as in the official Python client.
    """
    if not outcome.retryable:
        return None
    wait = retry_after if retry_after is not None and retry_after > 0 else None
    if outcome is Outcome.RATE_LIMITED and rate_limit_reset is not None and rate_limit_reset > 0:
        wait = rate_limit_reset if wait is None else max(wait, rate_limit_reset)
    return wait


def _positive(_instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    check_number(attribute.name, value, minimum=0.0, strict=True)


def _non_negative(_instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    check_number(attribute.name, value, minimum=0.0, strict=False)


def _attempts(_instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigurationError(attribute.name, f"must be an integer, got {type(value).__name__}")
    if value < 1:
        raise ConfigurationError(attribute.name, f"must be at least 1, got {shown(value)}")


def _flag(_instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, bool):
        raise ConfigurationError(attribute.name, f"must be True or False, got {shown(value)}")


def _not_below_initial(
    instance: RetryPolicy, attribute: attrs.Attribute[Any], value: float
) -> None:
    _positive(instance, attribute, value)
    if value < instance.initial_backoff:
        raise ConfigurationError(
            attribute.name,
            f"must be at least initial_backoff ({shown(instance.initial_backoff)}), "
            f"got {shown(value)}",
        )


@attrs.frozen
class RetryPolicy:
    """How long a failing batch waits and when it is given up: an immutable, comparable,
    hashable value (like urllib3's ``Retry``); derive variants with :meth:`evolve`.

    Every field is validated on construction and on :meth:`evolve`; a bad value raises
    :class:`~selligent_segment.ConfigurationError` naming the field.

    * ``initial_backoff``: the delay before the first retry (seconds).
    * ``max_backoff``: the cap on one backoff delay (seconds, >= ``initial_backoff``).
    * ``max_attempts``: counted attempts (server-paced ones excluded) before giving up,
      the first send included; 1 means never retry.
    * ``max_backoff_duration``: total counted backoff one batch may accumulate (seconds).
    * ``max_rate_limit_duration``: total server-paced waiting one batch may accumulate
      (a 429's wait, the key's, ends with any request sent after it and delivered).
    * ``jitter``: add 0-10 % (:data:`JITTER_FRACTION`) to each backoff delay.
    """

    initial_backoff: float = attrs.field(default=0.5, validator=_positive)
    max_backoff: float = attrs.field(default=60.0, validator=_not_below_initial)
    max_attempts: int = attrs.field(default=10, validator=_attempts)
    max_backoff_duration: float = attrs.field(default=43200.0, validator=_non_negative)
    max_rate_limit_duration: float = attrs.field(default=1800.0, validator=_non_negative)
    jitter: bool = attrs.field(default=True, validator=_flag)

    @classmethod
    def none(cls) -> RetryPolicy:
        """A policy that never retries and never waits: one attempt, zero budgets."""
        return cls(
            max_attempts=1, max_backoff_duration=0.0, max_rate_limit_duration=0.0, jitter=False
        )

    def evolve(self, **changes: Any) -> RetryPolicy:
        """A copy with ``changes`` applied, validated like a new policy."""
        return attrs.evolve(self, **changes)

    def next_delay(self, attempt: int) -> float:
        """Seconds to wait after the ``attempt``-th counted failure, without sleeping.

        ``next_delay(1)`` is ``initial_backoff``; each later one doubles, never above
        ``max_backoff``; with ``jitter`` each is raised by up to 10 % (still capped). The
        jitter is a fraction of the delay, as in the official clients, not a fixed amount of
        seconds that would triple a 0.5 s delay yet be noise against 30 s.
        """
        if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 1:
            raise ValueError(f"attempt must be a positive integer, got {shown(attempt)}")
        cap = float(self.max_backoff)
        try:
            delay = min(math.ldexp(self.initial_backoff, attempt - 1), cap)  # initial * 2**(n-1)
        except OverflowError:  # far past the cap (attempt 10**9 must not build a huge int)
            delay = cap
        if self.jitter:
            delay = min(delay * (1.0 + random.uniform(0.0, JITTER_FRACTION)), cap)  # noqa: S311
        return delay

    def should_give_up(
        self, attempts: int, backoff_elapsed: float, rate_limited_elapsed: float
    ) -> str | None:
        """Return why the batch must be given up now, or ``None`` to retry it.

        ``attempts`` is the number of counted attempts made so far (server-paced ones
        excluded); ``backoff_elapsed`` and ``rate_limited_elapsed`` are the seconds of
        counted backoff and of server-paced waiting this batch has accumulated. Pass them
        *including* the wait about to be scheduled, so a wait that would overrun its budget
        is refused up front instead of being served and then refused. A budget is exceeded
        only when strictly passed. The reason is short, human-readable and key-free.
        """
        if attempts >= self.max_attempts:
            plural = "" if attempts == 1 else "s"
            return f"retry budget exhausted after {attempts} attempt{plural}"
        if backoff_elapsed > self.max_backoff_duration:
            return f"backed off for more than {self.max_backoff_duration:g} s"
        if rate_limited_elapsed > self.max_rate_limit_duration:
            return f"rate limited for more than {self.max_rate_limit_duration:g} s"
        return None


@attrs.frozen
class GiveUp:
    """What :meth:`Backoff.record_failure` answers when the batch must be given up."""

    #: Why, short, human-readable and key-free (from :meth:`RetryPolicy.should_give_up`).
    reason: str


@attrs.define
class Backoff:
    """The retry state of one queue of batches (a tenant's) under ``policy``: a value with
    its own state, as urllib3's ``Retry`` is, updated in place by each settled request.

    * ``attempts``: counted attempts since the last success (server-paced ones excluded).
    * ``retries``: failures since the last success (a request's ``X-Retry-Count`` is its
      batch's own, kept by the settler).
    * ``failures``: retryable failures ever recorded, never reset. A request notes it as
      its turn is granted, before its batch is taken (its ``seen``), so that its result
      can tell whether a request sent beside it failed meanwhile.
    * ``backoff_spent``, ``rate_limited_spent``: seconds of counted backoff and of
      server-paced waiting scheduled since the last success.
    * ``own_waits``: server-paced failures since the last success that were not a 429's
      (a 5xx, 408, 410 or 460 with ``Retry-After``): waits about that request, not the key.

    Guarantee: :meth:`record_failure` answers each failure with the wait before the next
    attempt or, once a budget of ``policy`` would be passed, a :class:`GiveUp` (the state
    is then reset for the next batch); two requests out at once that both fail count as
    one failure. Not thread-safe: the caller holds its own lock.
    """

    policy: RetryPolicy
    attempts: int = 0
    retries: int = 0
    failures: int = 0
    backoff_spent: float = 0.0
    rate_limited_spent: float = 0.0
    own_waits: int = 0

    def record_failure(
        self,
        outcome: Outcome,
        retry_after: float | None = None,
        rate_limit_reset: float | None = None,
        *,
        seen: int | None = None,
    ) -> float | GiveUp:
        """Record a retryable failure; the seconds to wait before the batch is sent again,
        or :class:`GiveUp`.

        ``retry_after`` and ``rate_limit_reset`` are the parsed headers of the answer (see
        :func:`server_wait`): a server-paced wait is spent from ``max_rate_limit_duration``
        and not counted as an attempt; otherwise the attempt is counted and the wait is
        the policy's next backoff. ``seen`` is :attr:`failures` when the request's turn
        was granted: if a failure was recorded since (a request sent beside it failed first and
        set the backoff), nothing is recorded and the wait is 0: the batch goes back to
        the head of the queue and follows the other.
        """
        if seen is not None and seen != self.failures:
            return 0.0
        self.failures += 1
        paced = server_wait(outcome, retry_after, rate_limit_reset)
        if paced is not None:
            delay = paced
            self.rate_limited_spent += delay
            if outcome is not Outcome.RATE_LIMITED:
                self.own_waits += 1
        else:
            self.attempts += 1
            delay = self.policy.next_delay(self.attempts)
            self.backoff_spent += delay
        self.retries += 1
        reason = self.policy.should_give_up(
            self.attempts, self.backoff_spent, self.rate_limited_spent
        )
        if reason is not None:
            self.reset()
            return GiveUp(reason)
        return delay

    def record_success(self, seen: int | None = None, *, aside: bool = False) -> None:
        """Record a settled request (delivered, or refused for good): the backoff is
        reset, unless a request sent beside it failed meanwhile (``seen`` is
        :attr:`failures` when its turn was granted): that failure's backoff stands.

        ``aside``: the request was another batch than the one this backoff retries (a
        batch set aside, with a backoff of its own). It resets only a backoff holding
        429s' waits alone (the key's, over once a request is let through again), never a
        counted attempt or a wait the server named for the failing batch's own request
        (:attr:`own_waits`): those are that batch's budget, which another batch's
        success must not refill."""
        if seen is not None and seen != self.failures:
            return
        if not (aside and (self.attempts or self.own_waits)):
            self.reset()

    def reset(self) -> None:
        """Start afresh: no attempt counted, no retry pending, no wait spent
        (:attr:`failures` is kept)."""
        self.attempts = self.retries = self.own_waits = 0
        self.backoff_spent = self.rate_limited_spent = 0.0
