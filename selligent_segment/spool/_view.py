"""The operators' view of a spool, whatever its engine: the one protocol the commands
(``spool status``, ``dead-letters``, ``flush``, ``spool init``) ask, and how a ``--spool``
setting picks its engine: a spool file (:class:`~selligent_segment.spool._file.SpoolFile`)
or a PostgreSQL schema (:class:`~selligent_segment.spool._postgres_view.PostgresView`).

Guarantee: :func:`open_view` never creates anything (a missing spool is a SpoolError
naming it); :func:`init_spool` is the one place that creates or migrates one, and refuses
one written by a newer release with a SpoolError. Every engine error is a SpoolError
naming the spool (a database by its URL without the password).
"""

from __future__ import annotations

from types import TracebackType
from typing import Protocol

from selligent_segment.spool._file import DeadLetter, SpoolFile, SpoolStatus
from selligent_segment.spool._postgres import is_postgres_url
from selligent_segment.spool._postgres_view import PostgresView, init_postgres
from selligent_segment.spool._schema import open_db, spool_path

__all__ = ["SpoolView", "init_spool", "open_view"]


class SpoolView(Protocol):
    """An existing spool, opened for status and dead-letter handling next to running
    emitters and relays. Every method raises SpoolError naming the spool on failure."""

    def status(self) -> SpoolStatus:
        """Backlog per tenant (queued, leased, dead letters, oldest age, paused), sizes."""
        ...

    def check(self) -> None:
        """Raise SpoolError when the spool is damaged or cannot be written."""
        ...

    def since(self, at: float) -> dict[str, tuple[int, int, int]]:
        """Per tenant with any: ``(queued, dead, dead_before)``: events queued (leased ones
        included) and dead letters accepted at or after ``at`` (Unix time), and dead
        letters accepted before ``at`` that failed at or after it."""
        ...

    def dead_letters(
        self,
        *,
        tenant: str | None = None,
        reason: str | None = None,
        limit: int | None = None,
    ) -> list[DeadLetter]:
        """Dead letters, oldest first; ``reason`` matches the start of the reason."""
        ...

    def requeue(
        self,
        *,
        tenant: str | None = None,
        reason: str | None = None,
        ids: list[int] | None = None,
    ) -> int:
        """Put matching dead letters back in their tenants' queues, same messageId, in one
        transaction; how many."""
        ...

    def purge(
        self,
        *,
        tenant: str | None = None,
        reason: str | None = None,
        ids: list[int] | None = None,
    ) -> int:
        """Delete matching dead letters for good, in one transaction; how many."""
        ...

    def close(self) -> None:
        """Release the file or the connection (idempotent)."""
        ...

    def __enter__(self) -> SpoolView: ...

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...


def open_view(spool: str) -> SpoolView:
    """The view of the existing spool ``spool`` names: a ``postgresql://`` URL or a
    spool file path; SpoolError when there is none there (nothing is created)."""
    if is_postgres_url(spool):
        return PostgresView(spool)
    return SpoolFile(spool)


def init_spool(spool: str) -> str:
    """Create the spool ``spool`` names, or migrate it to this release's schema; one line
    saying what was done. SpoolError for a spool written by a newer release (left as it
    is) or one that cannot be reached or written."""
    if is_postgres_url(spool):
        return init_postgres(spool)
    path = spool_path(spool)
    existed = path.exists()
    open_db(path, create=True).close()
    return f"{path}: spool file {'checked and migrated if needed' if existed else 'created'}"
