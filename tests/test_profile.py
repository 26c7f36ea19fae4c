"""Opt-in profile updates (_profile.py, the identify in _mapping.py, the Emitter's part):
end to end over loopback into LocalSegment, in memory and through the spool file."""

from __future__ import annotations

import contextlib
import sqlite3
from datetime import datetime
from pathlib import Path
from typing import Any

import attrs
import orjson
import pytest
from _delivery import QUICK, emitter, fake_emitter

from selligent_segment import (
    ConfigurationError,
    Emitter,
    EmitterConfig,
    InvalidEvent,
    message_id,
)
from selligent_segment._mapping import EncodedMessage, encode_fields, profile_message
from selligent_segment._naming import EventNaming
from selligent_segment._profile import PROFILE_UPDATE, ProfileUpdates
from selligent_segment._record import _KIND_ALIASES, journal_form, normalize, revive
from selligent_segment.spool._sqlite import SqliteSpool
from selligent_segment.testing import LocalSegment
from selligent_segment.testing._rules import item_problem

UNSUB = {
    "type": "unsubscribed",
    "tenant": "acme",
    "email": "Ada@Example.com",
    "user_id": "u-1",
    "event_id": "ev-u",
    "timestamp": "2026-11-20T10:00:00.250Z",
}
HARD = {
    "type": "bounced",
    "tenant": "acme",
    "email": "nobody@example.net",
    "event_id": "ev-b",
    "bounce_type": "hard",
    "timestamp": "2026-11-20T10:01:00Z",
}
SOFT = dict(HARD, event_id="ev-s", bounce_type="soft")
SPAM = {
    "type": "complaint",
    "tenant": "globex",
    "email": "ken@example.net",
    "user_id": "u-77",
    "event_id": "ev-c",
    "timestamp": "2026-11-20T10:05:00Z",
}
OPEN = {"type": "open", "tenant": "acme", "email": "ada@example.com", "event_id": "ev-o"}


def _update(record: dict[str, Any]) -> dict[str, Any]:
    update = ProfileUpdates().update_for(normalize(record))
    assert update is not None
    return update


def _identifies(server: LocalSegment) -> list[dict[str, Any]]:
    return [e for e in server.accepted if e["type"] == "identify"]


def test_profile_updates_are_off_by_default(local_segment: LocalSegment) -> None:
    assert EmitterConfig(write_key="k").profile_updates is None
    with emitter(local_segment) as em:
        for record in (UNSUB, HARD, SPAM):
            em.emit(record)
        assert em.flush(10)
    assert [e["type"] for e in local_segment.accepted] == ["track"] * 3


def test_unsubscribe_hard_bounce_and_complaint_set_traits_on_the_same_user(
    local_segment: LocalSegment,
) -> None:
    with emitter(local_segment, profile_updates=True) as em:
        for record in (UNSUB, HARD, SOFT, SPAM, OPEN):
            em.emit(record)
        assert em.flush(10)
    identifies = {e["messageId"]: e for e in _identifies(local_segment)}
    assert len(identifies) == 3  # not the soft bounce, not the open
    unsub = identifies[profile_message(UNSUB, _update(UNSUB))["messageId"]]
    assert unsub["userId"] == "u-1"
    assert "anonymousId" not in unsub
    assert unsub["traits"] == {
        "email": "ada@example.com",
        "email_unsubscribed": True,
        "email_unsubscribed_at": "2026-11-20T10:00:00.250Z",
    }
    assert unsub["timestamp"] == "2026-11-20T10:00:00.250Z"
    by_trait = {next(k for k in e["traits"] if k.endswith("_at")): e for e in identifies.values()}
    bounce = by_trait["email_bounced_at"]
    assert bounce["anonymousId"] == "nobody@example.net"  # the track's identity
    assert bounce["traits"]["email_bounced"] is True
    assert bounce["traits"]["email_bounce_type"] == "hard"
    spam = by_trait["email_marked_as_spam_at"]
    assert spam["userId"] == "u-77"
    assert spam["traits"]["email_marked_as_spam"] is True
    # Each identify goes with the tenant's own write key, like its track.
    assert [e["type"] for e in local_segment.events("key-globex")] == ["track", "identify"]
    for event in identifies.values():
        assert item_problem(event) is None
        assert event["context"]["library"]["name"] == "selligent-segment"


def test_the_identify_id_is_derived_from_the_tracks_and_replays_deduplicate(
    local_segment: LocalSegment,
) -> None:
    update = _update(HARD)
    first = profile_message(HARD, update)["messageId"]
    assert profile_message(dict(HARD, bounce_reason="changed"), update)["messageId"] == first
    assert profile_message(dict(HARD, tenant="globex"), update)["messageId"] != first
    assert first != message_id(HARD)
    with emitter(local_segment, profile_updates=True) as em:
        em.emit(HARD)
        em.emit(HARD)  # a replay
        assert em.flush(10)
    assert local_segment.duplicates == 2
    assert {e["messageId"] for e in local_segment.accepted} == {message_id(HARD), first}


def test_a_record_without_event_id_gives_the_same_identify_id_on_replay() -> None:
    record = {k: v for k, v in UNSUB.items() if k != "event_id"}
    update = _update(record)
    ids = {profile_message(dict(record), update)["messageId"] for _ in range(2)}
    assert len(ids) == 1
    # The same fields with the update encode as the identify, whatever the naming.
    marked = normalize(record)
    marked[PROFILE_UPDATE] = update
    encoded = encode_fields(marked, "acme", EventNaming(profile="segment-spec"))
    assert encoded.message_id in ids
    assert encoded.message_id != message_id(record)


def test_custom_trait_names_and_kinds_turned_off(local_segment: LocalSegment) -> None:
    policy = ProfileUpdates(
        unsubscribed="unsubscribedFromEmail",
        bounced=None,
        marked_as_spam="spam",
        time_suffix=None,
    )
    with emitter(local_segment, profile_updates=policy) as em:
        for record in (UNSUB, HARD, SPAM):
            em.emit(record)
        assert em.flush(10)
    traits = sorted((e["traits"] for e in _identifies(local_segment)), key=str)
    assert traits == [
        {"email": "ada@example.com", "unsubscribedFromEmail": True},
        {"email": "ken@example.net", "spam": True},
    ]


def test_emit_many_counts_records_not_identifies(local_segment: LocalSegment) -> None:
    with emitter(local_segment, profile_updates=True) as em:
        result = em.emit_many([UNSUB, {"type": "open"}, HARD, SOFT])
        assert result.accepted == 3
        assert [i for i, _ in result.refused] == [1]
        assert em.flush(10)
        assert em.stats().delivered == 5  # three tracks, two identifies
    assert len(_identifies(local_segment)) == 2


def test_the_identify_goes_through_the_spool_file_and_survives_a_restart(
    local_segment: LocalSegment, tmp_path: Path
) -> None:
    spool = tmp_path / "spool.db"
    local_segment.outage(503)
    first = emitter(local_segment, spool=spool, profile_updates=True)
    first.emit(UNSUB)
    first.close(timeout=0)
    local_segment.end_outage()
    # A process with profile updates off still sends the identify it finds in the file.
    with emitter(local_segment, spool=spool, batch=QUICK) as second:
        assert second.flush(10)
    assert sorted(e["type"] for e in local_segment.accepted) == ["identify", "track"]


@pytest.mark.parametrize(
    ("options", "setting"),
    [
        ({"unsubscribed": "has space"}, "profile_updates.unsubscribed"),
        ({"bounced": ""}, "profile_updates.bounced"),
        ({"bounce_type": 3}, "profile_updates.bounce_type"),
        ({"time_suffix": "-at"}, "profile_updates.time_suffix"),
        ({"bounced": "email"}, "profile_updates"),
        ({"bounced": "x", "marked_as_spam": "x"}, "profile_updates"),
    ],
)
def test_invalid_trait_names_are_refused_naming_the_setting(
    options: dict[str, Any], setting: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        ProfileUpdates(**options)
    assert caught.value.setting == setting


def test_profile_updates_setting_accepts_only_a_flag_or_a_policy() -> None:
    assert EmitterConfig(write_key="k", profile_updates=True).profile_updates == ProfileUpdates()
    assert EmitterConfig(write_key="k", profile_updates=False).profile_updates is None
    with pytest.raises(ConfigurationError, match="profile_updates: expected True"):
        Emitter("k", profile_updates="yes", handle_sigterm=False)  # type: ignore[arg-type]


def test_the_identify_keeps_the_records_integrations_but_not_its_context() -> None:
    # The caller's routing applies to the identify too: excluded destinations must not get
    # the email traits. The record's context annotates the event: it stays on the track.
    record = dict(
        UNSUB,
        integrations={"All": False, "Mixpanel": True},
        context={"locale": "fr-FR", "traits": {"plan": "pro"}},
    )
    update = _update(record)
    identify = profile_message(record, update)
    assert identify["integrations"] == {"All": False, "Mixpanel": True}
    assert set(identify["context"]) == {"library", "integration"}
    marked = normalize(record)
    marked[PROFILE_UPDATE] = update
    encoded = orjson.loads(encode_fields(marked, "acme", EventNaming()).body)
    assert encoded["type"] == "identify"
    assert encoded["integrations"] == {"All": False, "Mixpanel": True}
    # Routing is not content: the identify id is the one without integrations.
    assert identify["messageId"] == profile_message(UNSUB, update)["messageId"]
    without = profile_message(UNSUB, update)
    assert "integrations" not in without


def test_every_setting_of_the_policy_is_checked_by_its_own_validator() -> None:
    # attrs.validate() re-checks an instance: it sees only field validators.
    fields = [f for f in attrs.fields(ProfileUpdates) if f.init]
    assert [f.name for f in fields if f.validator is None] == []
    policy = ProfileUpdates()
    object.__setattr__(policy, "time_suffix", "-at")
    with pytest.raises(ConfigurationError) as caught:
        attrs.validate(policy)
    assert caught.value.setting == "profile_updates.time_suffix"


def _previous_release_revive(raw: object) -> dict[str, Any]:
    """``revive`` as the previous release has it (commit 601b90b, before profile updates),
    verbatim: a journaled record's type must be a kind or one of its aliases."""
    if not isinstance(raw, dict):
        raise InvalidEvent("record", "not a journaled record")
    name = raw.get("type")
    kind = _KIND_ALIASES.get(name) if isinstance(name, str) else None
    if kind is None:
        raise InvalidEvent("type", "not a journaled record's event type")
    raw["type"] = kind
    moment = raw.get("timestamp")
    if moment is not None:
        try:
            raw["timestamp"] = datetime.fromisoformat(moment)
        except (TypeError, ValueError):
            raise InvalidEvent("timestamp", "not a journaled record's timestamp") from None
    return raw


def _previous_release_decode(payload: bytes | memoryview) -> EncodedMessage:
    """The previous release's journal decoder (its encoding has no identify: a record it
    revives becomes a track)."""
    try:
        tenant, now, raw = orjson.loads(payload)
        fields = _previous_release_revive(raw)
        fields.pop(PROFILE_UPDATE, None)
        return encode_fields(fields, tenant, EventNaming(), now)
    except InvalidEvent:
        raise
    except Exception:
        raise InvalidEvent("record", "unreadable journal record") from None


def test_a_process_of_the_previous_release_never_sends_an_identify_row_as_a_track(
    tmp_path: Path,
) -> None:
    # Rolling upgrade: the previous release shares the spool file and leases what this one
    # accepted. The identify row is refused by it (a dead letter there), never a 2nd track.
    path = tmp_path / "spool.db"
    em, _, _ = fake_emitter(lambda request: 503, spool=str(path), profile_updates=True)
    em.emit(UNSUB)
    em.close(0)  # both rows stay in the file, whatever was tried meanwhile
    old = SqliteSpool(path, max_bytes=1 << 24, decoder=_previous_release_decode)
    try:
        old.maintain(force=True)
        lease = old.lease("acme", 10, 1 << 20)
        assert lease is not None
        assert [orjson.loads(m.body)["event"] for m in lease.messages] == ["Email Unsubscribed"]
        assert [m.message_id for m in lease.messages] == [message_id(UNSUB)]
        old.release(lease, lease.messages)
    finally:
        old.close()
    with contextlib.closing(sqlite3.connect(path)) as db:
        dead = db.execute("SELECT reason FROM dead_letters").fetchall()
    assert dead == [("type: not a journaled record's event type",)]


def test_this_release_reads_back_the_journal_form_of_an_identify() -> None:
    fields = normalize(UNSUB)
    marked = dict(fields, **{PROFILE_UPDATE: _update(UNSUB)})
    payload = orjson.dumps(journal_form(marked))
    assert orjson.loads(payload)["type"] == "identify:unsubscribed"
    assert journal_form(fields) is fields  # a track is written as it is
    assert revive(orjson.loads(payload)) == marked
    assert (
        encode_fields(revive(orjson.loads(payload)), "acme", EventNaming()).message_id
        == (profile_message(UNSUB, _update(UNSUB))["messageId"])
    )
    without_update = orjson.loads(payload)
    del without_update[PROFILE_UPDATE]
    with pytest.raises(InvalidEvent, match="not a journaled record's event type"):
        revive(without_update)
