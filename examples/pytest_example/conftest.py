"""Fixtures: the emitter the production factory builds, pointed at the local Segment
stand-in through the environment. The ``local_segment`` fixture itself comes with the
package (a pytest plugin): no import needed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from segment_hooks import make_emitter

from selligent_segment import Emitter, RetryPolicy
from selligent_segment.testing import LocalSegment

KEYS = {"acme": "key-acme", "globex": "key-globex"}


@pytest.fixture
def emitter(
    local_segment: LocalSegment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Emitter]:
    """What ``make_emitter()`` builds in production, with the two tenants' keys in a JSON
    file and every request going to ``local_segment``; retries fast enough for tests."""
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps(KEYS))
    monkeypatch.delenv("SEGMENT_WRITE_KEY", raising=False)
    monkeypatch.setenv("SELLIGENT_SEGMENT_WRITE_KEYS", str(keys))
    monkeypatch.setenv("SELLIGENT_SEGMENT_ENDPOINT", local_segment.url)
    fast = RetryPolicy(initial_backoff=0.01, max_backoff=0.05, jitter=False)
    with make_emitter(retry=fast) as emitter:
        yield emitter
