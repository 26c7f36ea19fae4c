"""SelligentTransport.post on scripted answers (destination/_transport.py): the order rows of
one contact are loaded in, and what a load that says it failed settles. No socket: a fake
HTTP layer answers each ``data/load`` and applies it to an in-memory table."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
import pytest
from _destination import tenant_table

from selligent_segment.delivery._retry import Outcome
from selligent_segment.delivery._transport import Answer, Response
from selligent_segment.destination import map_event, parse_config
from selligent_segment.destination._mapping import MappedRow
from selligent_segment.destination._rows import row_payload
from selligent_segment.destination._transport import SelligentTransport

BASE = "https://acme.slgnt.eu/Portal/Api/organizations/acme"
CONFIG = parse_config({"tenants": {"acme": tenant_table()}}, {"KEY": "key:secret"})


def body(event: dict[str, Any]) -> bytes:
    row = map_event(CONFIG.tenants["acme"], event)
    assert isinstance(row, MappedRow)
    return row_payload(row)


def identify(n: int, user: str, **traits: Any) -> bytes:
    return body({"type": "identify", "messageId": f"m{n}", "userId": user, "traits": traits})


class FakeHttp:
    """Loads each request's rows into ``tables`` (an upsert on the key fields), in the
    order the requests come, and answers each with ``answer(rows)``."""

    def __init__(self, answer: Callable[[list[dict[str, str]]], dict[str, Any]] | None = None):
        self.tables: dict[str, dict[tuple[str, ...], dict[str, str]]] = {}
        self.requests: list[list[dict[str, str]]] = []
        self.answer = answer or (lambda rows: {"result_code": "Succeeded"})

    def exchange(
        self,
        url: str,
        payload: bytes,
        headers: dict[str, str],
        *,
        secret: str,
        interpret: Callable[[Answer], Response],
        max_body: int,
    ) -> Response:
        query = parse_qs(urlsplit(url).query)
        columns = query["fields"][0].split(",")
        key = query["keyFields"][0].split(",")
        table = self.tables.setdefault(urlsplit(url).path.split("/")[-3], {})
        rows = [dict(zip(columns, values, strict=True)) for values in orjson.loads(payload)]
        self.requests.append(rows)
        answer = self.answer(rows)
        if answer["result_code"] in ("Succeeded", "PartiallySucceeded"):
            bad = {r["record_index"] for r in answer.get("invalid_records", [])}
            for i, row in enumerate(rows):
                if i not in bad:
                    table.setdefault(tuple(row[k] for k in key), {}).update(row)
        return interpret(Answer(200, "OK", {}, orjson.dumps(answer)))

    def close(self) -> None:
        pass


def test_rows_of_one_contact_load_in_arrival_order_across_column_sets() -> None:
    # The second identify sets fewer traits: other columns, so another request. Sent
    # after the group of the first and third (as it once was), its older email won.
    http = FakeHttp()
    bodies = [
        identify(1, "u1", email="old@example.com", firstName="Jo"),
        identify(2, "u1", email="mid@example.com"),
        identify(3, "u1", email="new@example.com", firstName="Jo"),
    ]
    response = SelligentTransport(http).post(BASE, "key:secret", bodies)  # type: ignore[arg-type]
    assert (response.outcome, response.items, response.requests) == (Outcome.DELIVERED, None, 3)
    (contact,) = http.tables["CONTACTS"].values()
    assert contact["email_address"] == "new@example.com"
    assert [[r["email_address"] for r in rows] for rows in http.requests] == [
        ["old@example.com"],
        ["mid@example.com"],
        ["new@example.com"],
    ]


def test_other_contacts_rows_still_share_a_request() -> None:
    http = FakeHttp()
    bodies = [
        identify(1, "u1", email="a@example.com", firstName="A"),
        identify(2, "u2", email="b@example.com"),
        identify(3, "u3", email="c@example.com", firstName="C"),
        identify(4, "u2", email="b2@example.com"),
    ]
    response = SelligentTransport(http).post(BASE, "key:secret", bodies)  # type: ignore[arg-type]
    assert (response.outcome, response.requests) == (Outcome.DELIVERED, 2)
    assert [[r["email_address"] for r in rows] for rows in http.requests] == [
        ["a@example.com", "c@example.com"],
        ["b@example.com", "b2@example.com"],
    ]


def _one_invalid(code: str) -> Callable[[list[dict[str, str]]], dict[str, Any]]:
    def answer(rows: list[dict[str, str]]) -> dict[str, Any]:
        return {
            "result_code": code,
            "number_of_inserted_records": 0 if code == "Failed" else len(rows) - 1,
            "number_of_failed_records": len(rows) if code == "Failed" else 1,
            "invalid_records": [
                {
                    "record_index": 1,
                    "field_name": "email_address",
                    "message": "too long",
                    "validation_code": "MaxStringLengthExceeded",
                }
            ],
        }

    return answer


REFUSED = "Selligent refused the row: email_address: too long (MaxStringLengthExceeded)"


def test_a_failed_load_naming_one_row_refuses_it_and_sends_the_others_again() -> None:
    # result_code Failed: nothing of the load was written. The named row is refused; the
    # others were once counted as loaded, and lost.
    http = FakeHttp(_one_invalid("Failed"))
    bodies = [identify(i, f"u{i}", email=f"{i}@example.com") for i in range(3)]
    response = SelligentTransport(http).post(BASE, "key:secret", bodies)  # type: ignore[arg-type]
    assert response.outcome is Outcome.RETRY
    assert response.items == {1: REFUSED}  # rows 0 and 2 follow the retry
    assert response.error is not None
    assert "Failed" in response.error
    assert http.tables.get("CONTACTS", {}) == {}


def test_a_failed_load_naming_every_row_of_its_request_lets_the_turn_go_on() -> None:
    """A request whose every row Selligent refused on its own answers ``Failed``: that
    ended the turn as a retry, and the requests after it (the tracks, behind an
    identify of one invalid row) were never sent, charged a retry each time, and at last
    dead-lettered."""

    def answer(rows: list[dict[str, str]]) -> dict[str, Any]:
        if "event_id" not in rows[0]:  # the identify's request: its one row refused
            invalid = [{"record_index": 0, "field_name": "email_address", "message": "too long"}]
            return {"result_code": "Failed", "invalid_records": invalid}
        return {"result_code": "Succeeded"}

    http = FakeHttp(answer)
    bodies = [identify(0, "u0", email="0@example.com"), track(1, "u1")]
    response = SelligentTransport(http).post(BASE, "key:secret", bodies)  # type: ignore[arg-type]
    assert response.outcome is Outcome.DELIVERED
    assert response.items == {0: "Selligent refused the row: email_address: too long", 1: None}
    assert len(http.requests) == 2  # the track went too


def test_a_partly_successful_load_delivers_the_rows_it_does_not_name() -> None:
    http = FakeHttp(_one_invalid("PartiallySucceeded"))
    bodies = [identify(i, f"u{i}", email=f"{i}@example.com") for i in range(3)]
    response = SelligentTransport(http).post(BASE, "key:secret", bodies)  # type: ignore[arg-type]
    assert response.outcome is Outcome.DELIVERED
    assert response.items == {0: None, 1: REFUSED, 2: None}
    assert sorted(http.tables["CONTACTS"]) == [("u0",), ("u2",)]


def track(n: int, user: str) -> bytes:
    return body({"type": "track", "messageId": f"t{n}", "userId": user, "event": "Order"})


def test_identify_requests_still_go_before_every_track_when_a_batch_is_cut() -> None:
    # Cut for key order (A's identifies in two column sets), the batch once sent B's
    # track in the first part, before B's identify in the second: an interaction
    # loaded before its contact existed.
    http = FakeHttp()
    bodies = [
        identify(1, "uA", email="a@example.com", firstName="A"),
        track(2, "uB"),
        identify(3, "uA", email="a2@example.com"),
        identify(4, "uB", email="b@example.com"),
    ]
    response = SelligentTransport(http).post(BASE, "key:secret", bodies)  # type: ignore[arg-type]
    assert (response.outcome, response.requests) == (Outcome.DELIVERED, 3)
    assert [[r.get("event_id") or r["customer_id"] for r in rows] for rows in http.requests] == [
        ["uA"],  # identifies first, A's in the order they came
        ["uA", "uB"],
        ["t2"],  # then the track
    ]
    assert http.tables["CONTACTS"][("uA",)]["email_address"] == "a2@example.com"


def test_a_failed_load_naming_rows_it_did_not_have_refuses_none_of_them() -> None:
    # record_index equal to the number of rows raised IndexError (the tenant's queue
    # then stuck, retried every second); -1 refused the last row, which it did not name.
    def answer(rows: list[dict[str, str]]) -> dict[str, Any]:
        invalid = [{"record_index": i, "field_name": "f", "message": "m"} for i in (len(rows), -1)]
        return {"result_code": "Failed", "invalid_records": invalid}

    http = FakeHttp(answer)
    bodies = [identify(i, f"u{i}", email=f"{i}@example.com") for i in range(2)]
    response = SelligentTransport(http).post(BASE, "key:secret", bodies)  # type: ignore[arg-type]
    assert response.outcome is Outcome.RETRY
    assert not response.items


@pytest.mark.parametrize("invalid", [[], None], ids=["empty", "absent"])
def test_a_failed_load_naming_no_row_is_retried_not_refused(invalid: object) -> None:
    # result_code Failed and no row named: nothing says the rows are at fault (Selligent
    # failed to load them), so they go again, bounded by the retry policy; refusing them
    # lost the whole batch at once.
    def answer(rows: list[dict[str, str]]) -> dict[str, Any]:
        return {"result_code": "Failed", "invalid_records": invalid, "errors": ["timeout"]}

    http = FakeHttp(answer)
    bodies = [identify(i, f"u{i}", email=f"{i}@example.com") for i in range(2)]
    response = SelligentTransport(http).post(BASE, "key:secret", bodies)  # type: ignore[arg-type]
    assert response.outcome is Outcome.RETRY
    assert not response.items
    assert response.error is not None
    assert "Failed" in response.error


@pytest.mark.parametrize("code", ["ValidationFailed", "NotFound"])
def test_a_load_refused_as_a_whole_is_refused(code: str) -> None:
    # The request itself (its list, its key fields) is wrong: sending it again cannot help.
    def answer(rows: list[dict[str, str]]) -> dict[str, Any]:
        return {"result_code": code, "invalid_records": [], "errors": ["no such list"]}

    http = FakeHttp(answer)
    bodies = [identify(i, f"u{i}", email=f"{i}@example.com") for i in range(2)]
    response = SelligentTransport(http).post(BASE, "key:secret", bodies)  # type: ignore[arg-type]
    assert response.items == {0: f"{code}: no such list", 1: f"{code}: no such list"}


class _TooLarge(FakeHttp):
    """Answers every request with one more row than ``fits`` ``413 Payload Too Large``."""

    def __init__(self, fits: int) -> None:
        super().__init__()
        self.fits = fits

    def exchange(self, url: str, payload: bytes, *args: Any, **kwargs: Any) -> Response:
        if len(orjson.loads(payload)) > self.fits:
            self.requests.append([])
            too_large = Answer(413, "Payload Too Large", {}, b'{"errors":["too large"]}')
            return kwargs["interpret"](too_large)  # type: ignore[no-any-return]
        return super().exchange(url, payload, *args, **kwargs)


def test_a_load_too_large_is_split_by_the_dispatcher_not_refused_row_by_row() -> None:
    """A 413 says the request was too large, nothing of its rows: every row became a dead
    letter, after Segment had been answered 200. The turn now ends refused as a whole,
    no row refused on its own, so the dispatcher bisects it; a row alone is refused."""
    bodies = [identify(i, f"u{i}", email=f"{i}@example.com") for i in range(4)]
    response = SelligentTransport(_TooLarge(fits=2)).post(BASE, "key:secret", bodies)  # type: ignore[arg-type]
    assert response.outcome is Outcome.REJECTED
    assert response.status == 413
    assert not response.items
    half = SelligentTransport(_TooLarge(fits=2)).post(BASE, "key:secret", bodies[:2])  # type: ignore[arg-type]
    assert half.outcome is Outcome.DELIVERED
