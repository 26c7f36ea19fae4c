"""The top-level elements of a JSON array body, found without parsing them.

One job: :func:`element_spans` says where each element of ``[e0, e1, ...]`` starts and
ends in the body's bytes, at any nesting depth (a flat scan: strings skipped whole,
brackets counted, never recursion), so that one element a parser refuses (nested deeper
than it reads, a ``NaN``, invalid UTF-8) can be refused alone and its neighbours read,
and so that the first element's exact bytes can be checked against a signature. It does
not validate an element: the caller parses each one.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

__all__ = ["element_spans"]

_SPACE = b" \t\r\n"
# A whole string (escapes included), a bracket or a comma; a lone quote is an
# unterminated string. Numbers, literals and whitespace between them are skipped.
_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{},"]', re.DOTALL)
_QUOTE, _COMMA, _CLOSE = ord('"'), ord(","), ord("]")
_OPENERS, _CLOSERS = b"[{", b"]}"


def _stripped(body: bytes, start: int, end: int) -> tuple[int, int] | None:
    while start < end and body[start] in _SPACE:
        start += 1
    while end > start and body[end - 1] in _SPACE:
        end -= 1
    return (start, end) if start < end else None


def element_spans(body: bytes) -> Iterator[tuple[int, int]]:
    """``(start, end)`` of each top-level element of the JSON array ``body``, in order,
    surrounding whitespace left out. Lazy: the spans found before a fault are yielded,
    then ``ValueError`` names the fault (not an array, an unterminated string, an empty
    element, the array not closed, text after it)."""
    start = len(body) - len(body.lstrip(_SPACE))
    if body[start : start + 1] != b"[":
        raise ValueError("not a JSON array")
    depth = count = 0
    begin = start + 1
    for match in _TOKEN.finditer(body, start):
        char = body[match.start()]
        if char == _QUOTE:
            if match.end() - match.start() == 1:
                raise ValueError("an unterminated string")
        elif char in _OPENERS:
            depth += 1
        elif char in _CLOSERS:
            depth -= 1
            if depth == 0:
                if char != _CLOSE:
                    raise ValueError("the array is not closed by ]")
                span = _stripped(body, begin, match.start())
                if span is not None:
                    yield span
                elif count:
                    raise ValueError("an empty element")
                if body[match.end() :].strip(_SPACE):
                    raise ValueError("text after the array")
                return
        elif char == _COMMA and depth == 1:
            span = _stripped(body, begin, match.start())
            if span is None:
                raise ValueError("an empty element")
            count += 1
            yield span
            begin = match.end()
    raise ValueError("the array is not closed")
