"""Fixtures: a local Segment stand-in and an Emitter pointed at it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from selligent_segment import Emitter, RetryPolicy
from selligent_segment.testing import (
    LocalSegment,
    local_segment,  # noqa: F401 - registers the fixture
)

KEYS = {"acme": "key-acme", "globex": "key-globex"}


@pytest.fixture
def emitter(local_segment: LocalSegment) -> Iterator[Emitter]:  # noqa: F811
    """An Emitter delivering to ``local_segment``, with retries fast enough for tests."""
    fast = RetryPolicy(initial_backoff=0.01, max_backoff=0.05, jitter=False)
    with Emitter(write_keys=KEYS, endpoint=local_segment.url, retry=fast) as emitter:
        yield emitter
