"""The record's ``integrations`` and ``context`` fields: validated naming the field, sent in
the track message (context merged with the library's), left out of the message id, read
from JSON Lines and CSV, through the memory and the durable spool."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from selligent_segment import CallbackRecord, Emitter, InvalidEvent, message_id, track_message
from selligent_segment.cli._reader import Format, read_records
from selligent_segment.testing import LocalSegment

BASE: dict[str, Any] = {"type": "opened", "email": "Ada@Example.com", "event_id": "o-1"}
INTEGRATIONS = {"All": False, "Mixpanel": True, "Google Analytics": {"clientId": "123.456"}}
CONTEXT = {"locale": "fr-FR", "campaign": {"source": "newsletter"}, "traits": {"name": "Ada"}}


def refused(data: dict[str, Any]) -> tuple[str, str]:
    with pytest.raises(InvalidEvent) as info:
        CallbackRecord.from_dict(data)
    return info.value.field, info.value.reason


# -- validation ----------------------------------------------------------------------------


def test_a_record_keeps_its_integrations_and_context_read_only() -> None:
    record = CallbackRecord.from_dict({**BASE, "integrations": INTEGRATIONS, "context": CONTEXT})
    assert record.integrations == INTEGRATIONS
    assert record.context == CONTEXT
    with pytest.raises(TypeError):
        record.context["locale"] = "x"  # type: ignore[index]
    assert CallbackRecord.from_dict(record.to_dict()) == record
    assert CallbackRecord("opened", email="a@b.co", context={"locale": "fr"}).context == {
        "locale": "fr"
    }


def test_empty_or_null_objects_are_absent() -> None:
    record = CallbackRecord.from_dict({**BASE, "integrations": {}, "context": None})
    assert "integrations" not in record.to_dict()
    assert "context" not in record.to_dict()
    assert record == CallbackRecord.from_dict(BASE)


@pytest.mark.parametrize(
    ("extra", "field", "reason"),
    [
        ({"integrations": ["Mixpanel"]}, "integrations", "expected an object, got list"),
        ({"integrations": {"Mixpanel": 1}}, "integrations.Mixpanel", "expected true, false or"),
        ({"integrations": {"Mixpanel": "yes"}}, "integrations.Mixpanel", "expected true, false"),
        ({"integrations": {" ": True}}, "integrations", "destination name ' ' is not non-blank"),
        ({"integrations": {"a\x1bb": True}}, "integrations", "destination name 'a\\x1bb'"),
        (
            {"integrations": {"GA": {"x": float("nan")}}},
            "integrations.GA.x",
            "nan cannot be sent as JSON",
        ),
        (
            {"integrations": {f"d{i}": True for i in range(101)}},
            "integrations",
            "more than 100 entries (101)",
        ),
        ({"context": "fr-FR"}, "context", "expected an object, got str"),
        ({"context": {"user-agent": "x"}}, "context", "key 'user-agent' is not a name"),
        ({"context": {"library": {"name": "me"}}}, "context.library", "is set by the library"),
        ({"context": {"integration": {}}}, "context.integration", "is set by the library"),
        ({"context": {"ip": "10.0.0.1"}}, "context.ip", "is set from the record's ip field"),
        ({"context": {"userAgent": "x"}}, "context.userAgent", "is set from the record's user_a"),
        ({"context": {"traits": "x"}}, "context.traits", "expected an object, got str"),
        (
            {"context": {"traits": {"email": "eve@example.com"}}},
            "context.traits.email",
            "is set from the record's email field",
        ),
        ({"context": {"page": {"at": {1, 2}}}}, "context.page.at", "a set cannot be sent"),
        # '$' would accept a trailing newline: a reserved key must not slip through so.
        ({"context": {"library\n": {"name": "me"}}}, "context", "key 'library\\n' is not a"),
        (
            {"context": {"traits\n": {"email": "eve@example.com"}}},
            "context",
            "key 'traits\\n' is not a name",
        ),
    ],
)
def test_bad_integrations_or_context_are_refused_naming_the_field(
    extra: dict[str, Any], field: str, reason: str
) -> None:
    got_field, got_reason = refused({**BASE, **extra})
    assert got_field == field
    assert got_reason.startswith(reason)


# -- the message ---------------------------------------------------------------------------


def test_integrations_are_sent_as_given_and_context_merged_with_the_librarys() -> None:
    message = track_message(
        {**BASE, "ip": "10.0.0.1", "integrations": INTEGRATIONS, "context": CONTEXT}
    )
    assert message["integrations"] == INTEGRATIONS
    context = message["context"]
    assert context["library"]["name"] == "selligent-segment"
    assert context["integration"]["name"] == "selligent"
    assert context["ip"] == "10.0.0.1"
    assert context["traits"] == {"name": "Ada", "email": "ada@example.com"}
    assert context["locale"] == "fr-FR"
    assert context["campaign"] == {"source": "newsletter"}
    assert "integrations" not in track_message(BASE)


def test_context_traits_without_an_email_are_sent_as_given() -> None:
    message = track_message(
        {"type": "opened", "user_id": "u-1", "context": {"traits": {"plan": "pro"}}}
    )
    assert message["context"]["traits"] == {"plan": "pro"}


@pytest.mark.parametrize("event_id", ["o-1", None])
def test_the_message_id_ignores_integrations_and_context(event_id: str | None) -> None:
    bare = {**BASE, "event_id": event_id}
    with_overrides = {**bare, "integrations": INTEGRATIONS, "context": CONTEXT}
    assert message_id(with_overrides, "acme") == message_id(bare, "acme")
    assert track_message(with_overrides, tenant="acme")["messageId"] == message_id(bare, "acme")


# -- files and the emitter -------------------------------------------------------------------


def test_json_lines_and_csv_carry_integrations_and_context(tmp_path: Path) -> None:
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text(
        '{"type": "open", "email": "ada@example.com", "integrations": {"All": false}, '
        '"context": {"locale": "fr-FR"}}\n'
        '{"type": "open", "email": "ada@example.com", "context": {"ip": "10.0.0.1"}}\n'
    )
    good, bad = read_records(str(jsonl))
    assert good.record is not None
    assert good.record.integrations == {"All": False}
    assert good.record.context == {"locale": "fr-FR"}
    assert bad.error is not None
    assert (bad.where, bad.error.field) == (f"{jsonl}:2", "context.ip")
    csv_file = tmp_path / "in.csv"
    csv_file.write_text(
        "type,email,integrations,context\n"
        'open,ada@example.com,"{""All"": false}","{""locale"": ""fr-FR""}"\n'
        "open,ada@example.com,,\n"
        'open,ada@example.com,"{""All"": false, ""All"": true}",\n'
    )
    first, plain, duplicate = read_records(str(csv_file), Format.CSV)
    assert first.record == good.record
    assert plain.record == CallbackRecord("open", email="ada@example.com")
    assert duplicate.error is not None
    assert duplicate.error.field == "integrations.All"


@pytest.mark.parametrize("spool", ["memory", "file"])
def test_overrides_reach_segment_through_either_spool(
    local_segment: LocalSegment, tmp_path: Path, spool: str
) -> None:
    where = "memory" if spool == "memory" else str(tmp_path / "spool.db")
    with Emitter("key-acme", endpoint=local_segment.url, spool=where) as emitter:
        emitter.emit({**BASE, "integrations": INTEGRATIONS, "context": CONTEXT})
        assert emitter.flush(timeout=10)
    (event,) = local_segment.events("key-acme")
    assert event["integrations"] == INTEGRATIONS
    assert event["context"]["locale"] == "fr-FR"
    assert event["context"]["traits"] == {"name": "Ada", "email": "ada@example.com"}
    assert event["messageId"] == message_id(BASE, "default")
