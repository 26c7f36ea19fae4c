"""Fixtures: an Emitter pointed at the local Segment stand-in. The ``local_segment``
fixture itself comes with the package (a pytest plugin): no import needed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from selligent_segment import Emitter, RetryPolicy
from selligent_segment.testing import LocalSegment

KEYS = {"acme": "key-acme", "globex": "key-globex"}


@pytest.fixture
def emitter(local_segment: LocalSegment) -> Iterator[Emitter]:
    """An Emitter delivering to ``local_segment``, with retries fast enough for tests."""
    fast = RetryPolicy(initial_backoff=0.01, max_backoff=0.05, jitter=False)
    with Emitter(write_keys=KEYS, endpoint=local_segment.url, retry=fast) as emitter:
        yield emitter
