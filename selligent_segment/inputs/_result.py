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


def _aligned(
    parsed: Parsed, attribute: attrs.Attribute[tuple[str, ...]], places: tuple[str, ...]
) -> None:
    if places and len(places) != len(parsed.records):
        raise ValueError(f"{len(places)} places for {len(parsed.records)} records")


@attrs.frozen
class Parsed:
    """An adapter's answer: ``records`` in input order, and ``problems`` for what could
    not be read. Both may be non-empty: a bad item never costs the others.

    ``places`` says where each record came from, as a problem's ``where`` would
    (``FILE:event-2``, ``FILE:message-3 recipient 2``): one per record, ``""`` for a
    record whose place is its input's; or empty, for all of them. :meth:`place` reads it,
    so that a record refused later (too large, an unknown tenant) is named where it is.
    """

    records: tuple[CallbackRecord, ...] = ()
    problems: tuple[InputProblem, ...] = ()
    places: tuple[str, ...] = attrs.field(default=(), validator=_aligned)

    def place(self, index: int, default: str) -> str:
        """Where record ``index`` came from; ``default`` (its input) when not known."""
        return (self.places[index] if self.places else "") or default

    def __add__(self, other: Parsed) -> Parsed:
        places: tuple[str, ...] = ()
        if self.places or other.places:
            places = (self.places or ("",) * len(self.records)) + (
                other.places or ("",) * len(other.records)
            )
        return Parsed(self.records + other.records, self.problems + other.problems, places)


class InputError(SelligentSegmentError, ValueError):
    """An input that cannot be read at all (not a report, not the provider's format, a
    refused signature): names ``where``, the ``field`` and the ``reason``."""

    def __init__(self, where: str, field: str, reason: str) -> None:
        super().__init__(f"{where}: {field}: {reason}")
        self.where = where
        self.field = field
        self.reason = reason
