"""What Selligent's ``data/load`` answers: declared lists and their columns, and the judgement
of one load request, row by row. No sockets and no state here (``_selligent_server.py`` and
``_local_selligent.py`` have those).

One job: from a list's declared columns, the query (``keyFields``, ``fields``,
``data_import_option``, ``deduplication``) and the body, decide the request's status or
each row's fate, in the words of Selligent Marketing Cloud's REST API v1: a 400
``ValidationFailed`` for a request that cannot be read, else a 200 whose rows are valid or
listed in ``invalid_records`` (``InvalidFieldCount``, ``MaxStringLengthExceeded``,
``InvalidType``) with ``result_code`` ``Succeeded``, ``PartiallySucceeded`` or ``Failed``.

Guarantees: every value of a row is checked against its column (type and maximum length):
a Numeric is a 32-bit and a Long a 64-bit integer in ASCII digits, a Float a finite ASCII
decimal, a Text at most 4,000 UTF-16 units unless declared otherwise; an empty string is a
null and valid for every type but not for a key column;
``record_index`` counts data rows from 0 (a header row, when ``fields`` is not in the
query, is not counted: Selligent does not document which it does, and the loader always
sends ``fields``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime
from types import MappingProxyType
from typing import Any, Final, Literal, TypeAlias

import attrs
import orjson

from selligent_segment.testing._rules import Answer

__all__ = [
    "COLUMN_TYPES",
    "ColumnType",
    "LoadRequest",
    "SelligentColumn",
    "SelligentList",
    "judge_load",
    "selligent_error",
]

ColumnType: TypeAlias = Literal[
    "Boolean", "Numeric", "Long", "Float", "Date", "DateTime", "Text", "LongText", "Json"
]
#: The field types of a Selligent list.
COLUMN_TYPES: Final = (
    "Boolean",
    "Numeric",
    "Long",
    "Float",
    "Date",
    "DateTime",
    "Text",
    "LongText",
    "Json",
)
IMPORT_OPTIONS: Final = ("InsertAndUpdate", "OnlyInsert", "OnlyUpdate")
DEDUPLICATION: Final = ("ImportLastMatch", "ImportFirstMatch")

# ASCII only: ``\d`` takes any script's digits, and Python's int() and float() read them too.
_INTEGER = re.compile(r"[+-]?[0-9]+")
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
#: The range of each integer type: a Numeric is a 32-bit integer, a Long a 64-bit one.
INTEGER_RANGES: Final[Mapping[str, tuple[int, int]]] = MappingProxyType(
    {"Numeric": (-(2**31), 2**31 - 1), "Long": (-(2**63), 2**63 - 1)}
)
#: The maximum length of a Text column declared without one (UTF-16 units).
TEXT_MAX_LENGTH: Final = 4000
_BOOLEANS = frozenset({"true", "false", "1", "0"})
_WHAT: Final = {
    "Numeric": "a 32-bit integer",
    "Long": "a 64-bit integer",
    "Float": "a finite decimal number",
}


@attrs.frozen
class SelligentColumn:
    """A declared column: its name, Selligent field type and maximum length (checked for
    every type, on the text; None: :data:`TEXT_MAX_LENGTH` for a Text, none for the
    others)."""

    name: str
    type: ColumnType = "Text"
    max_length: int | None = None

    def __attrs_post_init__(self) -> None:
        if self.type not in COLUMN_TYPES:
            raise ValueError(f"unknown column type {self.type!r} (one of {COLUMN_TYPES})")
        if self.max_length is not None and self.max_length < 1:
            raise ValueError("max_length must be >= 1")


def _columns(value: Iterable[SelligentColumn | str]) -> tuple[SelligentColumn, ...]:
    return tuple(c if isinstance(c, SelligentColumn) else SelligentColumn(c) for c in value)


@attrs.frozen
class SelligentList:
    """A declared list (its API name and columns); a bare column name is a Text column."""

    name: str
    columns: tuple[SelligentColumn, ...] = attrs.field(converter=_columns)
    by_name: Mapping[str, SelligentColumn] = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        by_name = {c.name: c for c in self.columns}
        if len(by_name) != len(self.columns):  # names are case-sensitive, as sent
            raise ValueError(f"list {self.name!r} declares a column twice")
        object.__setattr__(self, "by_name", MappingProxyType(by_name))

    @classmethod
    def from_json(cls, name: str, obj: object) -> SelligentList:
        """From ``{"col": "Text"}``, ``{"col": {"type": "Text", "max_length": 50}}`` or
        ``["col", ...]`` (the process mode's ``--lists``)."""
        if isinstance(obj, list):
            return cls(name, tuple(str(c) for c in obj))
        if not isinstance(obj, dict):
            raise ValueError(f"list {name!r}: expected an object or an array of column names")
        columns: list[SelligentColumn] = []
        for col, spec in obj.items():
            if isinstance(spec, str):
                columns.append(SelligentColumn(col, spec))  # type: ignore[arg-type]
            elif isinstance(spec, dict):
                columns.append(
                    SelligentColumn(col, spec.get("type", "Text"), spec.get("max_length"))
                )
            else:
                raise ValueError(f"list {name!r}, column {col!r}: expected a type or an object")
        return cls(name, tuple(columns))


@attrs.frozen
class LoadRequest:
    """A readable load request: its columns (as sent), key columns, options and rows."""

    fields: tuple[str, ...]
    key_fields: tuple[str, ...]
    option: str
    first_match: bool
    rows: Sequence[Any] = attrs.field(repr=False)


def selligent_error(status: int, result_code: str | None, message: str) -> Answer:
    """A Selligent-shaped error answer: ``{"result_code"?, "errors": [message]}``."""
    body: dict[str, Any] = {"errors": [message]}
    if result_code is not None:
        body = {"result_code": result_code, **body}
    return Answer(status, orjson.dumps(body))


def _bad(message: str) -> Answer:
    return selligent_error(400, "ValidationFailed", message)


def read_load(
    query: Mapping[str, str], raw: bytes, declared: SelligentList | None
) -> LoadRequest | Answer:
    """The request's parts, or its 400 answer."""
    keys_text = query.get("keyfields")
    if not keys_text:
        return _bad("keyFields is required")
    key_fields = tuple(k.strip() for k in keys_text.split(","))
    option = query.get("data_import_option", "InsertAndUpdate")
    if option not in IMPORT_OPTIONS:
        return _bad(f"data_import_option must be one of {', '.join(IMPORT_OPTIONS)}")
    dedup = query.get("deduplication", "ImportLastMatch")
    if dedup not in DEDUPLICATION:
        return _bad(f"deduplication must be one of {', '.join(DEDUPLICATION)}")
    mode = query.get("mode", "Sync")
    if mode not in ("Sync", "Stream"):
        return _bad("mode must be Sync or Stream")
    try:
        rows = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return _bad("the body is not JSON")
    if not isinstance(rows, list) or not all(isinstance(r, list) for r in rows):
        return _bad("the body must be an array of arrays of strings")
    fields_text = query.get("fields")
    if fields_text:
        fields = tuple(f.strip() for f in fields_text.split(","))
    else:
        if not rows or not all(isinstance(v, str) for v in rows[0]):
            return _bad("no fields in the query and no header row in the body")
        fields = tuple(v.strip() for v in rows[0])
        rows = rows[1:]
    if len(set(fields)) != len(fields) or "" in fields:
        return _bad("fields names a column twice, or an empty one")
    missing = [k for k in key_fields if k not in fields]
    if missing:
        return _bad(f"keyFields {', '.join(missing)} not among the fields")
    if declared is not None:
        unknown = [f for f in fields if f not in declared.by_name]
        if unknown:
            return _bad(f"unknown field(s) of list {declared.name}: {', '.join(unknown)}")
    return LoadRequest(fields, key_fields, option, dedup == "ImportFirstMatch", rows)


def _type_ok(column_type: str, value: str) -> bool:
    if column_type in ("Text", "LongText"):
        return True
    if column_type in ("Numeric", "Long"):
        if _INTEGER.fullmatch(value) is None:
            return False
        try:
            number = int(value)
        except ValueError:  # over Python's 4,300 digits: out of range anyway
            return False
        low, high = INTEGER_RANGES[column_type]
        return low <= number <= high
    if column_type == "Float":
        return _DECIMAL.fullmatch(value) is not None and math.isfinite(float(value))
    if column_type == "Boolean":
        return value.lower() in _BOOLEANS
    try:
        if column_type == "Date":
            date.fromisoformat(value)
        elif column_type == "DateTime":
            datetime.fromisoformat(value[:-1] + "+00:00" if value.endswith("Z") else value)
        else:  # Json
            orjson.loads(value)
    except ValueError:
        return False
    return True


def check_rows(
    request: LoadRequest, declared: SelligentList | None
) -> tuple[list[list[str]], list[dict[str, Any]]]:
    """The valid rows (as sent, in order) and the ``invalid_records`` of the others.

    The strings of a row are checked by one ``str.join``, and only typed or bounded columns
    one by one (every column when the row is long enough to hold a Text value over
    :data:`TEXT_MAX_LENGTH`): the process mode loads about 100,000 rows of eight columns
    per second (1,000-row requests from two threads, measured on the shared 2-core CI
    machine).
    """
    fields = request.fields
    n = len(fields)
    columns = (
        [declared.by_name[f] for f in fields]
        if declared is not None
        else [SelligentColumn(f) for f in fields]
    )
    # Every column's checks, in order; most rows need only those of the typed or bounded
    # columns: a row whose text is short cannot hold a Text value over the default maximum.
    every = [
        (i, c.type, TEXT_MAX_LENGTH if c.type == "Text" and c.max_length is None else c.max_length)
        for i, c in enumerate(columns)
    ]
    checks = [
        every[i] for i, c in enumerate(columns) if c.type != "Text" or c.max_length is not None
    ]
    short = TEXT_MAX_LENGTH // 2  # a string's UTF-16 length is at most twice its length
    key_positions = [fields.index(k) for k in request.key_fields]
    valid: list[list[str]] = []
    invalid: list[dict[str, Any]] = []
    join = "".join
    for index, row in enumerate(request.rows):
        if type(row) is not list or len(row) != n:
            invalid.append(_invalid(index, "", "InvalidFieldCount", f"expected {n} values"))
            continue
        try:
            text = join(row)
        except TypeError:
            pos = next(i for i, v in enumerate(row) if not isinstance(v, str))
            invalid.append(_invalid(index, fields[pos], "InvalidType", "values must be strings"))
            continue
        problem = None
        size = len(text)
        row_checks = (
            checks if size <= short or (size <= TEXT_MAX_LENGTH and text.isascii()) else every
        )
        for pos, column_type, max_length in row_checks:
            value = row[pos]
            # Counted as .NET and SQL Server count: UTF-16 units (an emoji is 2).
            length = len(value) if value.isascii() else len(value.encode("utf-16-le")) // 2
            if max_length is not None and length > max_length:
                problem = _invalid(
                    index,
                    fields[pos],
                    "MaxStringLengthExceeded",
                    f"{length} characters, at most {max_length}",
                )
                break
            if value and not _type_ok(column_type, value):
                what = _WHAT.get(column_type)
                message = f"not a {column_type}" + (f" ({what})" if what else "")
                problem = _invalid(index, fields[pos], "InvalidType", message)
                break
        if problem is None:
            for pos in key_positions:
                if not row[pos]:
                    problem = _invalid(index, fields[pos], "InvalidType", "a key field is empty")
                    break
        if problem is not None:
            invalid.append(problem)
            continue
        valid.append(row)
    return valid, invalid


def _invalid(index: int, field: str, code: str, message: str) -> dict[str, Any]:
    return {
        "record_index": index,
        "field_name": field,
        "message": message,
        "validation_code": code,
    }


def load_answer(
    inserted: int, updated: int, duplicates: int, invalid: list[dict[str, Any]], n_rows: int
) -> Answer:
    """The 200 answer of a judged load."""
    failed = len(invalid)
    if not failed:
        code = "Succeeded"
    elif failed < n_rows:
        code = "PartiallySucceeded"
    else:
        code = "Failed"
    body = {
        "result_code": code,
        "number_of_inserted_records": inserted,
        "number_of_updated_records": updated,
        "number_of_failed_records": failed,
        "number_of_duplicate_records": duplicates,
        "invalid_records": invalid,
        "errors": [],
    }
    return Answer(200, orjson.dumps(body))


def judge_load(
    query: Mapping[str, str], raw: bytes, declared: SelligentList | None
) -> tuple[LoadRequest | None, list[list[str]], list[dict[str, Any]], Answer | None]:
    """The request, its valid rows, its invalid records, and its 400 answer if unreadable."""
    request = read_load(query, raw, declared)
    if isinstance(request, Answer):
        return None, [], [], request
    valid, invalid = check_rows(request, declared)
    return request, valid, invalid, None
