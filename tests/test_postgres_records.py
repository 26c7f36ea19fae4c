"""Records in the PostgreSQL queue (spool/_postgres_record.py): ``emit`` stores the compact
record and the relay that leases the row makes its message. What is checked: the message
made at lease is byte for byte the one the message path makes (every kind, the
profile-update identify included, whatever the relay's own naming or version); a damaged
record becomes a dead letter with its reason and costs no other event; ``reject`` keeps
the message as leased; a record too large for a message is refused at accept; the outbox
and ``enqueue()`` rows still work. Real server, real loopback Segment."""

from __future__ import annotations

import itertools
import logging
from typing import Any

import orjson
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_mapping_properties import record_dicts

from selligent_segment import PROFILES, DeliveryFailure, Emitter, EventKind, EventNaming
from selligent_segment._mapping import EncodedMessage, _tenant_of, encode_fields
from selligent_segment._profile import PROFILE_UPDATE, ProfileUpdates
from selligent_segment._record import normalize
from selligent_segment._version import __version__
from selligent_segment.spool._postgres import DEAD_ROUNDS, PostgresSpool
from selligent_segment.spool._postgres_record import (
    CHECK_SIZE_ABOVE,
    UnreadableRecord,
    decode,
    record_row,
)
from selligent_segment.spool._postgres_view import PostgresView
from selligent_segment.testing import LocalSegment
from selligent_segment.testing._local_postgres import LocalPostgres

_schemas = itertools.count(1)
KEYS = {"acme": "key-acme", "globex": "key-globex"}
DEAD = "http://127.0.0.1:9/"  # an emitting host that delivers nothing itself
NOW = 1_767_225_600.125
#: The emitter's naming: another profile, a global override and a tenant's own names.
NAMING = EventNaming(
    profile="segment-spec",
    overrides={"opened": "Mail Opened"},
    tenant_overrides={"acme": {"delivered": "Acme Delivered"}},
)


@pytest.fixture
def url(postgres: LocalPostgres) -> str:
    return f"{postgres.url}?spool_schema=records_test_{next(_schemas)}&lease_seconds=5"


def _events(tenant: str = "acme") -> list[dict[str, Any]]:
    """One record of every kind; the hard bounce, the unsubscribe and the complaint each
    bring their profile-update identify; some carry their own timestamp, some not."""
    base = {"tenant": tenant, "email": "Ada@Example.com", "campaign_id": "c1"}
    return [
        {**base, "type": "delivered", "event_id": f"{tenant}-d"},
        {**base, "type": "opened", "timestamp": "2026-01-02T03:04:05.678+02:00"},
        {**base, "type": "link_clicked", "event_id": f"{tenant}-l", "link_url": "https://x.io/"},
        {**base, "type": "unsubscribed", "event_id": f"{tenant}-u", "list_id": "l7"},
        {
            **base,
            "type": "bounced",
            "event_id": f"{tenant}-b",
            "bounce_type": "hard",
            "user_id": 42,
            "integrations": {"All": False, "Mixpanel": True},
        },
        {
            **base,
            "type": "marked_as_spam",
            "event_id": f"{tenant}-s",
            "context": {"locale": "fr-BE"},
            "properties": {"score": 1.5, "tags": ["a", "é"]},
        },
    ]


def _expected(data: dict[str, Any], naming: EventNaming, now: float | None) -> list[EncodedMessage]:
    """The messages the message path makes of ``data``: its track, and its identify when
    profile updates mark it."""
    fields = normalize(data)
    tenant = _tenant_of(fields, None)
    now = None if "timestamp" in fields else now
    out = [encode_fields(fields, tenant, naming, now)]
    update = ProfileUpdates().update_for(fields)
    if update is not None:
        out.append(encode_fields({**fields, PROFILE_UPDATE: update}, tenant, naming, now))
    return out


def _rows(url: str, postgres: LocalPostgres) -> list[tuple[str, bytes]]:
    schema = url.rsplit("spool_schema=", 1)[1].split("&")[0]
    with psycopg.connect(postgres.url) as conn:
        rows = conn.execute(f"SELECT message_id, body FROM {schema}.messages ORDER BY id")
        return [(m, bytes(b)) for m, b in rows]


def _lease_all(spool: PostgresSpool, tenant: str = "acme") -> list[EncodedMessage]:
    lease = spool.lease(tenant, 100, 1 << 20)
    assert lease is not None
    return list(lease.messages)


# -- the record form, without a server -----------------------------------------------------


def test_every_kind_decodes_to_the_message_path_s_bytes() -> None:
    for data in _events():
        fields = normalize(data)
        now = None if "timestamp" in fields else NOW
        for expected in _expected(data, NAMING, NOW):
            marked = fields
            if expected.body.startswith(b'{"type":"identify"'):
                marked = {**fields, PROFILE_UPDATE: ProfileUpdates().update_for(fields)}
            tenant, message_id, kind, body = record_row(marked, "acme", now, NAMING)
            assert (tenant, message_id, kind) == ("acme", "", fields["type"].value)
            assert body.startswith(b"[")
            assert len(body) < len(expected.body)
            assert decode("acme", body) == expected


@pytest.mark.slow  # a property test: the second step of .ci/run
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=record_dicts(),
    profile=st.sampled_from(sorted(PROFILES)),
    renamed=st.dictionaries(st.sampled_from(list(EventKind)), st.sampled_from(["X", "Y z"])),
    now=st.one_of(st.none(), st.floats(min_value=946_771_200, max_value=1_767_225_600)),
    identify=st.booleans(),
)
def test_any_record_decodes_to_exactly_its_message(
    data: dict[str, Any],
    profile: str,
    renamed: dict[EventKind, str],
    now: float | None,
    identify: bool,
) -> None:
    fields = normalize(data)
    tenant = _tenant_of(fields, None)
    if "timestamp" not in fields:  # the emitter always gives a time then
        now = NOW if now is None else now
    naming = EventNaming(profile=profile, tenant_overrides={tenant: renamed})
    if identify:
        fields[PROFILE_UPDATE] = {"traits": {"email_bounced": True}, "at": "email_bounced_at"}
    expected = encode_fields(fields, tenant, naming, now)
    _, message_id, _, body = record_row(fields, tenant, now, naming)
    if message_id:  # a large record: encoded at accept
        assert (message_id, body) == (expected.message_id, expected.body)
    else:
        assert decode(tenant, body) == expected


def test_a_record_written_by_another_version_keeps_that_version() -> None:
    data = _events()[0]
    fields = normalize(data)
    _, _, _, body = record_row(fields, "acme", NOW, NAMING)
    now, written, event, version = orjson.loads(body)
    assert version == __version__
    older = orjson.dumps([now, written, event, "0.0.1"])
    message = decode("acme", older)
    expected = orjson.loads(encode_fields(fields, "acme", NAMING, NOW).body)
    expected["context"]["library"]["version"] = "0.0.1"
    expected["context"]["integration"]["version"] = "0.0.1"
    assert message.body == orjson.dumps(expected)  # only the two versions differ


@pytest.mark.parametrize(
    "body",
    [
        b"[1.0, {",  # cut short
        b'{"type":"track"}',  # a message where a record belongs
        b'[1.0, {"type": "nope", "email": "a@b.c"}, "E", "1"]',  # no such kind
        b'[1.0, {"type": "delivered", "email": "a@b.c"}, null, "1"]',  # a track unnamed
        b'[1.0, {"type": "delivered", "email": "a@b.c"}, 7, "1"]',  # a name not text
        b'["now", {"type": "delivered", "email": "a@b.c"}, "E", "1"]',  # a time not one
        b'[1.0, [{"type": "delivered"}], "E", "1"]',  # fields not an object
        b'[1.0, {"type": "delivered", "timestamp": 5}, "E", "1"]',  # not a time
    ],
)
def test_what_is_not_a_record_is_refused_with_its_reason(body: bytes) -> None:
    with pytest.raises(UnreadableRecord, match=r"^record: not a record this release reads \("):
        decode("acme", body)


# -- through the table -------------------------------------------------------------------


def test_rows_hold_records_and_a_lease_makes_the_message_path_s_bytes(
    url: str, postgres: LocalPostgres
) -> None:
    """Written by emit, emit_many and the outbox; leased by a spool of its own (another
    process's view: no naming of its own)."""
    events = _events()
    with Emitter(
        write_keys=KEYS, endpoint=DEAD, spool=url, naming=NAMING, profile_updates=True
    ) as emitter:
        emitter._dispatcher.stop(1.0)  # leave the rows to the other spool
        assert emitter.emit(events[0])
        assert emitter.emit_many(events[1:4]).accepted == 3
        assert emitter.emit(events[4])
        with psycopg.connect(str(postgres.url)) as conn:
            assert emitter.emit(events[5], connection=conn)  # the outbox: with its identify
            conn.commit()
        rows = _rows(url, postgres)
        assert [m for m, _ in rows] == [""] * 9  # records only: nothing encoded at emit
        emitter.close(timeout=0.1)
    # Rows per event: the unsubscribe, the hard bounce and the outbox's complaint bring
    # their identify (the outbox takes the profile update as emit does).
    counts = [1, 1, 1, 2, 2, 2]
    expected: list[EncodedMessage] = []
    for data, start, count in zip(
        events, itertools.accumulate([0, *counts[:-1]]), counts, strict=True
    ):
        now = orjson.loads(rows[start][1])[0]  # the emit time the emitter took, if any
        expected.extend(_expected(data, NAMING, now)[:count])
    relay = PostgresSpool(url)
    try:
        assert _lease_all(relay) == expected
    finally:
        relay.close()


def test_a_relay_with_other_naming_sends_the_emitter_s_names(
    url: str, server: LocalSegment
) -> None:
    with Emitter(write_keys=KEYS, endpoint=DEAD, spool=url, naming=NAMING) as writer:
        writer._dispatcher.stop(1.0)
        writer.emit_many([{"type": k.value, "tenant": "acme", "email": "a@b.c"} for k in EventKind])
        writer.emit({"type": "delivered", "tenant": "globex", "email": "a@b.c"})
        writer.close(timeout=0.1)
    with Emitter(write_keys=KEYS, endpoint=server.url, spool=url) as relay:  # default names
        assert server.wait_for(7, timeout=30)
        assert relay.flush(timeout=30)
    assert sorted(e["event"] for e in server.events()) == sorted(
        {
            "Acme Delivered",
            "Mail Opened",
            "Email Link Clicked",
            "Unsubscribed",  # segment-spec's
            "Email Bounced",
            "Email Marked as Spam",
            "Email Delivered",  # globex: no tenant override
        }
    )


def _insert(postgres: LocalPostgres, url: str, bodies: list[bytes]) -> None:
    schema = url.rsplit("spool_schema=", 1)[1].split("&")[0]
    with psycopg.connect(postgres.url) as conn:
        for body in bodies:
            conn.execute(
                f"INSERT INTO {schema}.messages (tenant, message_id, kind, body) "
                "VALUES ('acme', '', 'delivered', %s)",
                (body,),
            )


def test_a_damaged_record_becomes_a_dead_letter_and_costs_no_other_event(
    url: str, postgres: LocalPostgres
) -> None:
    good = [record_row(normalize(e), "acme", NOW, NAMING) for e in _events()[:2]]
    told: list[tuple[str, str]] = []
    spool = PostgresSpool(url, on_buried=lambda tenant, error: told.append((tenant, str(error))))
    try:
        _insert(postgres, url, [b"[1.0, {", b"not json", b'{"type":"track"}'])  # a lease's worth
        spool.put_rows(good[:1])
        _insert(postgres, url, [b'[1.0, {"type": "nope"}, "E", "1"]'])
        spool.put_rows(good[1:])
        lease = spool.lease("acme", 3, 1 << 20)  # three dead rows first: it goes on past them
        assert lease is not None
        assert [m.message_id for m in lease.messages] == [
            decode("acme", good[0][3]).message_id,
            decode("acme", good[1][3]).message_id,
        ]
        spool.ack(lease, lease.messages)
        assert spool.lease("acme", 10, 1 << 20) is None
        with PostgresView(url) as view:
            dead = view.dead_letters()
            assert [(d.message_id, d.body) for d in dead] == [
                ("", b"[1.0, {"),
                ("", b"not json"),
                ("", b'{"type":"track"}'),
                ("", b'[1.0, {"type": "nope"}, "E", "1"]'),
            ]
            assert all(d.reason.startswith("unreadable_record: not a record") for d in dead)
            assert view.requeue() == 0  # nothing to send in them: never requeued
        # Each told once, after its lease: the emitter reports them through on_failure.
        assert [t for t, _ in told] == ["acme"] * 4
        assert all(text.startswith("record: not a record this release reads") for _, text in told)
    finally:
        spool.close()


def test_an_emitter_reports_a_record_its_lease_buried_through_on_failure(
    url: str, postgres: LocalPostgres, server: LocalSegment
) -> None:
    PostgresSpool(url).close()  # the schema
    _insert(postgres, url, [b"not json"])
    failures: list[DeliveryFailure] = []
    with Emitter(
        write_keys=KEYS, endpoint=server.url, spool=url, on_failure=failures.append
    ) as emitter:
        assert emitter.emit(_events()[0])
        assert emitter.flush(timeout=30)
        assert emitter.stats().dropped == {"unreadable_record": 1}
    assert server.accepted_count == 1
    assert [(f.tenant, f.reason, f.message_ids) for f in failures] == [
        ("acme", "unreadable_record", ())
    ]


def test_a_long_run_of_damaged_rows_is_worked_through_in_bounded_rounds(
    url: str, postgres: LocalPostgres, caplog: pytest.LogCaptureFixture
) -> None:
    good = record_row(normalize(_events()[0]), "acme", NOW, NAMING)
    spool = PostgresSpool(url)
    try:
        _insert(postgres, url, [b"not json"] * ((DEAD_ROUNDS + 1) * 2))
        spool.put_rows([good])
        with caplog.at_level(logging.ERROR, logger="selligent_segment"):
            assert spool.lease("acme", 2, 1 << 20) is None  # DEAD_ROUNDS rounds, then later
        lines = [r for r in caplog.records if "dead letters" in r.getMessage()]
        assert len(lines) == DEAD_ROUNDS  # one line a round, not one a row
        assert "2 events kept as dead letters" in lines[0].getMessage()
        lease = spool.lease("acme", 2, 1 << 20)  # the next turn goes on past the rest
        assert lease is not None
        assert [m.message_id for m in lease.messages] == [decode("acme", good[3]).message_id]
        spool.ack(lease, lease.messages)
    finally:
        spool.close()


def test_reject_keeps_the_message_as_leased_and_requeue_sends_it(
    url: str, postgres: LocalPostgres, server: LocalSegment
) -> None:
    spool = PostgresSpool(url)
    try:
        spool.put_rows([record_row(normalize(e), "acme", NOW, NAMING) for e in _events()[:3]])
        lease = spool.lease("acme", 10, 1 << 20)
        assert lease is not None
        spool.reject(lease, lease.messages[1:], "invalid: no userId", 400)
        spool.ack(lease, lease.messages[:1])
        with PostgresView(url) as view:
            dead = view.dead_letters()
            assert [(d.message_id, d.body, d.reason, d.status) for d in dead] == [
                (m.message_id, m.body, "invalid: no userId", 400) for m in lease.messages[1:]
            ]
            assert view.requeue() == 2
        again = _lease_all(spool)
        assert again == list(lease.messages[1:])
        assert [m for m, _ in _rows(url, postgres)] == [m.message_id for m in again]
    finally:
        spool.close()


def test_settlements_kept_while_the_database_is_away_keep_the_leased_message() -> None:
    with LocalPostgres() as pg:
        spool = PostgresSpool(f"{pg.url}?spool_schema=records_away", connect_timeout=1)
        try:
            spool.put_rows([record_row(normalize(_events()[0]), "acme", NOW, NAMING)])
            lease = spool.lease("acme", 10, 1 << 20)
            assert lease is not None
            pg.stop_server()
            spool.reject(lease, lease.messages, "invalid: x", 400)  # kept in memory
            assert len(spool._unwritten) == 1
            pg.start_server()
            spool.maintain()
            assert not spool._unwritten
            with PostgresView(f"{pg.url}?spool_schema=records_away") as view:
                (dead,) = view.dead_letters()
            assert (dead.message_id, dead.body) == (
                lease.messages[0].message_id,
                lease.messages[0].body,
            )
        finally:
            spool.close()


def test_a_record_too_large_for_a_message_is_refused_at_accept_a_large_one_is_encoded(
    url: str, postgres: LocalPostgres
) -> None:
    failures: list[DeliveryFailure] = []
    huge = {"type": "delivered", "tenant": "acme", "email": "a@b.c", "event_id": "huge"}
    huge["properties"] = {"blob": "x" * 40_000}
    large = {"type": "delivered", "tenant": "acme", "email": "a@b.c", "event_id": "large"}
    large["timestamp"] = "2026-01-02T03:04:05Z"
    large["properties"] = {"blob": "y" * (2 * CHECK_SIZE_ABOVE)}  # a record over 8 KB
    with Emitter(
        write_keys=KEYS, endpoint=DEAD, spool=url, naming=NAMING, on_failure=failures.append
    ) as emitter:
        emitter._dispatcher.stop(1.0)
        assert emitter.emit_many([huge, large]).accepted == 2  # refused later, as before
        assert emitter.emit(huge)
        assert [f.reason.value for f in failures] == ["too_large", "too_large"]
        assert emitter.stats().rejected == {"too_large": 2}
        (row,) = _rows(url, postgres)
        expected = encode_fields(normalize(large), "acme", NAMING)
        assert row == (expected.message_id, expected.body)  # encoded at accept
        emitter.close(timeout=0.1)


def test_outbox_rows_are_records_sent_after_commit_and_never_after_rollback(
    url: str, postgres: LocalPostgres, server: LocalSegment
) -> None:
    with Emitter(write_keys=KEYS, endpoint=server.url, spool=url, naming=NAMING) as emitter:
        with psycopg.connect(str(postgres.url)) as conn:
            emitter.emit_many(_events()[:2], connection=conn)
            conn.rollback()
            emitter.emit_many(_events()[2:4], connection=conn)
            assert [m for m, _ in _rows(url, postgres)] == []  # not committed yet
            conn.commit()
        assert server.wait_for(2, timeout=30)
        assert emitter.flush(timeout=30)
    assert sorted(e["event"] for e in server.events()) == ["Email Link Clicked", "Unsubscribed"]
