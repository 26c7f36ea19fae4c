"""inputs/reports never raise: random bytes and mutated corpus messages always give a
Parsed whose problems name the location they were given."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from selligent_segment.inputs import Parsed
from selligent_segment.inputs.reports import Join, parse_arf, parse_dsn, parse_report

pytestmark = pytest.mark.slow

CORPUS = sorted((Path(__file__).parent / "corpus" / "reports").glob("*.eml"))
SAMPLES = [p.read_bytes() for p in CORPUS]
PARSERS = [parse_report, parse_dsn, parse_arf]
JOIN = Join(verp=r"bounces\+(?P<token>[^@]+)@", tenant="acme")


def _check(data: bytes) -> None:
    for parse in PARSERS:
        parsed = parse(data, "in.eml", JOIN)
        assert isinstance(parsed, Parsed)
        assert all(p.where.startswith("in.eml") for p in parsed.problems)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2000))
def test_random_bytes_never_make_a_parser_raise(data: bytes) -> None:
    _check(data)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SAMPLES)))
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["flip", "cut", "insert", "duplicate"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[at] = draw(st.integers(0, 255))
        elif kind == "cut":
            del data[at : at + draw(st.integers(1, 200))]
        elif kind == "insert":
            chunk = draw(
                st.sampled_from(
                    [
                        b"\n\n",
                        b"--",
                        b"\r\n",
                        b";",
                        b"=?utf-8?q?=FF?=",
                        b"\x00",
                        b"Status: 9.9.9\n",
                        b"Action: failed\n",
                        b"Content-Type: message/rfc822\n\n",
                        b"\xff\xfe",
                    ]
                )
            )
            data[at:at] = chunk
        else:
            end = at + draw(st.integers(1, 300))
            data[at:at] = data[at:end]
    return bytes(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_corpus_messages_never_make_a_parser_raise(data: bytes) -> None:
    _check(data)
