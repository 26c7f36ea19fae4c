"""element_spans (destination/_array.py): the top-level elements of a JSON array body,
exactly, at any depth, and the faults that stop the scan."""

from __future__ import annotations

import json
from itertools import islice
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from selligent_segment.destination._array import element_spans


def elements(body: bytes) -> list[bytes]:
    return [body[start:end] for start, end in element_spans(body)]


def test_each_element_is_found_with_its_exact_bytes() -> None:
    body = b' [ 1 , "a,]\\"[{" ,\n{"x": [1, {}], "y": "}"}\t, [] , null ]\n'
    assert elements(body) == [b"1", b'"a,]\\"[{"', b'{"x": [1, {}], "y": "}"}', b"[]", b"null"]
    assert elements(b"[]") == []
    assert elements(b"[ \n ]") == []


def test_an_element_deeper_than_any_parser_reads_is_found_whole() -> None:
    deep = b'{"a":' * 100_000 + b"1" + b"}" * 100_000
    body = b'[{"n":1},' + deep + b',"x"]'
    assert elements(body) == [b'{"n":1}', deep, b'"x"']


def test_a_broken_element_is_still_found_for_its_parser_to_refuse() -> None:
    assert elements(b"[NaN, 1 2, \xed\xa0\xbd]") == [b"NaN", b"1 2", b"\xed\xa0\xbd"]


@pytest.mark.parametrize(
    ("body", "fault"),
    [
        (b'{"a": 1}', "not a JSON array"),
        (b"", "not a JSON array"),
        (b"[1,]", "an empty element"),
        (b"[,1]", "an empty element"),
        (b"[1,,2]", "an empty element"),
        (b"[1, [2]", "the array is not closed"),
        (b'[1, "abc]', "an unterminated string"),
        (b"[1] x", "text after the array"),
        (b"[1}", "the array is not closed by ]"),
    ],
)
def test_a_fault_in_the_array_itself_is_named(body: bytes, fault: str) -> None:
    with pytest.raises(ValueError, match=f"^{fault}$"):
        elements(body)


def test_the_elements_before_a_fault_are_yielded_first() -> None:
    spans = element_spans(b'[{"first": 1}, 2, "unterminated')
    assert list(islice(spans, 2)) == [(1, 13), (15, 16)]
    with pytest.raises(ValueError, match="unterminated"):
        next(spans)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_JSON, max_size=6), st.sampled_from([None, 0, 2]), st.booleans())
def test_spans_read_back_as_the_elements_whatever_the_layout(
    values: list[Any], indent: int | None, ascii_only: bool
) -> None:
    body = json.dumps(values, indent=indent, ensure_ascii=ascii_only).encode()
    assert [json.loads(raw) for raw in elements(body)] == values
