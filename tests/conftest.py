"""Shared test set-up: no test may touch the user's default spool file; a LocalSegment."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from selligent_segment.testing import LocalSegment
from selligent_segment.testing._local_postgres import LocalPostgres


@pytest.fixture(autouse=True)
def _private_state_dir(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """Point the default spool location (and its override) into a fresh directory."""
    state = tmp_path_factory.mktemp("state")
    monkeypatch.setenv("XDG_STATE_HOME", str(state))
    monkeypatch.delenv("SELLIGENT_SEGMENT_SPOOL", raising=False)
    return state


@pytest.fixture
def server() -> Iterator[LocalSegment]:
    """A LocalSegment on loopback that accepts any write key (a module may override it)."""
    with LocalSegment() as segment:
        yield segment


@pytest.fixture(scope="session")
def postgres() -> Iterator[LocalPostgres]:
    """One real PostgreSQL server for the session (started on first use; a test that
    needs it fails when it cannot start). Tests isolate themselves by schema."""
    with LocalPostgres() as server:
        yield server
