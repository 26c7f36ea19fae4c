"""The destination's loader over real loopback HTTP into LocalSelligent: rows batched per
tenant and list, identify before track, per-row refusals as dead letters, 429/503/401,
timeouts, restarts from the spool file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from _destination import ENV, example_config, identify, track

from selligent_segment import SpoolFile
from selligent_segment._errors import SpoolFull
from selligent_segment.delivery._retry import RetryPolicy
from selligent_segment.delivery._transport import HttpTransport
from selligent_segment.destination import DestinationConfig, map_event
from selligent_segment.destination._loader import DeadRow, Loader, LoaderSettings
from selligent_segment.destination._mapping import MappedRow
from selligent_segment.destination._rows import dead_payload
from selligent_segment.destination._transport import SelligentTransport, load_url
from selligent_segment.testing import Fault, FaultPlan, LocalSelligent, SelligentColumn

FAST = RetryPolicy(initial_backoff=0.01, max_backoff=0.05, jitter=False)


def rows_of(
    config: DestinationConfig, tenant: str, events: list[dict[str, object]]
) -> list[MappedRow]:
    out = []
    for event in events:
        row = map_event(config.tenants[tenant], event)
        assert isinstance(row, MappedRow)
        out.append(row)
    return out


@pytest.fixture
def config(local_selligent: LocalSelligent) -> DestinationConfig:
    return example_config(local_selligent.url)


@pytest.fixture
def loader(config: DestinationConfig, tmp_path: Path) -> Iterator[Loader]:
    settings = LoaderSettings(batch_size=100, linger=0.01, retry=FAST, threads=2)
    loader = Loader(config, tmp_path / "dest.spool", settings).start()
    yield loader
    loader.close(timeout=2.0)


def test_rows_are_upserted_into_each_tenants_lists(
    loader: Loader, config: DestinationConfig, local_selligent: LocalSelligent
) -> None:
    loader.accept(rows_of(config, "acme", [identify(1), track(1)]))
    loader.accept(rows_of(config, "globex", [identify(2), track(2)]))
    assert loader.flush(10.0)
    assert local_selligent.row("CONTACTS", customer_id="user-1") is not None
    assert local_selligent.row("INTERACTIONS", event_id="tr-1") is not None
    globex = local_selligent.row("GLOBEX_CONTACTS", customer_id="user-2")
    assert globex is not None
    assert globex["full_name"] == "Ann N2"
    assert local_selligent.row("GLOBEX_EVENTS", event_id="tr-2") is not None
    keys = {r.api_key for r in local_selligent.requests}
    assert keys == {ENV["ACME_SELLIGENT_API_KEY"], ENV["GLOBEX_SELLIGENT_API_KEY"]}
    for request in local_selligent.requests:
        assert request.organization in ("acme", "globex-marketing")


def test_identify_rows_are_loaded_before_track_rows_of_the_same_batch(
    loader: Loader, config: DestinationConfig, local_selligent: LocalSelligent
) -> None:
    loader.accept(rows_of(config, "acme", [track(1), identify(1), track(2), identify(2)]))
    assert loader.flush(10.0)
    lists = [r.list for r in local_selligent.requests]
    assert lists == ["CONTACTS", "INTERACTIONS"]
    assert [r.n_rows for r in local_selligent.requests] == [2, 2]


def test_replayed_rows_update_instead_of_duplicating(
    loader: Loader, config: DestinationConfig, local_selligent: LocalSelligent
) -> None:
    loader.accept(rows_of(config, "acme", [identify(1)]))
    assert loader.flush(10.0)
    loader.accept(rows_of(config, "acme", [identify(1, lastName="Changed")]))
    assert loader.flush(10.0)
    rows = local_selligent.rows("CONTACTS")
    assert len(rows) == 1
    assert rows[0]["last_name"] == "Changed"
    assert all(r.key_fields == ("customer_id",) for r in local_selligent.requests)


def test_rows_missing_a_column_are_loaded_apart_without_blanking_it(
    loader: Loader, config: DestinationConfig, local_selligent: LocalSelligent
) -> None:
    loader.accept(rows_of(config, "acme", [identify(1)]))
    assert loader.flush(10.0)
    no_phone = identify(1)
    no_phone["traits"] = {"firstName": "Only"}
    loader.accept(rows_of(config, "acme", [no_phone, identify(2)]))
    assert loader.flush(10.0)
    row = local_selligent.row("CONTACTS", customer_id="user-1")
    assert row is not None
    assert row["first_name"] == "Only"
    assert row["email_address"]
    assert len(local_selligent.requests) == 3  # the partial row went in a request of its own


def test_rows_refused_by_selligent_become_dead_letters_alone(
    config: DestinationConfig, local_selligent: LocalSelligent, tmp_path: Path
) -> None:
    local_selligent.declare_list(
        "CONTACTS",
        [
            SelligentColumn("customer_id", "Text", 20),
            "anonymous_id",
            "email_address",
            SelligentColumn("first_name", "Text", 5),
            "last_name",
            "phone",
            "city",
            "country",
            "created_at",
            "last_seen_at",
        ],
    )
    loader = Loader(config, tmp_path / "s", LoaderSettings(linger=0.01, retry=FAST)).start()
    try:
        long_name = identify(2, firstName="Bartholomew")
        loader.accept(rows_of(config, "acme", [identify(1), long_name, identify(3)]))
        assert loader.flush(10.0)
    finally:
        loader.close(2.0)
    assert local_selligent.row("CONTACTS", customer_id="user-1") is not None
    assert local_selligent.row("CONTACTS", customer_id="user-3") is not None
    assert local_selligent.row("CONTACTS", customer_id="user-2") is None
    with SpoolFile(tmp_path / "s") as spool:
        letters = spool.dead_letters()
    assert [d.message_id for d in letters] == ["id-2"]
    assert "first_name" in letters[0].reason
    assert "MaxStringLengthExceeded" in letters[0].reason
    assert "Bartholomew" not in letters[0].reason


def test_a_list_refused_as_a_whole_refuses_its_rows_and_loads_the_others(
    config: DestinationConfig, local_selligent: LocalSelligent, tmp_path: Path
) -> None:
    local_selligent.declare_list("INTERACTIONS", ["event_id", "customer_id"])  # too few columns
    local_selligent.declare_list(
        "CONTACTS",
        [
            "customer_id", "anonymous_id", "email_address", "first_name", "last_name",
            "phone", "city", "country", "created_at", "last_seen_at",
        ],
    )  # fmt: skip
    loader = Loader(config, tmp_path / "s", LoaderSettings(linger=0.01, retry=FAST)).start()
    try:
        loader.accept(rows_of(config, "acme", [identify(1), track(1)]))
        assert loader.flush(10.0)
    finally:
        loader.close(2.0)
    assert local_selligent.row("CONTACTS", customer_id="user-1") is not None
    with SpoolFile(tmp_path / "s") as spool:
        letters = spool.dead_letters()
    assert [d.message_id for d in letters] == ["tr-1"]
    assert "unknown field" in letters[0].reason
    assert letters[0].status == 400


def test_events_refused_at_the_door_are_dead_letters_with_their_reason(
    loader: Loader, tmp_path: Path
) -> None:
    payload = dead_payload("acme", "identify", "m-1", "column customer_id <- $.userId: no key", {})
    loader.accept([], [DeadRow("acme", "identify", "m-1", payload, "no key value: $.userId")])
    assert loader.flush(5.0)
    loader.close(2.0)
    with SpoolFile(tmp_path / "dest.spool") as spool:
        letters = spool.dead_letters()
    assert [(d.message_id, d.reason) for d in letters] == [("m-1", "no key value: $.userId")]


def _two_identifies(config: DestinationConfig) -> list[MappedRow]:
    """Two identifies of user-1, last name "Old", then "New"."""
    old = identify(1, lastName="Old") | {"messageId": "id-old"}
    new = identify(1, lastName="New") | {"messageId": "id-new"}
    return rows_of(config, "acme", [old, new])


@pytest.mark.parametrize(
    ("fault", "threads"),
    [
        # A retryable failure with a wait of its own: the batch must not be set aside
        # while the tenant's next batch loads.
        (Fault.http(503, retry_after=1), 1),
        # A slow first load: the tenant's next batch must not be sent beside it.
        (Fault.latency(0.5), 2),
    ],
    ids=["503-retry-after", "slow-load"],
)
def test_an_older_identify_never_lands_after_a_newer_one_across_batches(
    config: DestinationConfig,
    local_selligent: LocalSelligent,
    tmp_path: Path,
    fault: Fault,
    threads: int,
) -> None:
    """docs/destination.md: "an older identify never overwrites a newer one", also when
    they are in batches of their own: one tenant's batches are loaded one at a time, in
    order, and a failed one is retried before the next goes."""
    settings = LoaderSettings(batch_size=1, linger=0.01, retry=FAST, threads=threads)
    local_selligent.set_faults(FaultPlan(script=[fault]))
    loader = Loader(config, tmp_path / "dest.spool", settings)
    loader.accept(_two_identifies(config))
    loader.start()
    try:
        assert loader.flush(10.0)
    finally:
        loader.close(timeout=2.0)
    row = local_selligent.row("CONTACTS", customer_id="user-1")
    assert row is not None
    assert row["last_name"] == "New"


@pytest.mark.parametrize("fault", [Fault.http(503), Fault.http(500), Fault.drop()])
def test_server_errors_and_dropped_connections_are_retried(
    loader: Loader, config: DestinationConfig, local_selligent: LocalSelligent, fault: Fault
) -> None:
    local_selligent.set_faults(FaultPlan(script=[fault, fault]))
    loader.accept(rows_of(config, "acme", [identify(1), track(1)]))
    assert loader.flush(10.0)
    assert local_selligent.row("CONTACTS", customer_id="user-1") is not None
    assert local_selligent.row("INTERACTIONS", event_id="tr-1") is not None
    assert loader.stats().retried >= 2


def test_a_load_too_large_is_split_and_every_row_loaded(
    loader: Loader, config: DestinationConfig, local_selligent: LocalSelligent, tmp_path: Path
) -> None:
    """Selligent's 413 said the request was too large: every row of it became a dead
    letter (Segment already had its 200). The batch is bisected and loaded."""
    local_selligent.set_faults(FaultPlan(script=[Fault.http(413)]))
    loader.accept(rows_of(config, "acme", [identify(n) for n in range(4)]))
    assert loader.flush(10.0)
    for n in range(4):
        assert local_selligent.row("CONTACTS", customer_id=f"user-{n}") is not None
    assert [r.status for r in local_selligent.requests] == [413, 200, 200]
    assert loader.stats().rejected == {}


def test_a_failure_after_the_identify_load_keeps_the_identify_rows_delivered(
    loader: Loader, config: DestinationConfig, local_selligent: LocalSelligent
) -> None:
    local_selligent.set_faults(FaultPlan(script=[Fault.latency(0.0), Fault.http(503)]))
    loader.accept(rows_of(config, "acme", [identify(1), track(1)]))
    assert loader.flush(10.0)
    contacts = [r for r in local_selligent.requests if r.list == "CONTACTS"]
    assert len(contacts) == 1  # not loaded again when the track load was retried
    assert [r.status for r in local_selligent.requests if r.list == "INTERACTIONS"] == [503, 200]


def test_a_refused_api_key_pauses_the_tenant_and_keeps_its_rows(
    loader: Loader, config: DestinationConfig, local_selligent: LocalSelligent
) -> None:
    local_selligent.revoke_api_key(ENV["ACME_SELLIGENT_API_KEY"])
    loader.accept(rows_of(config, "acme", [identify(1)]))
    loader.accept(rows_of(config, "globex", [identify(2)]))
    assert loader.flush(10.0)  # idle: only the paused tenant's rows are left
    assert "acme" in loader.paused()
    assert "401" in loader.paused()["acme"]
    assert loader.queued() == {"acme": 1}
    assert local_selligent.row("GLOBEX_CONTACTS", customer_id="user-2") is not None
    assert ENV["ACME_SELLIGENT_API_KEY"] not in repr(loader.paused())


def test_rows_left_at_close_are_loaded_by_the_next_loader(
    config: DestinationConfig, local_selligent: LocalSelligent, tmp_path: Path
) -> None:
    local_selligent.outage(503)
    first = Loader(config, tmp_path / "s", LoaderSettings(linger=0.01, retry=FAST)).start()
    first.accept(rows_of(config, "acme", [identify(1), track(1)]))
    assert not first.close(timeout=0.2)
    local_selligent.end_outage()
    second = Loader(config, tmp_path / "s", LoaderSettings(linger=0.01, retry=FAST)).start()
    try:
        assert second.flush(10.0)
    finally:
        second.close(2.0)
    assert local_selligent.row("INTERACTIONS", event_id="tr-1") is not None


@pytest.mark.slow
def test_the_request_cap_counts_every_load_request(
    config: DestinationConfig, local_selligent: LocalSelligent, tmp_path: Path
) -> None:
    settings = LoaderSettings(linger=0.0, retry=FAST, requests_per_minute=60)  # burst of one
    loader = Loader(config, tmp_path / "s", settings).start()
    try:
        loader.accept(rows_of(config, "acme", [identify(1), track(1)]))
        assert local_selligent.wait_for_requests(2, timeout=5.0)
        loader.accept(rows_of(config, "acme", [identify(2)]))
        # Two requests used the turn's token and one charged beyond it: the bucket is
        # below zero, so the next load waits for it (about 2 s at 1 per second).
        assert not local_selligent.wait_for_requests(3, timeout=0.3)
    finally:
        loader.close(0.1)


def test_the_api_key_is_never_in_a_url_or_an_error() -> None:
    url = load_url("http://h/Portal/Api/organizations/o", "L S", ["id"], ["id", "x"])
    assert url.endswith("/lists/L%20S/data/load?keyFields=id&fields=id%2Cx&mode=Sync"
                        "&data_import_option=InsertAndUpdate")  # fmt: skip
    transport = SelligentTransport(HttpTransport(connect_timeout=0.2, deadline=0.5))
    response = transport.post("http://127.0.0.1:9", "k:very-secret", [b"[1]"])
    assert response.items == {0: "not a spooled row"}
    assert response.requests == 0
    assert "very-secret" not in repr(transport)


@pytest.mark.slow
def test_429_waits_for_the_rate_limit_reset(
    loader: Loader, config: DestinationConfig, local_selligent: LocalSelligent
) -> None:
    local_selligent.set_faults(FaultPlan(script=[Fault.http(429, x_ratelimit_reset=1)]))
    loader.accept(rows_of(config, "acme", [identify(1)]))
    assert loader.flush(10.0)
    first, second = local_selligent.requests
    assert first.status == 429
    assert second.status == 200
    assert second.received_at - first.received_at >= 0.9


@pytest.mark.slow
def test_a_load_that_times_out_is_retried(
    config: DestinationConfig, local_selligent: LocalSelligent, tmp_path: Path
) -> None:
    local_selligent.set_faults(FaultPlan(script=[Fault.latency(2.0)]))
    transport = SelligentTransport(HttpTransport(read_timeout=0.3, deadline=0.5))
    settings = LoaderSettings(linger=0.0, retry=FAST)
    loader = Loader(config, tmp_path / "s", settings, transport=transport).start()
    try:
        loader.accept(rows_of(config, "acme", [identify(1)]))
        assert loader.flush(10.0)
    finally:
        loader.close(2.0)
    assert local_selligent.row("CONTACTS", customer_id="user-1") is not None
    assert loader.stats().retried >= 1


def test_a_paused_tenant_filling_the_spool_is_refused_alone(
    config: DestinationConfig, tmp_path: Path, local_selligent: LocalSelligent
) -> None:
    """One ``max_spool_bytes`` for every tenant: a tenant whose key Selligent refused
    (paused) filled the spool, then every tenant's webhook answered 503 (found by a
    review). Past three quarters of the cap, a paused tenant, or one holding more than
    an even share of the rows waiting, is refused; the others have the last quarter,
    enough while their rows load and leave."""
    local_selligent.revoke_api_key(ENV["ACME_SELLIGENT_API_KEY"])
    settings = LoaderSettings(linger=0.0, retry=FAST, max_spool_bytes=400_000)
    loader = Loader(config, tmp_path / "dest.spool", settings).start()
    pad = "x" * 2000
    try:
        loader.accept(rows_of(config, "acme", [identify(0)]))
        assert loader.flush(10.0)  # idle: acme's rows wait, paused
        assert "acme" in loader.paused()
        refused = None
        for chunk in range(1, 500):
            events = [identify(chunk * 10 + i, lastName=pad) for i in range(10)]
            try:
                loader.accept(rows_of(config, "acme", events))
            except SpoolFull:
                refused = chunk
                break
            assert loader.flush(10.0)  # in the file: its size counted as it is
        assert refused is not None
        assert loader.has_room(2000 * 10)  # not the cap: the reserve is left
        assert not loader.has_room(2000 * 10, {"acme"})
        assert loader.has_room(2000 * 10, {"globex"})
        for n in range(0, 50, 10):  # more than the reserve: its rows load and leave
            loader.accept(
                rows_of(config, "globex", [track(n + i, plan_name=pad) for i in range(10)])
            )
            assert loader.flush(10.0)
        assert local_selligent.row("GLOBEX_EVENTS", event_id="tr-49") is not None
        with pytest.raises(SpoolFull):
            loader.accept(rows_of(config, "acme", events))  # as the one refused above
    finally:
        loader.close(2.0)
