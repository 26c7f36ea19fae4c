"""Reading callback records from JSON Lines and CSV files, with FILE:LINE on every refusal.

JSON Lines: one record object per line, blank lines skipped (but counted).

CSV: RFC 4180 (comma-separated, ``"`` quoting, quoted cells may span lines), UTF-8 with an
optional byte-order mark. The first non-blank row is the header; its column names are
record fields (``type``, ``email``, ...). Every cell is text; a blank cell means the field
is absent; the ``properties`` cell, when not blank, holds a JSON object. A header that
cannot describe a valid record (unknown, duplicate or unnamed column, no ``type`` column,
neither an ``email`` nor a ``user_id`` column) makes the whole file unusable:
:class:`HeaderError`, raised when the input is opened.
"""

from __future__ import annotations

import csv
import enum
import os
import stat
import sys
from collections.abc import Iterator
from typing import Any, BinaryIO

import attrs
import orjson

from selligent_segment._errors import InvalidEvent
from selligent_segment._record import FIELD_NAMES, CallbackRecord

__all__ = ["Format", "HeaderError", "Input", "Line", "format_for", "read_records"]

STDIN = "-"
STDIN_NAME = "<stdin>"
_BOM = b"\xef\xbb\xbf"


class Format(str, enum.Enum):
    """An input format."""

    JSONL = "jsonl"
    CSV = "csv"


#: File name endings and the format they select; any other name is read as JSON Lines.
EXTENSIONS: dict[str, Format] = {
    ".csv": Format.CSV,
    ".jsonl": Format.JSONL,
    ".ndjson": Format.JSONL,
    ".json": Format.JSONL,
}


def format_for(path: str, explicit: Format | None = None) -> Format:
    """The format of ``path``: ``explicit`` when given, else by its extension (stdin and
    unknown extensions: JSON Lines)."""
    if explicit is not None:
        return explicit
    if path == STDIN:
        return Format.JSONL
    return EXTENSIONS.get(os.path.splitext(path)[1].lower(), Format.JSONL)


@attrs.frozen(slots=True)
class Line:
    """One input record: either a valid ``record`` or the ``error`` that refused it.

    ``number`` is the line where the record starts; ``raw`` is its input text exactly as
    read, line end(s) included (for CSV, every physical line of the row).
    """

    source: str
    number: int
    raw: bytes
    record: CallbackRecord | None = None
    error: InvalidEvent | None = None

    @property
    def where(self) -> str:
        """``FILE:LINE``, for messages."""
        return f"{self.source}:{self.number}"


class HeaderError(Exception):
    """A CSV header that cannot be used; the file's rows are not read."""

    def __init__(self, source: str, column: str, reason: str) -> None:
        self.source = source
        self.column = column
        self.reason = reason
        super().__init__(f"{source}:1: {column}: {reason}")


def _parse_json(source: str, number: int, raw: bytes, text: bytes) -> Line:
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        return Line(source, number, raw, error=InvalidEvent("line", f"invalid JSON ({exc})"))
    try:
        return Line(source, number, raw, record=CallbackRecord.from_dict(data))
    except InvalidEvent as exc:
        return Line(source, number, raw, error=exc)


def read_records(path: str, fmt: Format | None = None) -> Iterator[Line]:
    """Yield the records of ``path`` (``-`` is standard input), in the format its name
    selects unless ``fmt`` is given.

    Raises OSError when the file cannot be opened and HeaderError for an unusable CSV
    header; never raises for a bad record.
    """
    yield from Input(path, format_for(path, fmt))


class _PhysicalLines:
    """Feeds decoded lines to :mod:`csv` and keeps the raw bytes of the current row."""

    def __init__(self, stream: BinaryIO, owner: Input) -> None:
        self._stream = iter(stream)
        self._owner = owner
        self._first = True
        self.parts: list[bytes] = []
        self.bad_utf8 = False

    def __iter__(self) -> _PhysicalLines:
        return self

    def __next__(self) -> str:
        raw = next(self._stream)
        self.parts.append(raw)
        self._owner.bytes_read += len(raw)
        data = raw
        if self._first:
            self._first = False
            if data.startswith(_BOM):
                data = data[len(_BOM) :]
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            self.bad_utf8 = True
            return data.decode("utf-8", "surrogateescape")

    def take(self) -> tuple[bytes, int, bool]:
        """The raw bytes and physical line count of the row just read; starts the next."""
        raw, count, bad = b"".join(self.parts), len(self.parts), self.bad_utf8
        self.parts = []
        self.bad_utf8 = False
        return raw, count, bad


def _check_header(source: str, row: list[str]) -> tuple[str, ...]:
    columns = tuple(cell.strip() for cell in row)
    seen: set[str] = set()
    for index, name in enumerate(columns, start=1):
        if not name:
            raise HeaderError(source, f"column {index}", "has no name")
        if name not in FIELD_NAMES:
            known = ", ".join(sorted(FIELD_NAMES))
            raise HeaderError(source, name, f"unknown column (record fields: {known})")
        if name in seen:
            raise HeaderError(source, name, "duplicate column")
        seen.add(name)
    if "type" not in seen:
        raise HeaderError(source, "type", "no such column; every record needs a type")
    if "email" not in seen and "user_id" not in seen:
        raise HeaderError(source, "email", "the header has neither an email nor a user_id column")
    return columns


def _blank(row: list[str]) -> bool:
    return all(not cell.strip() for cell in row)


def _csv_record(columns: tuple[str, ...], row: list[str]) -> CallbackRecord:
    if len(row) != len(columns):
        raise InvalidEvent("record", f"{len(row)} cells, but the header has {len(columns)} columns")
    data: dict[str, Any] = {}
    for name, cell in zip(columns, row, strict=True):
        if not cell.strip():
            continue
        if name == "properties":
            try:
                data[name] = orjson.loads(cell)
            except orjson.JSONDecodeError as exc:
                raise InvalidEvent("properties", f"invalid JSON ({exc})") from None
        else:
            data[name] = cell
    return CallbackRecord.from_dict(data)


class Input:
    """One input (a file, or ``-`` for standard input) in one format.

    :meth:`open` opens it and, for CSV, reads and checks the header (raising
    :class:`HeaderError`); iterating yields its :class:`Line` objects once.
    ``bytes_read`` grows as the input is read, ``size`` is its size when known (for
    progress). A file is closed after :meth:`open` and opened again when iterated, so many
    inputs can be checked up front without holding a descriptor each.
    """

    def __init__(self, path: str, fmt: Format) -> None:
        self.path = path
        self.format = fmt
        self.source = STDIN_NAME if path == STDIN else path
        self.size: int | None = None
        self.bytes_read = 0
        self.header: bytes | None = None
        self.columns: tuple[str, ...] | None = None
        self._stdin: BinaryIO | None = None
        self._lines: _PhysicalLines | None = None
        self._reader: Iterator[list[str]] | None = None
        self._next_number = 1

    def open(self) -> Input:
        """Check the input can be read (and its CSV header used). Raises OSError or
        HeaderError."""
        if self.path == STDIN:
            stream = sys.stdin.buffer
            self._stdin = stream
            try:
                info = os.fstat(stream.fileno())
                if stat.S_ISREG(info.st_mode):
                    self.size = info.st_size
            except (OSError, ValueError):
                pass
            if self.format is Format.CSV:
                self._read_header(stream)
            return self
        with open(self.path, "rb") as stream:
            self.size = os.fstat(stream.fileno()).st_size
            if self.format is Format.CSV:
                self._read_header(stream)
            else:
                stream.read(1)  # a directory fails here, not later
        return self

    def _read_header(self, stream: BinaryIO) -> None:
        lines = _PhysicalLines(stream, self)
        reader = csv.reader(lines, strict=False)
        self.bytes_read = 0
        self._next_number = 1
        while True:
            try:
                row = next(reader)
            except StopIteration:
                self.columns = None
                break
            except csv.Error as exc:
                raise HeaderError(self.source, "header", f"not valid CSV ({exc})") from None
            raw, count, bad = lines.take()
            self._next_number += count
            if _blank(row):
                continue
            if bad:
                raise HeaderError(self.source, "header", "not valid UTF-8")
            self.columns = _check_header(self.source, row)
            self.header = raw
            break
        self._lines, self._reader = lines, reader

    def __iter__(self) -> Iterator[Line]:
        if self.path == STDIN:
            stream = self._stdin if self._stdin is not None else sys.stdin.buffer
            yield from self._iter(stream)
            return
        with open(self.path, "rb") as stream:
            self.bytes_read = 0
            if self.format is Format.CSV:
                self._read_header(stream)
            yield from self._iter(stream)

    def _iter(self, stream: BinaryIO) -> Iterator[Line]:
        if self.format is Format.JSONL:
            for number, raw in enumerate(stream, start=1):
                self.bytes_read += len(raw)
                stripped = raw.strip()
                if number == 1 and stripped.startswith(_BOM):
                    stripped = stripped[len(_BOM) :].strip()
                if stripped:
                    yield _parse_json(self.source, number, raw, stripped)
            return
        if self._reader is None:
            self._read_header(stream)
        yield from self._iter_csv()

    def _iter_csv(self) -> Iterator[Line]:
        lines, reader, columns = self._lines, self._reader, self.columns
        if lines is None or reader is None or columns is None:
            return  # an empty file: no header, no rows
        while True:
            error: InvalidEvent | None = None
            row: list[str] = []
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                error = InvalidEvent("line", f"not valid CSV ({exc})")
            raw, count, bad = lines.take()
            number = self._next_number
            self._next_number += count
            if error is None:
                if _blank(row):
                    continue
                if bad:
                    error = InvalidEvent("line", "not valid UTF-8")
            if error is not None:
                yield Line(self.source, number, raw, error=error)
                continue
            try:
                record = _csv_record(columns, row)
            except InvalidEvent as exc:
                yield Line(self.source, number, raw, error=exc)
            else:
                yield Line(self.source, number, raw, record=record)
