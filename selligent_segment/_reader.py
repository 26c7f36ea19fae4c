"""Reading callback records from JSON Lines files, with file:line on every refusal."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import BinaryIO

import attrs
import orjson

from selligent_segment._errors import InvalidEvent
from selligent_segment._record import CallbackRecord

__all__ = ["Line", "read_records"]


@attrs.frozen(slots=True)
class Line:
    """One input line: either a valid ``record`` or the ``error`` that refused it."""

    source: str
    number: int
    raw: bytes
    record: CallbackRecord | None = None
    error: InvalidEvent | None = None

    @property
    def where(self) -> str:
        """``FILE:LINE``, for messages."""
        return f"{self.source}:{self.number}"


def _parse(source: str, number: int, raw: bytes) -> Line:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return Line(source, number, raw, error=InvalidEvent("line", f"invalid JSON ({exc})"))
    try:
        return Line(source, number, raw, record=CallbackRecord.from_dict(data))
    except InvalidEvent as exc:
        return Line(source, number, raw, error=exc)


def iter_lines(stream: BinaryIO, source: str) -> Iterator[Line]:
    """Yield a :class:`Line` for every non-blank line of ``stream``, in order."""
    for number, raw in enumerate(stream, start=1):
        stripped = raw.strip()
        if stripped:
            yield _parse(source, number, stripped)


def read_records(path: str) -> Iterator[Line]:
    """Yield the lines of the JSON Lines file ``path`` (``-`` is standard input).

    Raises OSError when the file cannot be opened; never raises for a bad line.
    """
    if path == "-":
        yield from iter_lines(sys.stdin.buffer, "<stdin>")
        return
    with open(path, "rb") as stream:
        yield from iter_lines(stream, path)
