"""The ``with`` halves the package's classes share: one job, the context-manager protocol.

:class:`ClosedOnExit` for what is usable once made (a spool view, an emitter): ``with``
gives the object itself and closes it on the way out. :class:`StartedOnEnter` for what
must be started (the testing stand-ins, the throw-away PostgreSQL, the forward proxy):
``with`` starts it and stops it on the way out.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any, TypeVar

__all__ = ["ClosedOnExit", "StartedOnEnter"]

_C = TypeVar("_C", bound="ClosedOnExit")
_S = TypeVar("_S", bound="StartedOnEnter")


class ClosedOnExit:
    """``with obj:`` binds ``obj`` and calls ``obj.close()`` however the block is left."""

    def close(self) -> object:
        """Release what the object holds (the subclass's own)."""
        raise NotImplementedError

    def __enter__(self: _C) -> _C:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class StartedOnEnter:
    """``with obj:`` binds what ``obj.start()`` returns (the object, started) and calls
    ``obj.stop()`` however the block is left."""

    def start(self) -> Any:
        """Start (the subclass's own); returns the object."""
        raise NotImplementedError

    def stop(self) -> None:
        """Stop (the subclass's own)."""
        raise NotImplementedError

    def __enter__(self: _S) -> _S:
        started: _S = self.start()
        return started

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
