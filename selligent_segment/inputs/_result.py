"""What every input adapter returns: the records it made and the problems it found."""

from __future__ import annotations

import attrs

from selligent_segment._errors import SelligentSegmentError
from selligent_segment._record import CallbackRecord

__all__ = ["InputError", "InputProblem", "Parsed"]


@attrs.frozen
class InputProblem:
    """One item an adapter could not turn into a record: ``where`` it is (``FILE:LINE``,
    ``FILE:MESSAGE-N``, ``request``, or an item index such as ``event 3``), the ``field``
    at fault and the ``reason``. Never carries a secret; an email address only where the
    caller's own input showed it."""

    where: str
    field: str
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: {self.field}: {self.reason}"


@attrs.frozen
class Parsed:
    """An adapter's answer: ``records`` in input order, and ``problems`` for what could
    not be read. Both may be non-empty: a bad item never costs the others."""

    records: tuple[CallbackRecord, ...] = ()
    problems: tuple[InputProblem, ...] = ()

    def __add__(self, other: Parsed) -> Parsed:
        return Parsed(self.records + other.records, self.problems + other.problems)


class InputError(SelligentSegmentError, ValueError):
    """An input that cannot be read at all (not a report, not the provider's format, a
    refused signature): names ``where``, the ``field`` and the ``reason``."""

    def __init__(self, where: str, field: str, reason: str) -> None:
        super().__init__(f"{where}: {field}: {reason}")
        self.where = where
        self.field = field
        self.reason = reason
