"""testing.LocalSelligent over real loopback HTTP: auth, lists, per-row validation, upsert,
faults, read-back, the fixture and the process mode."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import urllib3

from selligent_segment.testing import (
    Fault,
    FaultPlan,
    LocalSelligent,
    SelligentColumn,
    SelligentList,
)

KEY = "svc-key:svc-secret"
FIELDS = ("customer_id", "email_address", "age")


@pytest.fixture
def http() -> Iterator[urllib3.PoolManager]:
    pool = urllib3.PoolManager(retries=False, timeout=5.0)
    yield pool
    pool.clear()


def load(
    http: urllib3.PoolManager,
    server: LocalSelligent,
    rows: Any,
    *,
    organization: str = "acme",
    list_name: str = "CONTACTS",
    key: str | None = KEY,
    query: str = "keyFields=customer_id&fields=customer_id,email_address,age",
) -> urllib3.BaseHTTPResponse:
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["X-ApiKey"] = key
    body = rows if isinstance(rows, bytes) else orjson.dumps(rows)
    url = f"{server.load_url(organization, list_name)}?{query}"
    return http.request("POST", url, body=body, headers=headers)


@pytest.fixture
def declared() -> Iterator[LocalSelligent]:
    lists = [
        SelligentList(
            "CONTACTS",
            (
                SelligentColumn("customer_id", "Text", 10),
                "email_address",
                SelligentColumn("age", "Numeric"),
            ),
        )
    ]
    with LocalSelligent(organization="acme", api_keys=[KEY], lists=lists) as server:
        yield server


def test_rows_are_inserted_then_updated_by_key_and_read_back(
    http: urllib3.PoolManager, declared: LocalSelligent
) -> None:
    first = load(http, declared, [["u1", "a@example.com", "30"], ["u2", "b@example.com", ""]])
    assert first.status == 200
    assert orjson.loads(first.data) == {
        "result_code": "Succeeded",
        "number_of_inserted_records": 2,
        "number_of_updated_records": 0,
        "number_of_failed_records": 0,
        "number_of_duplicate_records": 0,
        "invalid_records": [],
        "errors": [],
    }
    second = load(
        http,
        declared,
        [["u1", "new@example.com"]],
        query="keyFields=customer_id&fields=customer_id,email_address",
    )
    assert orjson.loads(second.data)["number_of_updated_records"] == 1
    assert declared.rows("CONTACTS") == [
        {"customer_id": "u1", "email_address": "new@example.com", "age": "30"},
        {"customer_id": "u2", "email_address": "b@example.com", "age": ""},
    ]
    assert declared.row("CONTACTS", customer_id="u2") == {
        "customer_id": "u2",
        "email_address": "b@example.com",
        "age": "",
    }
    assert declared.row("CONTACTS", customer_id="nobody") is None
    assert declared.stats()["rows"] == 2


def test_invalid_rows_are_answered_per_row_and_the_others_loaded(
    http: urllib3.PoolManager, declared: LocalSelligent
) -> None:
    rows = [
        ["u1", "a@example.com", "1"],
        ["u2", "b@example.com", "old"],
        ["toolongcustomer", "c@example.com", "1"],
        ["u4", "d@example.com"],
        ["", "e@example.com", "1"],
        ["u6", 6, "1"],
    ]
    answer = orjson.loads(load(http, declared, rows).data)
    assert answer["result_code"] == "PartiallySucceeded"
    assert answer["number_of_inserted_records"] == 1
    assert answer["number_of_failed_records"] == 5
    assert [
        (r["record_index"], r["field_name"], r["validation_code"])
        for r in answer["invalid_records"]
    ] == [
        (1, "age", "InvalidType"),
        (2, "customer_id", "MaxStringLengthExceeded"),
        (3, "", "InvalidFieldCount"),
        (4, "customer_id", "InvalidType"),
        (5, "email_address", "InvalidType"),
    ]
    assert [r["customer_id"] for r in declared.rows("CONTACTS")] == ["u1"]
    all_bad = orjson.loads(load(http, declared, [["u9", "x", "nan"]]).data)
    assert all_bad["result_code"] == "Failed"


def test_duplicates_within_a_request_keep_the_last_unless_asked_for_the_first(
    http: urllib3.PoolManager, declared: LocalSelligent
) -> None:
    rows = [["u1", "first@example.com", "1"], ["u1", "last@example.com", "2"]]
    answer = orjson.loads(load(http, declared, rows).data)
    assert answer["number_of_duplicate_records"] == 1
    assert answer["number_of_inserted_records"] == 1
    assert declared.rows("CONTACTS")[0]["email_address"] == "last@example.com"
    query = "keyFields=customer_id&fields=customer_id,email_address,age"
    load(http, declared, rows, query=query + "&deduplication=ImportFirstMatch")
    assert declared.rows("CONTACTS")[0]["email_address"] == "first@example.com"


def test_only_insert_and_only_update_are_honoured(
    http: urllib3.PoolManager, declared: LocalSelligent
) -> None:
    query = "keyFields=customer_id&fields=customer_id,email_address,age"
    load(http, declared, [["u1", "a@example.com", "1"]])
    insert_only = load(
        http,
        declared,
        [["u1", "changed@example.com", "1"], ["u2", "b@example.com", "2"]],
        query=query + "&data_import_option=OnlyInsert",
    )
    body = orjson.loads(insert_only.data)
    assert (body["number_of_inserted_records"], body["number_of_updated_records"]) == (1, 0)
    update_only = load(
        http,
        declared,
        [["u1", "changed@example.com", "1"], ["u3", "c@example.com", "3"]],
        query=query + "&data_import_option=OnlyUpdate",
    )
    body = orjson.loads(update_only.data)
    assert (body["number_of_inserted_records"], body["number_of_updated_records"]) == (0, 1)
    assert [r["email_address"] for r in declared.rows("CONTACTS")] == [
        "changed@example.com",
        "b@example.com",
    ]


def test_a_wrong_missing_or_revoked_key_is_401(
    http: urllib3.PoolManager, declared: LocalSelligent
) -> None:
    assert load(http, declared, [], key="other:key").status == 401
    assert load(http, declared, [], key=None).status == 401
    assert load(http, declared, []).status == 200
    declared.revoke_api_key(KEY)
    assert load(http, declared, []).status == 401
    declared.add_api_key(KEY)
    assert load(http, declared, []).status == 200
    assert KEY not in repr(declared.requests) + repr(declared)


def test_unknown_organization_list_or_field_and_unreadable_requests(
    http: urllib3.PoolManager, declared: LocalSelligent
) -> None:
    row = [["u1", "a@example.com", "1"]]
    assert load(http, declared, row, organization="other").status == 404
    missing = load(http, declared, row, list_name="NOPE")
    assert (missing.status, orjson.loads(missing.data)["result_code"]) == (404, "NotFound")
    for query in (
        "fields=customer_id,email_address,age",  # no keyFields
        "keyFields=customer_id&fields=customer_id,colour",  # undeclared field
        "keyFields=id&fields=customer_id,email_address,age",  # key not among fields
        "keyFields=customer_id&fields=customer_id,email_address,age&data_import_option=Merge",
    ):
        answer = load(http, declared, row, query=query)
        assert answer.status == 400, query
        assert orjson.loads(answer.data)["result_code"] == "ValidationFailed"
    assert load(http, declared, b"{not json").status == 400
    assert load(http, declared, {"rows": 1}).status == 400
    assert declared.rows("CONTACTS") == []


def test_without_fields_in_the_query_the_first_row_is_the_header(
    http: urllib3.PoolManager, declared: LocalSelligent
) -> None:
    rows = [["customer_id", "age"], ["u1", "4"]]
    answer = load(http, declared, rows, query="keyFields=customer_id")
    assert orjson.loads(answer.data)["number_of_inserted_records"] == 1
    assert declared.rows("CONTACTS") == [{"customer_id": "u1", "age": "4"}]


def test_injected_faults_answer_first_in_selligents_words(
    http: urllib3.PoolManager, declared: LocalSelligent
) -> None:
    declared.set_faults(
        FaultPlan(script=[Fault.http(429, x_ratelimit_reset=17), Fault.http(503), Fault.drop()])
    )
    row = [["u1", "a@example.com", "1"]]
    limited = load(http, declared, row)
    assert limited.status == 429
    assert limited.headers["X-RateLimit-Reset"] == "17"
    assert limited.headers["X-RateLimit-Remaining"] == "0"
    unavailable = load(http, declared, row)
    assert unavailable.status == 503
    assert orjson.loads(unavailable.data)["result_code"] == "ServiceUnavailable"
    with pytest.raises(urllib3.exceptions.ProtocolError):
        load(http, declared, row)
    assert declared.rows("CONTACTS") == []
    assert load(http, declared, row).status == 200
    assert [(r.status, r.fault) for r in declared.requests] == [
        (429, "status"),
        (503, "status"),
        (0, "drop"),
        (200, None),
    ]
    declared.outage(503)
    assert load(http, declared, row).status == 503
    declared.end_outage()
    assert load(http, declared, row).status == 200


def test_control_routes_stats_rows_faults_and_reset(
    http: urllib3.PoolManager, declared: LocalSelligent
) -> None:
    load(http, declared, [["u1", "a@example.com", "1"]])
    stats = orjson.loads(http.request("GET", f"{declared.url}/_stats").data)
    assert stats["inserted"] == 1
    assert stats["rows_received"] == 1
    rows = orjson.loads(http.request("GET", f"{declared.url}/_rows?list=CONTACTS").data)
    assert rows == [{"customer_id": "u1", "email_address": "a@example.com", "age": "1"}]
    faults = http.request("POST", f"{declared.url}/_faults", body=b'{"outage": 503}')
    assert faults.status == 200
    assert load(http, declared, []).status == 503
    http.request("POST", f"{declared.url}/_faults", body=b"{}")
    assert http.request("POST", f"{declared.url}/_reset", body=b"").status == 200
    assert declared.rows("CONTACTS") == []
    assert declared.stats()["requests"] == 0


def test_the_fixture_accepts_any_key_list_and_column(
    http: urllib3.PoolManager, local_selligent: LocalSelligent
) -> None:
    answer = load(
        http,
        local_selligent,
        [["e1", "anything"]],
        list_name="EVENTS",
        key="a:b",
        query="keyFields=event_id&fields=event_id,whatever",
    )
    assert answer.status == 200
    assert local_selligent.wait_for_rows(1, "EVENTS", timeout=5)
    assert local_selligent.rows("EVENTS") == [{"event_id": "e1", "whatever": "anything"}]
    assert load(http, local_selligent, [], key="no-secret").status == 401


def test_declaring_a_list_makes_undeclared_ones_404(
    http: urllib3.PoolManager, local_selligent: LocalSelligent
) -> None:
    local_selligent.declare_list("EVENTS", ["event_id"])
    assert load(http, local_selligent, [], list_name="OTHER").status == 404


def test_a_column_type_is_checked_when_built() -> None:
    with pytest.raises(ValueError, match="unknown column type"):
        SelligentColumn("x", "Money")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="twice"):
        SelligentList("L", ("a", "a"))
    parsed = SelligentList.from_json("L", {"id": "Long", "n": {"type": "Text", "max_length": 5}})
    assert parsed.columns == (SelligentColumn("id", "Long"), SelligentColumn("n", "Text", 5))


@pytest.mark.slow
def test_the_process_mode_serves_loads_and_stops_when_stdin_closes() -> None:
    lists = '{"CONTACTS": {"customer_id": "Text", "age": "Numeric"}}'
    proc = subprocess.Popen(
        [sys.executable, "-m", "selligent_segment.testing", "--selligent", "--lists", lists],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("LISTENING http://127.0.0.1:")
        url = line.split()[1]
        http = urllib3.PoolManager(retries=False, timeout=5.0)
        answer = http.request(
            "POST",
            f"{url}/Portal/Api/organizations/o/lists/CONTACTS/data/load"
            "?keyFields=customer_id&fields=customer_id,age",
            body=orjson.dumps([["u1", "1"], ["u2", "x"]]),
            headers={"X-ApiKey": "k:s"},
        )
        assert orjson.loads(answer.data)["result_code"] == "PartiallySucceeded"
        rows = orjson.loads(http.request("GET", f"{url}/_rows?list=CONTACTS").data)
        assert rows == [{"customer_id": "u1", "age": "1"}]
        assert proc.stdin is not None
        proc.stdin.close()
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize(
    ("column_type", "good", "bad"),
    [
        ("Numeric", "-12", "1.5"),
        ("Long", "9007199254740993", "x"),
        ("Float", "1.5e3", "one"),
        ("Boolean", "TRUE", "yes"),
        ("Date", "2026-11-30", "30/11/2026"),
        ("DateTime", "2026-11-30T10:00:00.000Z", "2026-11-30 25:00"),
        ("Json", '{"a": [1]}', "{a}"),
        ("LongText", "anything at all", None),
    ],
)
def test_each_column_type_is_checked(
    http: urllib3.PoolManager, column_type: Any, good: str, bad: str | None
) -> None:
    lists = [SelligentList("L", ("id", SelligentColumn("v", column_type)))]
    with LocalSelligent(lists=lists) as server:
        rows = [["1", good], ["2", ""]] + ([["3", bad]] if bad is not None else [])
        answer = orjson.loads(
            load(http, server, rows, list_name="L", query="keyFields=id&fields=id,v").data
        )
        failed = [(r["record_index"], r["validation_code"]) for r in answer["invalid_records"]]
        assert failed == ([(2, "InvalidType")] if bad is not None else [])
        assert [r["v"] for r in server.rows("L")] == [good, ""]


@pytest.mark.parametrize(
    ("column", "good", "bad"),
    [
        pytest.param(
            SelligentColumn("v", "Numeric"),
            ["2147483647", "-2147483648", "+7", "007"],
            ["2147483648", "-2147483649", "\u0663", "1_000", " 1"],
            id="Numeric",
        ),
        pytest.param(
            SelligentColumn("v", "Long"),
            ["9223372036854775807", "-9223372036854775808"],
            ["9223372036854775808", "-9223372036854775809", "\uff11", "9" * 5000],
            id="Long",
        ),
        pytest.param(
            SelligentColumn("v", "Float"),
            ["1e308", ".5", "5.", "-1.5E-3", "+0"],
            ["1_000", "nan", "inf", "-Infinity", "1e309", "\u0661.5", " 1.5", "1.5\n", "0x1p3"],
            id="Float",
        ),
        pytest.param(
            SelligentColumn("v", "Text"),
            ["x" * 4000, "\U0001f600" * 2000],
            ["x" * 4001, "\U0001f600" * 2000 + "x"],
            id="Text",
        ),
        pytest.param(
            SelligentColumn("v", "Text", 5000), ["x" * 5000], ["x" * 5001], id="Text-5000"
        ),
        pytest.param(SelligentColumn("v", "LongText"), ["x" * 10_000], [], id="LongText"),
    ],
)
def test_values_selligent_refuses_are_invalid_records(
    http: urllib3.PoolManager, column: SelligentColumn, good: list[str], bad: list[str]
) -> None:
    """Found by a review: the stand-in accepted values Selligent refuses: a Numeric beyond
    32 bits, a Long beyond 64, non-ASCII digits (``\\d``), a Float Python reads but a
    decimal is not (``1_000``, ``nan``, ``inf``), a Text over 4,000 characters with no
    ``max_length`` declared. Each is an invalid record now; the limits themselves pass."""
    with LocalSelligent(lists=[SelligentList("L", ("id", column))]) as server:
        rows = [[str(i), value] for i, value in enumerate(good + bad)]
        answer = orjson.loads(
            load(http, server, rows, list_name="L", query="keyFields=id&fields=id,v").data
        )
        failed = [(r["record_index"], r["validation_code"]) for r in answer["invalid_records"]]
        code = "MaxStringLengthExceeded" if column.type == "Text" else "InvalidType"
        assert failed == [(i, code) for i in range(len(good), len(rows))]
        assert [r["v"] for r in server.rows("L")] == good


def test_an_undeclared_text_column_holds_at_most_4000_characters(
    http: urllib3.PoolManager, local_selligent: LocalSelligent
) -> None:
    """Found by a review: without declared lists any length passed; Selligent's Text
    holds 4,000 characters (UTF-16 units) when no other maximum is declared."""
    rows = [["1", "x" * 4000], ["2", "x" * 4001], ["3", "\u00e9" * 4001]]
    answer = orjson.loads(load(http, local_selligent, rows, query="keyFields=id&fields=id,v").data)
    assert [
        (r["record_index"], r["field_name"], r["validation_code"])
        for r in answer["invalid_records"]
    ] == [
        (1, "v", "MaxStringLengthExceeded"),
        (2, "v", "MaxStringLengthExceeded"),
    ]
    assert [r["id"] for r in local_selligent.rows("CONTACTS")] == ["1"]


def test_more_unreadable_requests_are_400_validation_failed(
    http: urllib3.PoolManager, local_selligent: LocalSelligent
) -> None:
    base = "keyFields=id&fields=id,v"
    for rows, query in [
        ([["1", "a"]], base + "&deduplication=Never"),
        ([["1", "a"]], base + "&mode=Batch"),
        ([[1, 2]], "keyFields=id"),  # no fields and no header row
        ([["1", "a"]], "keyFields=id&fields=id,id"),
    ]:
        answer = load(http, local_selligent, rows, query=query)
        assert answer.status == 400, query
        assert orjson.loads(answer.data)["result_code"] == "ValidationFailed"


def test_other_routes_and_paths_are_404_and_bad_control_bodies_400(
    http: urllib3.PoolManager, local_selligent: LocalSelligent
) -> None:
    url = local_selligent.url
    assert http.request("GET", f"{url}/nowhere").status == 404
    assert http.request("POST", f"{url}/nowhere", body=b"").status == 404
    short = f"{url}/Portal/Api/organizations/acme/data/load"
    assert http.request("POST", short, body=b"[]", headers={"X-ApiKey": "a:b"}).status == 404
    assert http.request("POST", f"{url}/_faults", body=b'{"rates": 5}').status == 400
    assert [r.status for r in local_selligent.requests] == [404]


def test_status_faults_carry_retry_after_and_a_reset_outside_429(
    http: urllib3.PoolManager, local_selligent: LocalSelligent
) -> None:
    local_selligent.set_faults(
        FaultPlan(
            script=[
                Fault.http(503, retry_after=3, x_ratelimit_reset=9),
                Fault.http(500, delay=0.01),
                Fault.latency(0.01),
            ]
        )
    )
    first = load(http, local_selligent, [])
    assert (first.status, first.headers["Retry-After"], first.headers["X-RateLimit-Reset"]) == (
        503,
        "3",
        "9",
    )
    second = load(http, local_selligent, [])
    assert orjson.loads(second.data)["result_code"] == "InternalServerError"
    assert load(http, local_selligent, []).status == 200


def test_lifecycle_errors_and_the_latency_option(http: urllib3.PoolManager) -> None:
    with pytest.raises(ValueError, match="latency"):
        LocalSelligent(latency=-1)
    server = LocalSelligent(latency=0.01, lists={"L": ["id"]})
    with pytest.raises(RuntimeError, match="not started"):
        _ = server.port
    assert repr(server) == "<LocalSelligent stopped>"
    with server:
        with pytest.raises(RuntimeError, match="already started"):
            server.start()
        assert load(
            http, server, [["1"]], list_name="L", query="keyFields=id&fields=id"
        ).status == (200)
        assert server.wait_for_requests(1, timeout=5)
        assert server.wait_for_arrivals(1, timeout=5)
        assert server.wait_for_rows(1, timeout=5)
        assert not server.wait_for_rows(2, "L", timeout=0)
        assert server.row("OTHER", id="1") is None
    server.stop()  # idempotent


def test_a_list_upserted_on_two_different_keys_indexes_both(
    http: urllib3.PoolManager, local_selligent: LocalSelligent
) -> None:
    by_id = "keyFields=id&fields=id,email"
    load(http, local_selligent, [["1", "a@example.com"]], list_name="L", query=by_id)
    by_email = "keyFields=email&fields=email,name"
    load(http, local_selligent, [["a@example.com", "Ann"]], list_name="L", query=by_email)
    load(http, local_selligent, [["b@example.com", "Bob"]], list_name="L", query=by_email)
    load(http, local_selligent, [["2", "c@example.com"]], list_name="L", query=by_id)
    assert local_selligent.rows("L") == [
        {"id": "1", "email": "a@example.com", "name": "Ann"},
        {"email": "b@example.com", "name": "Bob"},
        {"id": "2", "email": "c@example.com"},
    ]
    assert local_selligent.row("L", email="c@example.com") == {"id": "2", "email": "c@example.com"}


def test_an_update_that_changes_another_key_column_moves_the_row_in_its_index(
    http: urllib3.PoolManager, local_selligent: LocalSelligent
) -> None:
    """Found by a review: an upsert updated a row in place without re-indexing it, so after
    a load by ``id`` changed ``email``, ``row(email=new)`` was None, ``row(email=old)`` gave
    the updated row, and a load keyed by ``email`` inserted a duplicate. Every index follows
    a row's new values now; of rows sharing a key, the first inserted is the one found."""
    by_id = "keyFields=id&fields=id,email"
    by_email = "keyFields=email&fields=email,name"

    def upsert(rows: list[list[str]], query: str) -> tuple[int, int]:
        answer = orjson.loads(load(http, local_selligent, rows, list_name="L", query=query).data)
        return answer["number_of_inserted_records"], answer["number_of_updated_records"]

    assert upsert([["1", "old@example.com"], ["2", "two@example.com"]], by_id) == (2, 0)
    assert local_selligent.row("L", email="old@example.com") == {
        "id": "1",
        "email": "old@example.com",
    }
    assert upsert([["1", "new@example.com"]], by_id) == (0, 1)
    assert local_selligent.row("L", email="old@example.com") is None
    assert local_selligent.row("L", email="new@example.com") == {
        "id": "1",
        "email": "new@example.com",
    }
    assert upsert([["new@example.com", "Ada"]], by_email) == (0, 1)
    # Row 2 takes row 1's address: row 1, inserted first, is still the one found by it...
    assert upsert([["2", "new@example.com"]], by_id) == (0, 1)
    assert local_selligent.row("L", email="new@example.com") == {
        "id": "1",
        "email": "new@example.com",
        "name": "Ada",
    }
    assert local_selligent.row("L", email="two@example.com") is None
    # ...until row 1 leaves it: then row 2 is.
    assert upsert([["1", "third@example.com"]], by_id) == (0, 1)
    assert local_selligent.row("L", email="new@example.com") == {
        "id": "2",
        "email": "new@example.com",
    }
    assert upsert([["new@example.com", "Bob"]], by_email) == (0, 1)
    assert local_selligent.rows("L") == [
        {"id": "1", "email": "third@example.com", "name": "Ada"},
        {"id": "2", "email": "new@example.com", "name": "Bob"},
    ]


def test_api_keys_given_as_one_string_are_refused() -> None:
    """Found by a review: ``LocalSelligent(api_keys="key:secret")`` took the string for the
    set of its characters, so it answered 401 to the key it was given. A bare str or bytes
    is a TypeError now, which does not show the key."""
    for keys in (KEY, KEY.encode()):
        with pytest.raises(TypeError, match=r"api_keys=\[key\]") as caught:
            LocalSelligent(api_keys=keys)  # type: ignore[arg-type]
        assert "svc-secret" not in str(caught.value)


def test_store_rows_false_keeps_keys_and_exact_counts(http: urllib3.PoolManager) -> None:
    with LocalSelligent(store_rows=False, record_requests=False) as server:
        query = "keyFields=id&fields=id,v"
        load(http, server, [["1", "a"], ["2", "b"]], list_name="L", query=query)
        answer = orjson.loads(load(http, server, [["1", "c"]], list_name="L", query=query).data)
        assert answer["number_of_updated_records"] == 1
        assert server.rows("L") == [{"id": "1"}, {"id": "2"}]
        assert server.stats()["rows"] == 2
        assert server.requests == []


def test_lists_from_json_shapes() -> None:
    assert SelligentList.from_json("L", ["a", "b"]).columns == (
        SelligentColumn("a"),
        SelligentColumn("b"),
    )
    with pytest.raises(ValueError, match="expected an object"):
        SelligentList.from_json("L", 5)
    with pytest.raises(ValueError, match="expected a type"):
        SelligentList.from_json("L", {"a": 5})
    with pytest.raises(ValueError, match="max_length"):
        SelligentColumn("a", "Text", 0)
