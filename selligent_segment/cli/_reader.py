"""Reading callback records from JSON Lines and CSV files, with FILE:LINE on every refusal.

JSON Lines: one record object per line, blank lines skipped (but counted).

CSV: RFC 4180 (comma-separated, ``"`` quoting, quoted cells may span lines), UTF-8 with an
optional byte-order mark. The first non-blank row is the header; its column names are
record fields (``type``, ``email``, ...). Every cell is text; a blank cell means the field
is absent; the ``properties``, ``integrations`` and ``context`` cells, when not blank,
hold a JSON object. A header that
cannot describe a valid record (unknown, duplicate or unnamed column, no ``type`` column,
neither an ``email`` nor a ``user_id`` column) makes the whole file unusable:
:class:`HeaderError`, raised when the input is opened.
"""

from __future__ import annotations

import csv
import enum
import json
import os
import re
import stat
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any, BinaryIO

import attrs
import orjson

from selligent_segment._errors import InvalidEvent, shown
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

    def __init__(self, source: str, column: str, reason: str, line: int = 1) -> None:
        self.source = source
        self.column = column
        self.reason = reason
        self.line = line  # the header's line (blank lines may come before it)
        super().__init__(f"{source}:{line}: {column}: {reason}")


_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1
_BLANKS = b" \t\r\n"  # JSON's whitespace


class _Duplicates(dict[str, Any]):
    """An object of the exact parse in which ``duplicate`` was given more than once."""

    duplicate: str


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) == len(pairs):
        return obj
    marked = _Duplicates(obj)
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            marked.duplicate = key
            break
        seen.add(key)
    return marked


def _integer(text: str) -> int | float:
    """A JSON integer as orjson reads it: an int within 64 bits, a float beyond (infinite
    when too long for a float); never Python's own digit-limit ValueError."""
    if len(text) <= 20:
        value = int(text)
        if _INT_MIN <= value <= _INT_MAX:
            return value
    return float(text)


def _exact(text: bytes) -> Any:
    """Parse ``text`` with the json module: slower than orjson, but it sees duplicate keys
    (objects with one are :class:`_Duplicates`) and reads over-long numbers as inf."""
    return json.loads(text, object_pairs_hook=_object, parse_int=_integer)


# Deeper than this, keys are neither counted nor searched for duplicates: records nested
# that deep are refused anyway (properties: at most 16 levels).
_MAX_DEPTH = 32


def _key_count(value: Any, depth: int = 0) -> int:
    """The number of object keys in parsed JSON (nested ones included, to _MAX_DEPTH)."""
    if depth > _MAX_DEPTH:
        return 0
    if value.__class__ is dict:
        return len(value) + sum(_key_count(v, depth + 1) for v in value.values())
    if value.__class__ is list:
        return sum(_key_count(v, depth + 1) for v in value)
    return 0


def _keys_of(data: Any) -> int:
    """:func:`_key_count` of a record, cheap for a flat one (only the object fields nest)."""
    if data.__class__ is not dict:
        return _key_count(data)
    extra = data.get("properties")
    count = len(data) + _key_count(extra) if extra.__class__ in (dict, list) else len(data)
    if "integrations" in data or "context" in data:  # the other objects (_key_count: any)
        count += _key_count(data.get("integrations")) + _key_count(data.get("context"))
    return count


def _first(
    value: Any, path: str, hit: Callable[[Any, str], str | None], depth: int = 0
) -> str | None:
    """The dotted path ``hit`` gives for the first value nested in ``value`` (depth first,
    ``path`` the path of ``value``; to _MAX_DEPTH) that it names, or None."""
    if depth > _MAX_DEPTH:
        return None
    found = hit(value, path)
    if found is not None:
        return found
    if isinstance(value, dict):
        items: Iterable[tuple[str, Any]] = (
            (f"{path}.{key}" if path else key, item) for key, item in value.items()
        )
    elif isinstance(value, list):
        items = ((f"{path}[{index}]", item) for index, item in enumerate(value))
    else:
        return None
    for where, item in items:
        found = _first(item, where, hit, depth + 1)
        if found is not None:
            return found
    return None


def _duplicate_at(value: Any, path: str) -> str | None:
    if isinstance(value, _Duplicates):
        return f"{path}.{value.duplicate}" if path else value.duplicate
    return None


def _duplicate(value: Any, path: str) -> str | None:
    """The dotted path of the first duplicated key in an exact parse, or None."""
    return _first(value, path, _duplicate_at)


class _Inexact(float):
    """A JSON integer beyond 64 bits, as the search for one reads it (see :func:`load_json`)."""


def _integer_marked(text: str) -> int | float:
    value = _integer(text)
    return _Inexact(value) if isinstance(value, float) else value


#: A run of digits no integer within 64 bits is longer than (19 digits reach -2**63).
_LONG_DIGITS = re.compile(rb"[0-9]{19}")


def _inexact_at(value: Any, path: str) -> str | None:
    return path if isinstance(value, _Inexact) else None


def _inexact(value: Any, path: str, depth: int = 0) -> str | None:
    """The path of the first integer beyond 64 bits nested in ``value``, or None."""
    return _first(value, path, _inexact_at, depth)


def _inexact_nested(text: bytes, field: str) -> str | None:
    """Where ``text`` nests an integer beyond 64 bits (which orjson reads as a float, its
    value changed), or None; the record's own fields are left to the record's checks
    (an id's refusal says more)."""
    try:
        data = json.loads(text, parse_int=_integer_marked)
    except (ValueError, RecursionError):
        return None
    if field != "line":
        return _inexact(data, field)
    if not isinstance(data, dict):
        return None
    for key, item in data.items():
        if isinstance(item, (dict, list)):
            found = _inexact(item, key, 1)
            if found is not None:
                return found
    return None


def load_json(text: bytes, field: str = "line") -> Any:
    """Parse one JSON text (a record line, or a CSV ``properties`` cell) as
    :func:`_load_json` does, refusing an integer beyond 64 bits nested in it, naming its
    path (orjson would read it as a float: its value changed without a word). The search
    costs a second parse, for a text holding a run of 19 digits only."""
    data = _load_json(text, field)
    if _LONG_DIGITS.search(text) is not None:
        found = _inexact_nested(text, field)
        if found is not None:
            raise InvalidEvent(
                shown(found, quote=False),
                "integer too large to read exactly (beyond 64 bits); give it as text",
            )
    return data


def _load_json(text: bytes, field: str) -> Any:
    """Parse one JSON text (a record line, or a CSV ``properties`` cell).

    Raises InvalidEvent naming ``field`` when it is not JSON, or naming the key (dotted
    from the top) that one object gives twice. orjson keeps the last of duplicate keys
    silently, so the keys of the text are counted -- without its blanks, every key ends
    in ``":`` (so does the odd ``\":`` inside a string: the count is never too low) --
    and compared with the keys parsed: only when they differ is the text parsed again,
    exactly, by the json module (duplicates are rare; the count costs about 0.5 us).
    """
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        if str(exc).startswith("str is not valid UTF-8"):
            raise InvalidEvent(field, _not_utf_8(text)) from None
        if not str(exc).startswith("number is infinity"):
            raise InvalidEvent(field, f"invalid JSON ({exc})") from None
        try:  # a number too long for a float: read it as inf and let its field refuse it
            data = _exact(text)
        except (ValueError, RecursionError):
            raise InvalidEvent(field, f"invalid JSON ({exc})") from None
    else:
        if text.translate(None, _BLANKS).count(b'":') == _keys_of(data):
            return data
        try:
            exact = _exact(text)
        except (ValueError, RecursionError):
            return data  # orjson read it: trust it
        else:
            data = exact
    found = _duplicate(data, "" if field == "line" else field)
    if found is not None:
        raise InvalidEvent(
            shown(found, quote=False), "duplicate key (the object gives it more than once)"
        )
    return data


def _not_utf_8(text: bytes) -> str:
    """Where ``text`` stops being UTF-8: the byte and its column (counted in bytes, from 1)."""
    try:
        text.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"not valid UTF-8 (byte 0x{text[exc.start]:02X} at column {exc.start + 1})"
    return "not valid UTF-8"


def _parse_json(source: str, number: int, raw: bytes, text: bytes) -> Line:
    try:
        return Line(source, number, raw, record=CallbackRecord.from_dict(load_json(text)))
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
    """Feeds decoded lines to :mod:`csv` and keeps the raw bytes of the current row.

    Lines given back with :meth:`read_again` are fed again before the stream goes on.
    """

    def __init__(self, stream: BinaryIO, owner: Input) -> None:
        self._stream = iter(stream)
        self._owner = owner
        self._first = True
        self._again: list[bytes] = []  # in reverse order: pop() gives the next one
        self.parts: list[bytes] = []
        self.bad_utf8 = False

    def __iter__(self) -> _PhysicalLines:
        return self

    def __next__(self) -> str:
        if self._again:
            raw = self._again.pop()  # counted in bytes_read when first read
        else:
            raw = next(self._stream)
            self._owner.bytes_read += len(raw)
        self.parts.append(raw)
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

    def take_first(self) -> bytes:
        """The first physical line of the row just read; the others will be read again.
        Starts the next row."""
        first, rest = (self.parts[0], self.parts[1:]) if self.parts else (b"", [])
        self._again.extend(reversed(rest))
        self.parts = []
        self.bad_utf8 = False
        return first


def _check_header(source: str, row: list[str]) -> tuple[str, ...]:
    columns = tuple(cell.strip() for cell in row)
    seen: set[str] = set()
    for index, name in enumerate(columns, start=1):
        if not name:
            raise HeaderError(source, f"column {index}", "has no name")
        if name not in FIELD_NAMES:
            known = ", ".join(sorted(FIELD_NAMES))
            column = shown(name, quote=False)
            raise HeaderError(source, column, f"unknown column (record fields: {known})")
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


#: The CSV columns whose cells hold JSON objects.
_JSON_CELLS = frozenset({"properties", "integrations", "context"})


def _csv_record(columns: tuple[str, ...], row: list[str]) -> CallbackRecord:
    if len(row) != len(columns):
        raise InvalidEvent("record", f"{len(row)} cells, but the header has {len(columns)} columns")
    data: dict[str, Any] = {}
    for name, cell in zip(columns, row, strict=True):
        if not cell.strip():
            continue
        if name in _JSON_CELLS:
            data[name] = load_json(cell.encode("utf-8", "surrogateescape"), name)
        else:
            data[name] = cell
    return CallbackRecord.from_dict(data)


def _quoting(line: str, limit: int) -> tuple[int, str] | None:
    """Where one physical CSV line goes wrong, read as :mod:`csv` does: the index of the
    cell and what is wrong with it, ``"after_quote"`` when text follows its closing quote,
    ``"unclosed"`` when the line ends inside it (quoted), ``"too_long"`` when it holds over
    ``limit`` characters as read (a doubled quote counts once); None when nothing is, or
    when a carriage return inside the line ends the row (csv's own message says that)."""
    cell, start, quoted, i, end, size = 0, True, False, 0, len(line.rstrip("\r\n")), 0
    while i < end:
        char = line[i]
        i += 1
        if quoted:
            if char == '"':
                if i < end and line[i] == '"':
                    i += 1  # a doubled quote inside the cell
                else:
                    quoted = False
                    if size > limit:
                        return cell, "too_long"
                    if i < end and line[i] != ",":
                        return cell, "after_quote"
                    continue
        elif char == ",":
            cell, start, size = cell + 1, True, 0
            continue
        elif char == '"' and start:
            quoted, start = True, False
            continue
        elif char in "\r\n":
            return None
        start = False
        size += 1
        if size > limit and not quoted:
            return cell, "too_long"
    # A quoted cell over the limit that never ends on this line is an unclosed quote too.
    return (cell, "unclosed") if quoted else None


def _csv_problem(
    columns: tuple[str, ...], first: str, message: str, where: tuple[str, int], lines: int
) -> InvalidEvent:
    """The error of a row :mod:`csv` refused with ``message``: its first physical line is
    ``first`` (``where``: the input's name and the line's number), the row ran over
    ``lines`` lines. A later line is named with its input: only the first line is the
    record (copied to ``--rejects``, whose ``.reasons`` number lines of their own)."""
    limit = csv.field_size_limit()
    problem = _quoting(first, limit)
    if problem is None:
        return InvalidEvent("line", f"not valid CSV ({message})")
    index, what = problem
    if what == "too_long" and index >= len(columns):
        return InvalidEvent(
            "record",
            f"cell {index + 1} is over {limit} characters (and the header has "
            f"{len(columns)} columns)",
        )
    column = columns[index] if index < len(columns) else "record"
    if what == "after_quote":
        return InvalidEvent(
            column,
            "text after the closing quote of a quoted cell; quote the whole cell and double "
            "the quotes inside it",
        )
    if what == "too_long":
        return InvalidEvent(
            column, f"a cell over {limit} characters, the longest a CSV cell may be"
        )
    if message.startswith("unexpected end of data"):
        reason = "unclosed quote (the quoted cell that starts on this line never ends)"
    elif message.startswith("field larger than field limit"):
        reason = f"unclosed quote, or a quoted cell over {limit} characters"
    else:
        source, number = where
        last = number + lines - 1
        reason = f"unclosed quote, or text after the closing quote on line {last} of {source}"
    return InvalidEvent(column, f"{reason}; the next lines are read as rows of their own")


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
        stream = open(self.path, "rb")  # noqa: SIM115 (a pipe's stays open, see below)
        try:
            info = os.fstat(stream.fileno())
            if not stat.S_ISREG(info.st_mode):
                # A pipe (<(zcat x.gz), a FIFO): read once, from this stream; what a check
                # read from it would never come back.
                self._stdin = stream
                if self.format is Format.CSV:
                    self._read_header(stream)
                return self
            self.size = info.st_size
            if self.format is Format.CSV:
                self._read_header(stream)
            else:
                stream.read(1)  # a directory fails here, not later
        except BaseException:
            stream.close()
            raise
        stream.close()
        return self

    def _read_header(self, stream: BinaryIO) -> None:
        lines = _PhysicalLines(stream, self)
        reader = csv.reader(lines, strict=True)
        self.bytes_read = 0
        self._next_number = 1
        while True:
            try:
                row = next(reader)
            except StopIteration:
                self.columns = None
                break
            except csv.Error as exc:
                reason = f"not valid CSV ({exc})"
                raise HeaderError(self.source, "header", reason, self._next_number) from None
            raw, count, bad = lines.take()
            line = self._next_number
            self._next_number += count
            if _blank(row):
                continue
            if bad:
                raise HeaderError(self.source, "header", "not valid UTF-8", line)
            try:
                self.columns = _check_header(self.source, row)
            except HeaderError as exc:
                raise HeaderError(exc.source, exc.column, exc.reason, line) from None
            self.header = raw
            break
        self._lines, self._reader = lines, reader

    def __iter__(self) -> Iterator[Line]:
        if self.path == STDIN:
            stream = self._stdin if self._stdin is not None else sys.stdin.buffer
            yield from self._iter(stream)
            return
        if self._stdin is not None:  # a pipe, opened (and its header read) by open()
            with self._stdin as stream:
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
            number = self._next_number
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                # Only the row's first line is refused: the lines a broken quote swallowed
                # are read again, as rows of their own (none disappears unreported).
                count = len(lines.parts)
                raw = lines.take_first()
                self._next_number += 1
                first = raw.decode("utf-8", "surrogateescape")
                error = _csv_problem(columns, first, str(exc), (self.source, number), count)
                yield Line(self.source, number, raw, error=error)
                continue
            raw, count, bad = lines.take()
            self._next_number += count
            if _blank(row):
                continue
            if bad:
                yield Line(self.source, number, raw, error=InvalidEvent("line", "not valid UTF-8"))
                continue
            try:
                record = _csv_record(columns, row)
            except InvalidEvent as exc:
                yield Line(self.source, number, raw, error=exc)
            else:
                yield Line(self.source, number, raw, record=record)
