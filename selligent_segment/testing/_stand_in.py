"""The :class:`StandIn` base: what :class:`LocalSegment` and :class:`LocalSelligent` share.

One job: the life of a loopback stand-in (start, stop, context manager, ``port``, ``url``),
its accepted and revoked keys, its fault injector and the waits on requests that arrived
or were answered. Each subclass says how it serves (:meth:`StandIn._serve`), what a key
looks like and what it records.

Guarantees: as the subclasses': keys are checked under one lock, the counters are read
and written under one condition, every wait is on that condition (no polling), bounded by
its timeout; keys are in no repr.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, ClassVar, TypeVar

from selligent_segment._context import StartedOnEnter
from selligent_segment.testing._faults import FaultInjector, FaultPlan, key_set

if TYPE_CHECKING:
    from selligent_segment.testing._server import LoopbackServer

__all__ = ["StandIn"]

_S = TypeVar("_S", bound="StandIn")


class StandIn(StartedOnEnter):
    """A stand-in served on a real loopback socket; subclasses give :meth:`_serve`."""

    _name: ClassVar[str]
    _keys_argument: ClassVar[str]  # the constructor's name for ``keys``, for its errors

    def __init__(
        self,
        *,
        host: str,
        port: int,
        keys: Iterable[str] | None,
        faults: FaultPlan | None,
        latency: float,
    ) -> None:
        if latency < 0:
            raise ValueError("latency must be >= 0")
        self._host = host
        self._port = port
        self._latency = float(latency)
        self._keys_lock = threading.Lock()
        allowed = key_set(keys, self._keys_argument)
        self._allowed: set[str] | None = None if allowed is None else set(allowed)
        self._revoked: set[str] = set()
        self._faults = FaultInjector(faults)
        self._cond = threading.Condition(threading.Lock())
        self._n_requests = 0
        self._n_arrived = 0
        self._server: LoopbackServer | None = None

    def __repr__(self) -> str:
        where = self.url if self._server is not None else "stopped"
        return f"<{self._name} {where}>"

    def _serve(self) -> LoopbackServer:
        """Bind ``self._host:self._port`` and serve in a daemon thread."""
        raise NotImplementedError

    # -- lifecycle ------------------------------------------------------------------------

    def start(self: _S) -> _S:
        """Bind and serve in a daemon thread; returns self. Raises if already started."""
        if self._server is not None:
            raise RuntimeError(f"{self._name} is already started")
        self._server = self._serve()
        return self

    def stop(self) -> None:
        """Stop serving and close every open connection; idempotent."""
        server, self._server = self._server, None
        if server is not None:
            server.stop()

    @property
    def port(self) -> int:
        """The bound TCP port (raises RuntimeError when not started)."""
        if self._server is None:
            raise RuntimeError(f"{self._name} is not started")
        return self._server.port

    @property
    def url(self) -> str:
        """Base URL (for LocalSelligent a tenant's ``selligent_url``), e.g.
        ``http://127.0.0.1:54321`` (raises RuntimeError when not started)."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}"

    # -- keys -----------------------------------------------------------------------------

    def _add_key(self, key: str) -> None:
        with self._keys_lock:
            self._revoked.discard(key)
            if self._allowed is not None:
                self._allowed.add(key)

    def _revoke_key(self, key: str) -> None:
        with self._keys_lock:
            self._revoked.add(key)
            if self._allowed is not None:
                self._allowed.discard(key)

    def _key_ok(self, key: str | None) -> bool:
        if not key:
            return False
        with self._keys_lock:
            if key in self._revoked:
                return False
            return self._allowed is None or key in self._allowed

    # -- faults ---------------------------------------------------------------------------

    def set_faults(self, plan: FaultPlan | None) -> None:
        """Install ``plan`` (None = no faults) with fresh script positions and RNG;
        ``per_key`` is keyed by the key a request sends."""
        self._faults.install(plan)

    def outage(self, status: int = 503, *, retry_after: int | str | None = None) -> None:
        """Answer every request to the served API with ``status`` until :meth:`end_outage`."""
        self._faults.start_outage(status, retry_after)

    def end_outage(self) -> None:
        """End an outage started by :meth:`outage`; no-op otherwise."""
        self._faults.end_outage()

    def _control_faults(self, plan: FaultPlan, outage: int | None) -> None:
        """What ``POST /_faults`` (and ``--fault-mix``) asks: install ``plan``, then start an
        ``outage`` (with the plan's ``retry_after``) or end any."""
        self.set_faults(plan)
        if outage is not None:
            self.outage(outage, retry_after=plan.retry_after)
        else:
            self.end_outage()

    # -- waits ----------------------------------------------------------------------------

    def wait_for_arrivals(self, count: int, timeout: float = 10.0) -> bool:
        """Block until at least ``count`` requests to the served API have arrived, answered
        or not (a request held by an injected delay counts at once); False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._n_arrived >= count, timeout)

    def wait_for_requests(self, count: int, timeout: float = 10.0) -> bool:
        """Block until at least ``count`` requests to the served API were answered or
        dropped; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._n_requests >= count, timeout)

    def _note_arrival(self) -> None:
        """A request to the served API arrived (its headers are read)."""
        with self._cond:
            self._n_arrived += 1
            self._cond.notify_all()
