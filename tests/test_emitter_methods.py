"""The six per-kind methods: typed keyword-only parameters, exactly the record fields their
kind accepts; a typo is a TypeError at call time and an error under mypy."""

from __future__ import annotations

import inspect
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from _delivery import FAST_RETRY, QUICK, record

from selligent_segment import Emitter, EventKind, InvalidEvent, track_message
from selligent_segment._record import _NOT_FOR, _PROPERTY_FIELDS, FIELD_NAMES
from selligent_segment.testing import LocalSegment

METHODS = {kind: getattr(Emitter, kind.value) for kind in EventKind}


@pytest.mark.parametrize("kind", list(EventKind), ids=lambda k: k.value)
def test_each_method_takes_exactly_the_fields_of_its_kind_as_keywords(kind: EventKind) -> None:
    parameters = list(inspect.signature(METHODS[kind]).parameters.values())
    assert parameters[0].name == "self"
    assert all(p.kind is p.KEYWORD_ONLY and p.default is None for p in parameters[1:])
    assert {p.name for p in parameters[1:]} == FIELD_NAMES - {"type"} - _NOT_FOR[kind]
    assert all(p.annotation is not inspect.Parameter.empty for p in parameters[1:])
    assert METHODS[kind].__doc__


@pytest.fixture
def emitter(local_segment: LocalSegment) -> Any:
    with Emitter("key-acme", endpoint=local_segment.url) as emitter:
        yield emitter


def test_a_misspelt_keyword_is_a_type_error_naming_it_and_nothing_is_sent(
    emitter: Emitter, local_segment: LocalSegment
) -> None:
    with pytest.raises(TypeError, match="unexpected keyword argument 'bounce_typ'"):
        emitter.bounced(email="ada@example.com", bounce_typ="hard")  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="unexpected keyword argument 'link_url'"):
        emitter.opened(email="ada@example.com", link_url="https://x.test")  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="positional"):
        emitter.delivered("ada@example.com")  # type: ignore[misc]
    assert emitter.flush(timeout=10)
    assert local_segment.request_count == 0
    assert emitter.stats().accepted == 0


def test_a_method_sends_the_message_of_the_same_record_as_a_dict(
    emitter: Emitter, local_segment: LocalSegment
) -> None:
    emitter.bounced(
        email="Ada@Example.com",
        user_id=None,  # None is absent
        event_id=8812,
        timestamp="2026-11-20T10:01:00Z",
        bounce_type="HARD",
        smtp_status=550,
        context={"locale": "fr"},
        integrations={"All": False},
    )
    record = {
        "type": "bounced",
        "email": "Ada@Example.com",
        "event_id": 8812,
        "timestamp": "2026-11-20T10:01:00Z",
        "bounce_type": "HARD",
        "smtp_status": 550,
        "context": {"locale": "fr"},
        "integrations": {"All": False},
    }
    assert emitter.flush(timeout=10)
    (event,) = local_segment.events()
    assert event == track_message(record)


def test_invalid_values_are_still_invalid_events(emitter: Emitter) -> None:
    with pytest.raises(InvalidEvent) as refused:
        emitter.bounced(email="ada@example.com", bounce_type="medium")
    assert refused.value.field == "bounce_type"


MYPY_SNIPPET = """
from selligent_segment import Emitter

def hook(emitter: Emitter) -> None:
    emitter.bounced(tenant="acme", email="a@b.co", event_id=1, bounce_type="hard",
                    smtp_status="5.1.1", context={"locale": "fr"})
    emitter.link_clicked(email="a@b.co", link_url="https://x.test", link_id=3)
    emitter.unsubscribed(user_id="u-1", list_id="weekly")
    emitter.bounced(tenant="acme", email="a@b.co", bounce_typ="hard")
    emitter.opened(email="a@b.co", list_id="weekly")
    emitter.delivered(email=42)
"""


@pytest.mark.slow  # a mypy run: seconds
def test_mypy_flags_a_misspelt_or_foreign_keyword_and_accepts_correct_calls(
    tmp_path: Path,
) -> None:
    from mypy import api

    snippet = tmp_path / "hooks.py"
    snippet.write_text(textwrap.dedent(MYPY_SNIPPET))
    out, err, status = api.run(
        ["--strict", "--no-error-summary", "--cache-dir", str(tmp_path / "cache"), str(snippet)]
    )
    errors = [line for line in out.splitlines() if ": error:" in line]
    assert status == 1, out + err
    assert [line.split(":")[1] for line in errors] == ["9", "10", "11"], out
    assert 'Unexpected keyword argument "bounce_typ"' in errors[0]
    assert 'Unexpected keyword argument "list_id"' in errors[1]
    assert 'incompatible type "int"' in errors[2]


COMMON = "``tenant``, ``email`` and/or ``user_id``"


@pytest.mark.parametrize("kind", list(EventKind), ids=lambda k: k.value)
def test_the_common_keywords_are_documented_once_and_each_method_names_its_own(
    kind: EventKind,
) -> None:
    assert Emitter.__doc__ is not None
    assert COMMON in Emitter.__doc__
    doc = METHODS[kind].__doc__
    assert doc is not None
    assert COMMON not in doc  # the shared paragraph lives on the class only
    assert "Returns and raises what :meth:`emit` does" in doc  # its own guarantee
    assert "common keywords" in doc
    own = [name for name, kinds in _PROPERTY_FIELDS.items() if kinds and kind in kinds]
    assert [name for name in own if f"``{name}``" not in doc] == []


def test_set_write_key_with_a_single_key_resumes_every_tenant_it_paused() -> None:
    """With one write key, records may name any tenant, each paused on its own at a 401:
    ``set_write_key`` resumed the default tenant only, and the others waited for the
    30 s re-check (a close meanwhile reported their events unsent)."""
    with LocalSegment(write_keys=["old"]) as server:
        em = Emitter("old", endpoint=server.url, retry=FAST_RETRY, batch=QUICK)
        try:
            server.revoke_write_key("old")
            for i in range(3):
                em.emit(record(i, "acme"))
            deadline = time.monotonic() + 10
            while _paused(em, "acme") is None and time.monotonic() < deadline:
                em.flush(0.05)  # until the 401 has paused it
            assert _paused(em, "acme") is not None
            server.add_write_key("new")
            em.set_write_key("acme", "new")
            assert em.flush(10)  # well before the 30 s re-check
        finally:
            em.close(1)
        assert server.accepted_count == 3


def _paused(em: Emitter, tenant: str) -> str | None:
    stats = em.stats().tenants.get(tenant)
    return None if stats is None else stats.paused
