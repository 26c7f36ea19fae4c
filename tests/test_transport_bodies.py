"""BatchBodies (delivery/_transport.py): a batch's bodies that keep their joined array, so
a batch sent again is not checked or joined again; proven to build the very bytes, and
raise the very errors, that a plain sequence of the same bodies does."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from selligent_segment.delivery import _transport
from selligent_segment.delivery._transport import (
    MAX_BATCH_MESSAGES,
    MAX_MESSAGE_BYTES,
    BatchBodies,
    build_body,
)

SENT_AT = datetime(2024, 5, 17, 8, 30, 1, 250_000, tzinfo=timezone.utc)


def outcome(bodies: list[bytes] | BatchBodies, key: str = "key") -> bytes | str:
    """The body built, or the error raised, as text."""
    try:
        return build_body(bodies, key, SENT_AT)
    except ValueError as exc:  # BatchTooLarge is a ValueError
        return f"{type(exc).__name__}: {exc}"


@given(st.lists(st.binary(max_size=40), max_size=40), st.text(min_size=1, max_size=20))
def test_batch_bodies_build_what_a_plain_list_builds(bodies: list[bytes], key: str) -> None:
    cached = BatchBodies(bodies)
    assert outcome(cached, key) == outcome(bodies, key)
    assert outcome(cached, key) == outcome(bodies, key)  # and again, from the kept array
    assert list(cached) == bodies


@pytest.mark.parametrize(
    "bodies",
    [
        [],
        [b"{}"] * (MAX_BATCH_MESSAGES + 1),
        [b"{}", b"x" * (MAX_MESSAGE_BYTES + 1)],
        [b"x" * 30_000] * 20,  # over the request limit
    ],
    ids=["empty", "too many", "a message too large", "a batch too large"],
)
def test_batch_bodies_refuse_what_a_plain_list_refuses(bodies: list[bytes]) -> None:
    plain = outcome(bodies)
    assert isinstance(plain, str)
    assert outcome(BatchBodies(bodies)) == plain


def test_the_array_is_joined_once_however_often_the_body_is_built(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[int] = []
    joined = _transport._joined

    def counted(bodies: BatchBodies) -> bytes:
        calls.append(len(bodies))
        return joined(bodies)

    monkeypatch.setattr(_transport, "_joined", counted)
    bodies = BatchBodies([b'{"a":1}', b'{"b":2}'])
    first = build_body(bodies, "key", SENT_AT)
    later = build_body(bodies, "key", datetime(2024, 5, 17, 8, 31, tzinfo=timezone.utc))
    assert calls == [2]
    assert first.replace(b"08:30:01.250", b"08:31:00.000") == later  # only sentAt differs
