"""The pytest plugin of ``selligent_segment.testing``: the ``local_segment`` and
``local_selligent`` fixtures.

One job: give every test that asks for ``local_segment`` a started
:class:`~selligent_segment.testing.LocalSegment`. It is registered through the ``pytest11``
entry point (``pyproject.toml``), so after ``pip install selligent-segment`` the fixture is
there without a ``conftest.py``; ``-p no:selligent_segment.testing._plugin`` turns it off.

Guarantee: each test gets its own server, accepting any write key, and it is stopped after
the test (its port closed, its connections shut) whether the test passed or not.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from selligent_segment.testing._local_segment import LocalSegment
from selligent_segment.testing._local_selligent import LocalSelligent

__all__ = ["local_segment", "local_selligent"]


@pytest.fixture
def local_segment() -> Iterator[LocalSegment]:
    """A started :class:`LocalSegment` accepting any write key; stopped after the test."""
    with LocalSegment() as server:
        yield server


@pytest.fixture
def local_selligent() -> Iterator[LocalSelligent]:
    """A started :class:`LocalSelligent` accepting any ``key:secret``, any organization and
    any list (declare lists with ``declare_list``); stopped after the test."""
    with LocalSelligent() as server:
        yield server
