"""``max_spool_bytes`` and ``on_full`` with a postgresql:// spool: the table is the spool
(nothing waits in memory), so the policy applies at ``emit`` once the table holds
``max_spool_bytes``: raise, drop_newest (counted and reported), block (until senders on
any host free room, or ``block_timeout``). Real server, real loopback Segment."""

from __future__ import annotations

import itertools
import threading
from typing import Any

import psycopg
import pytest

from selligent_segment import DeliveryFailure, Emitter, SpoolFull
from selligent_segment.testing import LocalSegment
from selligent_segment.testing._local_postgres import LocalPostgres

_schemas = itertools.count(1)
KEYS = {"acme": "key-acme"}
DEAD = "http://127.0.0.1:9/"  # nothing is delivered: the table only fills


def _url(postgres: LocalPostgres) -> str:
    return f"{postgres.url}?spool_schema=full_test_{next(_schemas)}"


def _open(i: int, pad: int = 0) -> dict[str, Any]:
    return {
        "type": "opened",
        "tenant": "acme",
        "email": f"r{i:06d}@example.com",
        "event_id": f"o{i:06d}",
        "email_id": "m" * (1 + pad),
    }


def _big(i: int) -> dict[str, Any]:
    """An event larger than any room :func:`_fill` leaves."""
    return _open(i, pad=1000)


def _fill(emitter: Emitter) -> int:
    """Emit until the next event of the same size would not fit; how many were accepted."""
    spool = emitter._intake.spool
    assert emitter.emit(_open(0))
    size = spool.stats().nbytes
    n = 1
    while spool.has_room(size):
        assert emitter.emit(_open(n))
        n += 1
    return n


def test_raise_refuses_with_spool_full_once_the_table_holds_max_spool_bytes(
    postgres: LocalPostgres,
) -> None:
    with Emitter(
        write_keys=KEYS, endpoint=DEAD, spool=_url(postgres), max_spool_bytes=65536
    ) as emitter:
        accepted = _fill(emitter)
        assert accepted >= 5
        with pytest.raises(SpoolFull, match="max_spool_bytes=65,536"):
            emitter.emit(_big(999))
        with pytest.raises(SpoolFull) as caught:
            emitter.emit_many([_big(1000), _big(1001)])
        assert caught.value.accepted == 0
        assert emitter.stats().refused == {"spool_full": 3}
        assert sum(emitter._intake.spool.stats().per_tenant.values()) == accepted
        emitter.close(timeout=0.1)


def test_drop_newest_returns_false_reports_and_writes_nothing(postgres: LocalPostgres) -> None:
    failures: list[DeliveryFailure] = []
    url = _url(postgres)
    with Emitter(
        write_keys=KEYS,
        endpoint=DEAD,
        spool=url,
        max_spool_bytes=65536,
        on_full="drop_newest",
        on_failure=failures.append,
    ) as emitter:
        accepted = _fill(emitter)
        assert emitter.emit(_big(999)) is False
        result = emitter.emit_many([_big(1000), {"type": "opened"}, _big(1001)])
        assert result.accepted == 0
        assert sorted((i, type(e).__name__) for i, e in result.refused) == [
            (0, "SpoolFull"),
            (1, "InvalidEvent"),
            (2, "SpoolFull"),
        ]
        with psycopg.connect(postgres.url) as conn:
            assert emitter.emit(_big(1002), connection=conn) is False
        assert emitter.stats().refused == {"spool_full": 4}
        assert [f.reason.value for f in failures] == ["spool_full"] * 3
        assert sum(emitter._intake.spool.stats().per_tenant.values()) == accepted
        emitter.close(timeout=0.1)


def _dropping(postgres: LocalPostgres, **options: Any) -> Emitter:
    """An emitter whose table holds 64 KiB at most, dropping the newest beyond."""
    return Emitter(
        write_keys=KEYS,
        endpoint=DEAD,
        spool=_url(postgres),
        max_spool_bytes=65536,
        on_full="drop_newest",
        **options,
    )


def test_drop_newest_in_the_callers_transaction_names_every_dropped_record(
    postgres: LocalPostgres,
) -> None:
    with _dropping(postgres) as emitter:
        _fill(emitter)
        with psycopg.connect(postgres.url) as conn:
            result = emitter.emit_many([_big(1), {"type": "opened"}, _big(2)], connection=conn)
        assert result.accepted == 0
        assert [(i, type(e).__name__) for i, e in result.refused] == [
            (0, "SpoolFull"),
            (1, "InvalidEvent"),
            (2, "SpoolFull"),
        ]
        emitter.close(timeout=0.1)


def test_drop_newest_names_a_record_with_a_profile_update_once(postgres: LocalPostgres) -> None:
    """The record and its identify are dropped together: the record's index is refused
    once, not once for each."""
    with _dropping(postgres, profile_updates=True) as emitter:
        _fill(emitter)
        unsubscribe = {**_big(1), "type": "unsubscribed"}  # gets an identify
        result = emitter.emit_many([unsubscribe, _big(2)])
        assert result.accepted == 0
        assert [(i, type(e).__name__) for i, e in result.refused] == [
            (0, "SpoolFull"),
            (1, "SpoolFull"),
        ]
        emitter.close(timeout=0.1)


@pytest.mark.slow
def test_block_waits_until_senders_free_room_or_block_timeout(postgres: LocalPostgres) -> None:
    with LocalSegment() as server:
        server.outage(503)  # rows stay until the outage ends
        with Emitter(
            write_keys=KEYS,
            endpoint=server.url,
            spool=_url(postgres),
            max_spool_bytes=65536,
            on_full="block",
            block_timeout=0.3,
        ) as emitter:
            accepted = _fill(emitter)
            with pytest.raises(SpoolFull):
                emitter.emit(_big(999))  # nothing frees room within block_timeout
            emitter._backpressure.block_timeout = 60.0
            outcome: list[bool] = []
            blocked = threading.Thread(target=lambda: outcome.append(emitter.emit(_big(1000))))
            blocked.start()
            server.end_outage()  # the senders deliver: the table empties
            blocked.join(timeout=90)
            assert outcome == [True]
            assert server.wait_for(accepted + 1, timeout=60)
            assert emitter.stats().refused == {"spool_full": 1}
