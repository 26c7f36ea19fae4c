"""Segment's acceptance rules as LocalSegment applies them: the pure functions, no socket.

``selligent_segment.testing._rules`` decides what Segment answers a ``/v1/batch`` request and
why each item is dropped; the fault parts that need no server (``fault_answer``,
``parse_fault_control``, ``FaultInjector``) are here too. ``test_testing.py`` checks the
same rules end to end over loopback HTTP.
"""

from __future__ import annotations

import base64
import gzip
import json
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from selligent_segment.testing import MAX_REQUEST_BYTES as PUBLIC_MAX_REQUEST_BYTES
from selligent_segment.testing import MockResponse
from selligent_segment.testing._faults import (
    Fault,
    FaultInjector,
    FaultPlan,
    fault_answer,
    parse_fault_control,
)
from selligent_segment.testing._rules import (
    MAX_BATCH_ITEMS,
    MAX_ITEM_BYTES,
    MAX_MESSAGE_ID_CHARS,
    MAX_REQUEST_BYTES,
    OK,
    Answer,
    BatchRequest,
    ParseError,
    basic_user,
    decode_body,
    error_answer,
    error_body,
    item_problem,
    judge_batch,
    key_from_header,
    read_batch,
    reason_phrase,
    retry_count,
    status_code_slug,
)


def basic(user: str, password: str = "") -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def track(mid: str = "m1", **extra: Any) -> dict[str, Any]:
    item: dict[str, Any] = {"type": "track", "event": "Email Opened", "messageId": mid}
    item["userId"] = "u1"
    item.update(extra)
    return item


def body(*items: Any, **extra: Any) -> bytes:
    return json.dumps({"batch": list(items), **extra}).encode()


def request(*items: Any, key: str | None = "k", data_len: int = 10) -> BatchRequest:
    return BatchRequest(key, list(items), data_len)


def error_of(answer: Answer) -> tuple[int, str, str]:
    doc = json.loads(answer.body)
    return answer.status, doc["code"], doc["message"]


# -- answers ------------------------------------------------------------------------------


def test_the_success_and_error_bodies_are_segments() -> None:
    assert (OK.status, json.loads(OK.body), OK.headers) == (200, {"success": True}, ())
    assert json.loads(error_body("invalid_request", "bad")) == {
        "code": "invalid_request",
        "message": "bad",
    }
    answer = error_answer(429, "too_many_requests", "slow down", [("Retry-After", "2")])
    assert error_of(answer) == (429, "too_many_requests", "slow down")
    assert answer.headers == (("Retry-After", "2"),)


@pytest.mark.parametrize(
    ("status", "slug"),
    [
        (503, "service_unavailable"),
        (429, "too_many_requests"),
        (203, "non_authoritative_information"),  # the hyphen too
        (599, "http_599"),  # no standard phrase
    ],
)
def test_status_code_slug(status: int, slug: str) -> None:
    assert status_code_slug(status) == slug
    # MockTransport words an error's default code the same way.
    assert json.loads(MockResponse.error(status).body)["code"] == slug


def test_reason_phrase() -> None:
    assert reason_phrase(503) == "Service Unavailable"
    assert reason_phrase(599) == ""


def test_the_public_limits_are_the_rules_limits() -> None:
    assert PUBLIC_MAX_REQUEST_BYTES == MAX_REQUEST_BYTES == 500 * 1024
    assert (MAX_ITEM_BYTES, MAX_BATCH_ITEMS, MAX_MESSAGE_ID_CHARS) == (32 * 1024, 2500, 100)


# -- the write key ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "user"),
    [
        (basic("wk_1"), "wk_1"),
        (basic("wk_1", "secret"), "wk_1"),  # the password is ignored
        ("  basic " + base64.b64encode(b"wk_1:").decode() + "  ", "wk_1"),
        (basic(""), None),  # no user
        ("Bearer " + base64.b64encode(b"wk_1:").decode(), None),  # not Basic
        ("Basic", None),  # no token
        ("Basic not*base64", None),
        ("Basic " + base64.b64encode(b"\xff\xfe:").decode(), None),  # not UTF-8
    ],
)
def test_basic_user(header: str, user: str | None) -> None:
    assert basic_user(header) == user


def test_key_from_header_without_a_header_is_none() -> None:
    assert key_from_header(None) is None
    assert key_from_header(basic("wk_2")) == "wk_2"


@pytest.mark.parametrize(("value", "count"), [(None, 0), ("3", 3), ("0", 0), ("x", 0), ("", 0)])
def test_retry_count(value: str | None, count: int) -> None:
    assert retry_count(value) == count


# -- items --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("item", "reason"),
    [
        (track(), None),
        ("a string", "not_an_object"),
        ([track()], "not_an_object"),
        (track(type="email"), "invalid_type"),
        ({k: v for k, v in track().items() if k != "type"}, "invalid_type"),
        (track(messageId=""), "missing_message_id"),
        (track(messageId=7), "missing_message_id"),
        (track(messageId="x" * MAX_MESSAGE_ID_CHARS), None),
        (track(messageId="x" * (MAX_MESSAGE_ID_CHARS + 1)), "message_id_too_long"),
        (track(event="   "), "missing_event"),
        (track(event=None), "missing_event"),
        ({"type": "identify", "messageId": "m", "userId": "u"}, None),  # no event needed
        (track(userId=""), "missing_user_id"),
        (track(userId=True), "missing_user_id"),  # a bool is not an id
        (track(userId=42), None),  # an int is
        (track(userId=None, anonymousId="a1"), None),
        (track(userId=None), "missing_user_id"),
    ],
)
def test_item_problem(item: Any, reason: str | None) -> None:
    assert item_problem(item) == reason


# -- bodies -------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", [None, "", "identity", " Identity "])
def test_decode_body_plain(encoding: str | None) -> None:
    raw = body(track())
    assert decode_body(raw, encoding) == ({"batch": [track()]}, len(raw))


@pytest.mark.parametrize("encoding", ["gzip", "x-gzip", "GZIP"])
def test_decode_body_gzip_measures_the_size_after_decompression(encoding: str) -> None:
    raw = body(track())
    assert decode_body(gzip.compress(raw), encoding) == ({"batch": [track()]}, len(raw))


@pytest.mark.parametrize(
    ("raw", "encoding", "code", "message"),
    [
        (b"{}", "br", "invalid_request", "unsupported Content-Encoding"),
        (b"not gzip", "gzip", "invalid_request", "body is not valid gzip"),
        (gzip.compress(b'{"batch": []}')[:-6], "gzip", "invalid_request", "gzip body is truncated"),
        (b"{nope", None, "invalid_request", "body is not valid JSON"),
        (b" " * (MAX_REQUEST_BYTES + 1), None, "request_too_large", "request body exceeds 500 KB"),
        (
            gzip.compress(b" " * (MAX_REQUEST_BYTES + 1)),
            "gzip",
            "request_too_large",
            "request body exceeds 500 KB",
        ),
    ],
)
def test_decode_body_refuses(raw: bytes, encoding: str | None, code: str, message: str) -> None:
    with pytest.raises(ParseError) as refused:
        decode_body(raw, encoding)
    assert (refused.value.code, refused.value.message) == (code, message)


def test_a_body_of_exactly_the_limit_is_decoded() -> None:
    raw = b"{}" + b" " * (MAX_REQUEST_BYTES - 2)
    assert decode_body(raw, None) == ({}, MAX_REQUEST_BYTES)


# -- read_batch ---------------------------------------------------------------------------


def test_read_batch_takes_the_key_from_the_header_first() -> None:
    req = read_batch(basic("from-header"), None, body(track(), writeKey="from-body"))
    assert (req.write_key, req.items, req.n_items, req.error) == ("from-header", [track()], 1, None)
    assert req.data_len == len(body(track(), writeKey="from-body"))
    assert "from-header" not in repr(req)


def test_read_batch_falls_back_to_the_body_key_only_without_a_header() -> None:
    assert read_batch(None, None, body(track(), writeKey="from-body")).write_key == "from-body"
    # A header that names no key is not replaced by the body's.
    assert read_batch("Bearer x", None, body(track(), writeKey="from-body")).write_key is None
    assert read_batch(None, None, body(track(), writeKey="")).write_key is None
    assert read_batch(None, None, body(track(), writeKey=7)).write_key is None


@pytest.mark.parametrize("raw", [b"[]", b'{"batch": {}}', b'{"events": []}', b"{nope"])
def test_read_batch_of_a_body_that_is_not_a_batch_carries_the_400(raw: bytes) -> None:
    req = read_batch(basic("k"), None, raw)
    assert req.items is None
    assert req.n_items == 0
    assert req.error is not None
    assert req.error.status == 400
    assert error_of(req.error)[1] == "invalid_request"


def test_read_batch_gzip_too_large_is_request_too_large() -> None:
    req = read_batch(basic("k"), "gzip", gzip.compress(b" " * (MAX_REQUEST_BYTES + 1)))
    assert req.error is not None
    assert error_of(req.error) == (400, "request_too_large", "request body exceeds 500 KB")


# -- judge_batch --------------------------------------------------------------------------


def test_a_valid_batch_is_accepted_item_by_item() -> None:
    verdict = judge_batch(request(track("a"), track("b")), key_ok=True)
    assert verdict.answer == OK
    assert verdict.reasons == (None, None)


@pytest.mark.parametrize(
    ("key", "message"), [(None, "missing write key"), ("k", "invalid or revoked write key")]
)
def test_a_bad_key_is_401_before_anything_else(key: str | None, message: str) -> None:
    not_a_batch = BatchRequest(key, None, 0, error_answer(400, "invalid_request", "x"))
    for req in (request(track(), key=key), not_a_batch):
        verdict = judge_batch(req, key_ok=False, strict=True)
        assert error_of(verdict.answer) == (401, "unauthorized", message)
        assert verdict.reasons == ()


def test_a_body_that_is_not_a_batch_is_its_400() -> None:
    error = error_answer(400, "invalid_request", "body is not valid JSON")
    assert judge_batch(BatchRequest("k", None, 0, error), key_ok=True).answer == error


def test_invalid_items_are_dropped_silently_with_their_reasons() -> None:
    items = (track("a"), track("b", userId=None), "x", track("c", event=""))
    verdict = judge_batch(request(*items), key_ok=True)
    assert verdict.answer == OK
    assert verdict.reasons == (None, "missing_user_id", "not_an_object", "missing_event")


def test_strict_answers_400_naming_the_first_item_to_drop() -> None:
    verdict = judge_batch(
        request(track("a"), track("b", userId=None), "x"), key_ok=True, strict=True
    )
    assert error_of(verdict.answer) == (400, "invalid_request", "batch item 1: missing_user_id")
    assert verdict.reasons == ()
    assert judge_batch(request(track("a")), key_ok=True, strict=True).answer == OK


def test_more_than_the_item_limit_drops_every_item() -> None:
    items = [track(f"m{i}") for i in range(MAX_BATCH_ITEMS + 1)]
    verdict = judge_batch(request(*items), key_ok=True)
    assert verdict.answer == OK
    assert set(verdict.reasons) == {"too_many_items"}
    assert len(verdict.reasons) == MAX_BATCH_ITEMS + 1
    strict = judge_batch(request(*items), key_ok=True, strict=True)
    assert error_of(strict.answer) == (
        400,
        "invalid_request",
        f"batch has {MAX_BATCH_ITEMS + 1} items; at most {MAX_BATCH_ITEMS} allowed",
    )
    assert judge_batch(request(*items[:MAX_BATCH_ITEMS]), key_ok=True).reasons == (
        (None,) * MAX_BATCH_ITEMS
    )


def _item_of_size(size: int) -> dict[str, Any]:
    item = track(properties={"pad": ""})
    item["properties"]["pad"] = "x" * (size - len(orjson.dumps(item)))
    assert len(orjson.dumps(item)) == size
    return item


def test_an_item_over_32_kb_compact_is_dropped_as_too_large() -> None:
    at_limit, over = _item_of_size(MAX_ITEM_BYTES), _item_of_size(MAX_ITEM_BYTES + 1)
    data_len = MAX_ITEM_BYTES * 3  # the whole body is over the item limit
    verdict = judge_batch(request(at_limit, over, key="k", data_len=data_len), key_ok=True)
    assert verdict.reasons == (None, "too_large")
    # Measured re-serialised compactly: pretty-printed whitespace on the wire does not count.
    spaced = json.dumps({"batch": [at_limit]}, indent=4).encode()
    assert len(spaced) > MAX_ITEM_BYTES + 100
    assert judge_batch(read_batch(basic("k"), None, spaced), key_ok=True).reasons == (None,)


def test_the_size_of_items_is_only_measured_when_the_body_could_hold_a_large_one() -> None:
    # data_len is what the body measured: at or under the item limit, no item can be over it.
    over = _item_of_size(MAX_ITEM_BYTES + 1)
    assert judge_batch(request(over, data_len=MAX_ITEM_BYTES), key_ok=True).reasons == (None,)


def test_refuse_is_asked_about_acceptable_items_only() -> None:
    asked: list[Any] = []

    def refuse(item: Any) -> str | None:
        asked.append(item["messageId"])
        return "vetoed" if item["messageId"] == "b" else None

    items = (track("a"), track("b"), track("c", userId=None))
    verdict = judge_batch(request(*items), key_ok=True, refuse=refuse)
    assert verdict.reasons == (None, "vetoed", "missing_user_id")
    assert asked == ["a", "b"]
    strict = judge_batch(request(*items), key_ok=True, strict=True, refuse=refuse)
    assert error_of(strict.answer) == (400, "invalid_request", "batch item 1: vetoed")


_ITEMS = st.one_of(
    st.builds(
        track,
        mid=st.text(max_size=3),
        userId=st.one_of(st.none(), st.text(max_size=2), st.integers(), st.booleans()),
        event=st.one_of(st.none(), st.sampled_from(["", " ", "E"])),
    ),
    st.integers(),
    st.none(),
)


@given(items=st.lists(_ITEMS, max_size=8))
def test_judge_is_item_problem_per_item_and_strict_is_all_or_nothing(items: list[Any]) -> None:
    lenient = judge_batch(request(*items), key_ok=True)
    assert lenient.answer == OK
    assert lenient.reasons == tuple(item_problem(item) for item in items)
    strict = judge_batch(request(*items), key_ok=True, strict=True)
    assert (strict.answer == OK) == all(r is None for r in lenient.reasons)
    assert judge_batch(request(*items), key_ok=True) == lenient  # the same answer every time


# -- the fault parts that are pure --------------------------------------------------------


def test_fault_answer_is_segments_error_body_with_the_fault_headers() -> None:
    answer = fault_answer(Fault.http(429, retry_after=2, x_ratelimit_reset="1700000000"))
    assert error_of(answer) == (429, "too_many_requests", "injected fault: HTTP 429")
    assert answer.headers == (("Retry-After", "2"), ("X-RateLimit-Reset", "1700000000"))
    assert fault_answer(Fault.http(599)).headers == ()
    assert error_of(fault_answer(Fault.http(599)))[1] == "http_599"


@pytest.mark.parametrize(
    ("raw", "outage"),
    [
        (b"", None),
        (b"{}", None),
        (b'{"outage": 503}', 503),
        (b'{"outage": true}', None),  # a bool is not a status
        (b'{"outage": "503"}', None),
        ('{"seed": 1, "rates": {"500": 0.5}, "outage": 502}', 502),
    ],
)
def test_parse_fault_control(raw: bytes | str, outage: int | None) -> None:
    plan, got = parse_fault_control(raw)
    assert isinstance(plan, FaultPlan)
    assert got == outage


@pytest.mark.parametrize(
    "raw", [b"{nope", b"[]", b'{"bogus": 1}', b'{"rates": {"500": 2}}', b'{"seed": "x"}']
)
def test_parse_fault_control_refuses(raw: bytes) -> None:
    with pytest.raises((ValueError, TypeError)):
        parse_fault_control(raw)


def test_the_injector_plays_per_key_then_script_then_the_mix_and_outage_first() -> None:
    plan = FaultPlan(script=[503, "drop"], per_key={"k1": [401]})
    injector = FaultInjector(plan)
    assert injector.next("k1") == Fault.http(401)
    assert injector.next("k1") == Fault.http(503)  # k1's script is used up: the shared one
    injector.start_outage(502, retry_after=3)
    assert injector.next("k2") == Fault.http(502, retry_after=3)
    injector.end_outage()
    assert injector.next("k2") == Fault.drop()
    assert injector.next("k2") is None
    injector.install(plan)  # a plan installed again starts afresh
    assert injector.next(None) == Fault.http(503)


def test_the_injector_mix_is_seeded() -> None:
    def draws(seed: int) -> list[Fault | None]:
        injector = FaultInjector(FaultPlan.mix(seed=seed, rates={500: 0.5, "drop": 0.2}))
        return [injector.next("k") for _ in range(50)]

    assert draws(7) == draws(7)
    kinds = {None if f is None else (f.kind, f.status) for f in draws(7)}
    assert kinds == {None, ("status", 500), ("drop", 0)}
