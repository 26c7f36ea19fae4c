"""Injected faults: what they are (:class:`Fault`, :class:`FaultPlan`) and which one fires.

One job: decide, request by request, whether an injected fault answers instead of the rules
(a status code with ``Retry-After`` / ``X-RateLimit-Reset``, a dropped connection, latency),
from a scripted sequence, a per-key script, a seeded random mix or an outage.

Guarantees: :class:`Fault` and :class:`FaultPlan` are immutable and checked when built (a bad
status, rate or header value raises at once, not at the request); the consumption state
(script positions, the seeded RNG, the outage) lives in a :class:`FaultInjector`, whose
:meth:`~FaultInjector.next` is thread-safe and starts each installed plan afresh, so a seeded
mix draws the same faults for the same sequence of requests. Write keys never appear in a repr.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any, Literal, TypeAlias

import attrs
import orjson

from selligent_segment.testing._rules import Answer, error_answer, status_code_slug

__all__ = [
    "Fault",
    "FaultInjector",
    "FaultKind",
    "FaultLike",
    "FaultPlan",
    "RateKey",
    "RatesLike",
    "fault_answer",
    "key_set",
    "parse_fault_control",
]


FaultKind: TypeAlias = Literal["status", "drop", "latency"]
"""The three kinds of :class:`Fault`."""


def _check_header_value(value: int | str | None, name: str) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise TypeError(f"{name} must be int seconds or a str, not {type(value).__name__}")
    if isinstance(value, int) and value < 0:
        raise ValueError(f"{name} must be >= 0")
    if isinstance(value, str) and ("\r" in value or "\n" in value):
        raise ValueError(f"{name} must not contain line breaks")


@attrs.frozen
class Fault:
    """One injected fault; immutable. Build with :meth:`http`, :meth:`drop` or :meth:`latency`.

    - ``status``: answer ``status`` (after ``seconds`` of delay) with a JSON error body and
      the optional ``Retry-After`` / ``X-RateLimit-Reset`` headers; events not accepted.
    - ``drop``: read the request, then close the connection without answering (after
      ``seconds``); recorded with status 0; events not accepted.
    - ``latency``: sleep ``seconds``, then handle the request normally.
    """

    kind: FaultKind
    status: int = 0
    retry_after: int | str | None = None
    x_ratelimit_reset: int | str | None = None
    seconds: float = 0.0

    def __attrs_post_init__(self) -> None:
        if self.kind not in ("status", "drop", "latency"):
            raise ValueError(f"unknown fault kind {self.kind!r}")
        if self.kind == "status" and not 100 <= self.status <= 599:
            raise ValueError(f"status must be an HTTP status code, got {self.status!r}")
        if self.seconds < 0:
            raise ValueError("seconds must be >= 0")
        _check_header_value(self.retry_after, "retry_after")
        _check_header_value(self.x_ratelimit_reset, "x_ratelimit_reset")

    @classmethod
    def http(
        cls,
        status: int,
        *,
        retry_after: int | str | None = None,
        x_ratelimit_reset: int | str | None = None,
        delay: float = 0.0,
    ) -> Fault:
        """Answer ``status``; ``retry_after`` is int seconds or an HTTP-date string."""
        return cls(
            "status",
            status=status,
            retry_after=retry_after,
            x_ratelimit_reset=x_ratelimit_reset,
            seconds=delay,
        )

    @classmethod
    def drop(cls, *, delay: float = 0.0) -> Fault:
        """Close the connection without answering, after reading the request."""
        return cls("drop", seconds=delay)

    @classmethod
    def latency(cls, seconds: float) -> Fault:
        """Sleep ``seconds`` before handling the request normally."""
        return cls("latency", seconds=seconds)


FaultLike: TypeAlias = Fault | int | Literal["drop"]
"""A :class:`Fault`, a bare status code (``503``) or ``"drop"``."""


def _to_fault(value: FaultLike) -> Fault:
    if isinstance(value, Fault):
        return value
    if value == "drop":
        return Fault.drop()
    if isinstance(value, int) and not isinstance(value, bool):
        return Fault.http(value)
    raise TypeError(f"not a fault: {value!r} (use Fault, an int status or 'drop')")


def _to_faults(value: Iterable[FaultLike]) -> tuple[Fault, ...]:
    if isinstance(value, (str, bytes)):
        raise TypeError("a fault script must be a sequence of faults, not a string")
    return tuple(_to_fault(v) for v in value)


def _to_per_key(value: Mapping[str, Iterable[FaultLike]]) -> Mapping[str, tuple[Fault, ...]]:
    return MappingProxyType({str(k): _to_faults(v) for k, v in value.items()})


RateKey: TypeAlias = int | Literal["drop"]
"""A key of :attr:`FaultPlan.rates`: an HTTP status code or ``"drop"``."""
RatesLike: TypeAlias = Mapping[Any, float]
"""Fault rates keyed by status code (int or digit string) or ``"drop"``."""


def _to_rates(value: RatesLike) -> Mapping[RateKey, float]:
    out: dict[RateKey, float] = {}
    for raw_key, raw_rate in value.items():
        key: RateKey
        if raw_key == "drop":
            key = "drop"
        elif isinstance(raw_key, int) and not isinstance(raw_key, bool):
            key = raw_key
        elif isinstance(raw_key, str) and raw_key.isdigit():
            key = int(raw_key)
        else:
            raise ValueError(f"rate key must be a status code or 'drop', got {raw_key!r}")
        if key != "drop" and not 100 <= key <= 599:
            raise ValueError(f"rate key must be an HTTP status code, got {key!r}")
        rate = float(raw_rate)
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"rate for {key!r} must be within [0, 1]")
        out[key] = rate
    if sum(out.values()) > 1.0 + 1e-9:
        raise ValueError("fault rates must sum to at most 1")
    return MappingProxyType(out)


def key_set(value: Iterable[str] | None, argument: str) -> frozenset[str] | None:
    """``value`` as a set of keys (None stays None); a bare ``str`` or ``bytes`` (the
    set of its characters, a key that never matches) is a TypeError naming ``argument``,
    never the key."""
    if isinstance(value, (str, bytes)):
        raise TypeError(
            f"{argument} must be a collection of keys, not one {type(value).__name__}: "
            f"give {argument}=[key]"
        )
    return None if value is None else frozenset(value)


def _to_key_set(value: Iterable[str] | None) -> frozenset[str] | None:
    return key_set(value, "mix_keys")


def _redact_keys(value: object) -> str:
    if value is None:
        return "None"
    if isinstance(value, Mapping):
        return f"<{len(value)} write key(s)>"
    if isinstance(value, frozenset):
        return f"<{len(value)} write key(s)>"
    return "<redacted>"


@attrs.frozen
class FaultPlan:
    """Immutable description of injected faults; the server keeps the consumption state.

    For each ``/v1/batch`` request, in order: the next unused entry of ``per_key[key]`` (if
    the request's write key has a script), else the next unused entry of ``script``, else a
    random draw from ``rates`` (``{status or "drop": probability}``, seeded by ``seed``,
    restricted to ``mix_keys`` when given); ``retry_after`` / ``x_ratelimit_reset`` are set
    on every status fault of the random mix. Scripts restart when the plan is (re)installed.
    """

    script: tuple[Fault, ...] = attrs.field(default=(), converter=_to_faults)
    per_key: Mapping[str, tuple[Fault, ...]] = attrs.field(
        factory=dict, converter=_to_per_key, repr=_redact_keys, hash=False
    )
    rates: Mapping[RateKey, float] = attrs.field(factory=dict, converter=_to_rates, hash=False)
    seed: int | None = None
    retry_after: int | str | None = None
    x_ratelimit_reset: int | str | None = None
    mix_keys: frozenset[str] | None = attrs.field(
        default=None, converter=_to_key_set, repr=_redact_keys
    )

    def __attrs_post_init__(self) -> None:
        _check_header_value(self.retry_after, "retry_after")
        _check_header_value(self.x_ratelimit_reset, "x_ratelimit_reset")

    @classmethod
    def mix(
        cls,
        *,
        seed: int | None = None,
        rates: RatesLike,
        retry_after: int | str | None = None,
        x_ratelimit_reset: int | str | None = None,
        keys: Iterable[str] | None = None,
    ) -> FaultPlan:
        """A seeded random mix, e.g. ``mix(seed=1, rates={500: 0.2, "drop": 0.05})``;
        ``keys`` (a collection of write keys, not one string) restricts it to them."""
        return cls(
            rates=rates,
            seed=seed,
            retry_after=retry_after,
            x_ratelimit_reset=x_ratelimit_reset,
            mix_keys=key_set(keys, "keys"),
        )

    @classmethod
    def from_json(cls, obj: object) -> FaultPlan:
        """Build a mix from the ``/_faults`` JSON shape; ``{}`` is the empty plan."""
        if not isinstance(obj, dict):
            raise ValueError("fault plan must be a JSON object")
        unknown = set(obj) - {"seed", "rates", "retry_after", "x_ratelimit_reset", "outage"}
        if unknown:
            raise ValueError(f"unknown fault plan fields: {sorted(unknown)}")
        rates = obj.get("rates") or {}
        if not isinstance(rates, dict):
            raise ValueError("rates must be an object")
        seed = obj.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError("seed must be an integer")
        return cls.mix(
            seed=seed,
            rates=rates,
            retry_after=obj.get("retry_after"),
            x_ratelimit_reset=obj.get("x_ratelimit_reset"),
        )


class _PlanState:
    """Consumption state of one installed :class:`FaultPlan`; guarded by the injector's lock."""

    __slots__ = ("per_key_pos", "plan", "rates", "rng", "script_pos")

    def __init__(self, plan: FaultPlan) -> None:
        self.plan = plan
        self.script_pos = 0
        self.per_key_pos: dict[str, int] = {}
        self.rng = random.Random(plan.seed)  # noqa: S311 - fault injection, not crypto
        self.rates = tuple(plan.rates.items())

    def next(self, key: str | None) -> Fault | None:
        plan = self.plan
        if key is not None and key in plan.per_key:
            seq = plan.per_key[key]
            pos = self.per_key_pos.get(key, 0)
            if pos < len(seq):
                self.per_key_pos[key] = pos + 1
                return seq[pos]
        if self.script_pos < len(plan.script):
            self.script_pos += 1
            return plan.script[self.script_pos - 1]
        if self.rates and (plan.mix_keys is None or key in plan.mix_keys):
            draw = self.rng.random()
            acc = 0.0
            for what, rate in self.rates:
                acc += rate
                if draw < acc:
                    if what == "drop":
                        return Fault.drop()
                    return Fault.http(
                        what,
                        retry_after=plan.retry_after,
                        x_ratelimit_reset=plan.x_ratelimit_reset,
                    )
        return None


class FaultInjector:
    """Which fault, if any, answers the next request: the installed plan and the outage.

    Thread-safe: :meth:`next` is called by every request's thread, :meth:`install`,
    :meth:`start_outage` and :meth:`end_outage` by the test's.
    """

    __slots__ = ("_lock", "_outage", "_state")

    def __init__(self, plan: FaultPlan | None = None) -> None:
        self._lock = threading.Lock()
        self._state = _PlanState(plan or FaultPlan())
        self._outage: Fault | None = None

    def install(self, plan: FaultPlan | None) -> None:
        """Install ``plan`` (None = no faults) with fresh script positions and RNG."""
        with self._lock:
            self._state = _PlanState(plan or FaultPlan())

    def start_outage(self, status: int, retry_after: int | str | None = None) -> None:
        """Answer every request with ``status`` until :meth:`end_outage`."""
        fault = Fault.http(status, retry_after=retry_after)
        with self._lock:
            self._outage = fault

    def end_outage(self) -> None:
        """End an outage; no-op otherwise."""
        with self._lock:
            self._outage = None

    def next(self, key: str | None) -> Fault | None:
        """The fault that answers the next request sent with ``key``, or None."""
        with self._lock:
            if self._outage is not None:
                return self._outage
            return self._state.next(key)


def fault_answer(fault: Fault) -> Answer:
    """The answer of a ``status`` fault: its status, Segment's JSON error body and headers."""
    headers: list[tuple[str, str]] = []
    if fault.retry_after is not None:
        headers.append(("Retry-After", str(fault.retry_after)))
    if fault.x_ratelimit_reset is not None:
        headers.append(("X-RateLimit-Reset", str(fault.x_ratelimit_reset)))
    slug = status_code_slug(fault.status)
    return error_answer(fault.status, slug, f"injected fault: HTTP {fault.status}", headers)


def parse_fault_control(raw: bytes | str) -> tuple[FaultPlan, int | None]:
    """The plan and outage status of a ``POST /_faults`` body (or ``--fault-mix``).

    ``{}`` (or an empty body) is the empty plan and no outage; an ``"outage"`` that is not an
    int is ignored. Raises ``ValueError`` (invalid JSON included) or ``TypeError``.
    """
    obj = orjson.loads(raw or b"{}")
    plan = FaultPlan.from_json(obj)
    outage = obj.get("outage")
    if isinstance(outage, int) and not isinstance(outage, bool):
        return plan, outage
    return plan, None
