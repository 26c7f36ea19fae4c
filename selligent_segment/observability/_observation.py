"""One reading of everything the metrics and the health check report, taken at once.

:class:`Source` reads an :class:`~selligent_segment.Emitter`'s counters (this process's)
and, with a spool file or a PostgreSQL spool, its backlog, pauses and last errors (every
process's: processes sharing the spool see the same). :class:`Observation` is that reading, frozen;
the Prometheus collector, the OpenTelemetry instruments and
:func:`~selligent_segment.observability.health` only turn it into their own form.

Guarantee: reading never raises for a spool that cannot be read, nor for an Emitter whose
``stats()`` cannot read its spool (the error text is kept in
:attr:`Observation.spool_error` and reported as such), holds no write key, no email
address and no database password, and costs one ``Emitter.stats()``, one status of the
spool (one grouped scan of a file's rows; PostgreSQL's kept counts) and one read of its
used size.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from pathlib import Path

import attrs

from selligent_segment._emitter import Emitter
from selligent_segment._errors import ConfigurationError, SelligentSegmentError
from selligent_segment.delivery._stats import LastError, Stats
from selligent_segment.spool._file import SpoolFile, SpoolStatus
from selligent_segment.spool._postgres import (
    DEFAULT_SCHEMA,
    check_schema_name,
    is_postgres_url,
    redact,
    split_options,
)
from selligent_segment.spool._postgres_view import PostgresView
from selligent_segment.spool._schema import spool_path

__all__ = ["OTHER_TENANTS", "Observation", "Source", "TenantView", "emitter_source", "top_tenants"]

#: The ``tenant`` label value that sums every tenant beyond the cap.
OTHER_TENANTS = "other"


@attrs.frozen
class TenantView:
    """One tenant as observed: its backlog (from the spool file when there is one, else
    this process's queue) and this process's counters."""

    tenant: str
    backlog: int = 0
    """Events waiting (leased ones included)."""
    leased: int = 0
    """Events being sent right now (spool file only)."""
    oldest_age: float | None = None
    """Seconds the oldest waiting event has waited (spool file only; None: empty)."""
    dead_letters: int = 0
    """Dead letters kept in the spool file."""
    paused: str | None = None
    """Why the tenant is paused, or None."""
    accepted: int = 0
    delivered: int = 0
    retried: int = 0
    """Re-sends after a transient failure (an event retried five times counts five)."""
    retried_events: int = 0
    """Distinct events that needed at least one retry."""
    rejected: Mapping[str, int] = attrs.field(factory=dict)
    dropped: Mapping[str, int] = attrs.field(factory=dict)
    last_error: LastError | None = None


@attrs.frozen
class Observation:
    """What a :class:`Source` read at ``at`` (Unix time).

    ``stats`` is None without an Emitter or when its ``stats()`` could not read its spool;
    ``spool`` is None without a spool or when it could not be read (``spool_error`` then
    says why); ``max_spool_bytes`` is the Emitter's cap (None without one);
    ``spool_used`` the bytes that cap counts (a file's pages in use, PostgreSQL's queued
    bodies; None: unknown). ``tenants`` merges both, sorted by name.
    """

    at: float
    stats: Stats | None
    spool: SpoolStatus | None
    spool_error: str | None
    max_spool_bytes: int | None
    tenants: tuple[TenantView, ...]
    closed: bool = False
    spool_used: int | None = None
    spool_unwritable: bool = False
    """True while the Emitter cannot write its spool file (another process holds it
    locked, the disk is full): its encoder keeps trying, and the events it accepted wait
    in its journal, counted nowhere else."""

    @property
    def backlog(self) -> int:
        """Events waiting, every tenant."""
        return sum(t.backlog for t in self.tenants)

    @property
    def oldest_age(self) -> float | None:
        """Seconds the oldest waiting event has waited (None: unknown or empty)."""
        ages = [t.oldest_age for t in self.tenants if t.oldest_age is not None]
        return max(ages) if ages else None

    @property
    def paused(self) -> dict[str, str]:
        """Paused tenants and why."""
        return {t.tenant: t.paused for t in self.tenants if t.paused is not None}

    @property
    def spool_fill(self) -> float | None:
        """``spool_used`` as a share of ``max_spool_bytes``, the measure ``emit`` enforces
        (at 1.0 it refuses events); not the file's size, which free pages, the WAL and
        the journals add to (None: unknown)."""
        if self.spool_used is None or not self.max_spool_bytes:
            return None
        return self.spool_used / self.max_spool_bytes


def top_tenants(
    tenants: tuple[TenantView, ...], limit: int, key: Callable[[TenantView], float]
) -> tuple[list[TenantView], list[TenantView]]:
    """``(kept, rest)``: the ``limit`` tenants with the largest ``key`` (ties by name),
    and the others, which a caller sums into :data:`OTHER_TENANTS`."""
    ranked = sorted(tenants, key=lambda t: (-key(t), t.tenant))
    return ranked[:limit], ranked[limit:]


class Source:
    """Where observations come from: an Emitter, a spool, or both.

    ``Source(emitter)`` reads the Emitter's counters and, when it has a spool file or a
    PostgreSQL spool, that spool; ``Source(spool=PATH)`` reads a spool file alone (an
    exporter process beside prefork workers), ``Source(spool="postgresql://...")`` a
    PostgreSQL spool alone (as ``spool status`` does: password from the URL, PGPASSWORD
    or ~/.pgpass, never shown); ``Source(emitter, spool=...)`` names the spool
    explicitly. The spool is opened on first use and kept (reopened after an error, and
    in a forked child). ``clock`` (``time.time``) is the seam for a test. Thread-safe.
    """

    def __init__(
        self,
        emitter: Emitter | None = None,
        *,
        spool: str | os.PathLike[str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if emitter is not None and not isinstance(emitter, Emitter):
            raise ConfigurationError("emitter", "expected an Emitter or None")
        if spool is None and emitter is not None and emitter.config.durable:
            spool = emitter.config.spool
        if emitter is None and spool is None:
            raise ConfigurationError("spool", "give an Emitter, a spool file, or both")
        self._emitter = emitter
        self._path: Path | str | None = None if spool is None else _target(spool)
        self._reader = _Reader(self._path)
        self._owns_reader = True
        self._clock = clock

    @property
    def emitter(self) -> Emitter | None:
        """The Emitter read, if any."""
        return self._emitter

    def __repr__(self) -> str:
        spool = None if self._path is None else redact(str(self._path))
        return f"<Source emitter={self._emitter is not None} spool={spool!r}>"

    def observe(self) -> Observation:
        """Read now. Never raises for an unreadable spool (see ``spool_error``)."""
        emitter = self._emitter
        unwritable = emitter is not None and emitter._spool_unwritable()
        stats, stats_error = self._stats()
        spool, used, error = self._reader.status()
        if stats_error is not None and error is None:  # the spool failed the Emitter
            spool, used, error = None, None, stats_error
        views: dict[str, dict[str, object]] = {}
        if stats is not None:
            for name, t in stats.tenants.items():
                views[name] = {
                    "backlog": t.queued,
                    "paused": t.paused,
                    "accepted": t.accepted,
                    "delivered": t.delivered,
                    "retried": t.retried,
                    "retried_events": t.retried_events,
                    "rejected": t.rejected,
                    "dropped": t.dropped,
                    "last_error": t.last_error,
                }
        if spool is not None:
            for row in spool.tenants:
                view = views.setdefault(row.tenant, {})
                view.update(
                    backlog=row.queued,
                    leased=row.leased,
                    oldest_age=row.oldest_age,
                    dead_letters=row.dead_letters,
                )
                if row.paused is not None or "paused" not in view:
                    view["paused"] = row.paused
                mine = view.get("last_error")
                if row.last_error is not None and (
                    not isinstance(mine, LastError) or row.last_error.at > mine.at
                ):
                    view["last_error"] = row.last_error  # any process's, when newer
            for name in set(views) - {row.tenant for row in spool.tenants}:
                views[name]["backlog"] = 0  # the file, shared, is the truth about backlog
        tenants = tuple(
            TenantView(tenant=name, **view)  # type: ignore[arg-type]
            for name, view in sorted(views.items())
        )
        return Observation(
            at=self._clock(),
            stats=stats,
            spool=spool,
            spool_error=error,
            max_spool_bytes=emitter.config.max_spool_bytes if emitter is not None else None,
            tenants=tenants,
            closed=emitter is not None and emitter.closed,
            spool_used=used,
            spool_unwritable=unwritable,
        )

    def _stats(self) -> tuple[Stats | None, str | None]:
        """The Emitter's counters (None without one), or None and why not: ``stats()``
        reads the backlog from the spool, which may be damaged or out of reach. Never
        waits for a write that holds the Emitter's spool (one waiting for another
        process's lock holds it up to 30 s): the counters alone then, the backlog being
        read from the file below anyway."""
        if self._emitter is None:
            return None, None
        try:
            return self._emitter._stats_now(), None
        except SelligentSegmentError as exc:
            return None, str(exc)

    def close(self) -> None:
        """Close the spool file, if opened and this Source's own (idempotent)."""
        if self._owns_reader:
            self._reader.close()


def _target(spool: str | os.PathLike[str]) -> Path | str:
    """A spool file's path, or a PostgreSQL URL as given (its ``spool_schema`` checked);
    ConfigurationError for a setting that is neither."""
    if is_postgres_url(spool):
        url = str(spool)
        check_schema_name(split_options(url)[1].get("spool_schema", DEFAULT_SCHEMA))
        return url
    return spool_path(spool)


class _Reader:
    """The spool at ``path`` (a file's path, a PostgreSQL URL; None: none), opened on
    first use and kept; reopened after an error (a restarted database). Both views get
    their own connection in a forked child themselves."""

    def __init__(self, path: Path | str | None) -> None:
        self.path = path
        self._view: SpoolFile | PostgresView | None = None
        self._lock = threading.Lock()

    def status(self) -> tuple[SpoolStatus | None, int | None, str | None]:
        """``(status, used_bytes, None)``, or ``(None, None, why)`` when the spool cannot
        be read (never raises; the reason holds no password)."""
        if self.path is None:
            return None, None, None
        with self._lock:
            try:
                view = self._open()
                return view.status(), view.used_bytes(), None
            except SelligentSegmentError as exc:
                self._drop()
                return None, None, str(exc)

    def _open(self) -> SpoolFile | PostgresView:
        if self._view is None:
            path = self.path
            assert path is not None
            self._view = SpoolFile(path) if isinstance(path, Path) else PostgresView(path)
        return self._view

    def _drop(self) -> None:
        view, self._view = self._view, None
        if view is not None:
            view.close()

    def close(self) -> None:
        with self._lock:
            self._drop()


# One reader per Emitter, for the Sources :func:`emitter_source` makes. Keyed weakly, and
# a reader holds no reference to its Emitter: it goes (and its connection is closed by
# the garbage collector) when the Emitter goes.
_readers: weakref.WeakKeyDictionary[Emitter, _Reader] = weakref.WeakKeyDictionary()
_readers_lock = threading.Lock()


def emitter_source(emitter: Emitter) -> Source:
    """A :class:`Source` over ``emitter`` that reads its spool file through one connection
    kept for the Emitter's life, shared by every Source this makes for it: a check made
    every second opens the file once. Once the Emitter is closed, the kept connection is
    closed and the Source returned reads through its own (close it after use)."""
    source = Source(emitter)
    if emitter.closed:
        with _readers_lock:
            kept = _readers.pop(emitter, None)
        if kept is not None:
            kept.close()
        return source
    with _readers_lock:
        reader = _readers.get(emitter)
        if reader is None or reader.path != source._reader.path:
            reader = _readers[emitter] = source._reader
    source._reader = reader
    source._owns_reader = False
    return source
