"""Tests of selligent_segment.testing.LocalSegment, over real loopback HTTP."""

from __future__ import annotations

import base64
import contextlib
import gzip
import http.client
import io
import json
import os
import select
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from selligent_segment.testing import (
    MAX_BATCH_ITEMS,
    MAX_ITEM_BYTES,
    MAX_REQUEST_BYTES,
    DroppedEvent,
    Fault,
    FaultPlan,
    LocalSegment,
    RecordedRequest,
    local_segment,  # noqa: F401 - registers the fixture, as a conftest would
)
from selligent_segment.testing._process import _pipe_or_socket

pytest_plugins = ["pytester"]

KEY = "wk_test_1"
REPO = Path(__file__).resolve().parents[1]


def auth(key: str) -> str:
    return "Basic " + base64.b64encode(f"{key}:".encode()).decode()


def track(mid: str, **extra: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "type": "track",
        "event": "Email Opened",
        "messageId": mid,
        "userId": "u1",
        "properties": {"email_id": "e1"},
    }
    item.update(extra)
    return item


class Reply:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)


def send(
    server: LocalSegment,
    payload: Any = None,
    *,
    key: str | None = KEY,
    raw: bytes | None = None,
    headers: dict[str, str] | None = None,
    compress: bool = False,
    conn: http.client.HTTPConnection | None = None,
    method: str = "POST",
    path: str = "/v1/batch",
) -> Reply:
    """One request; a fresh connection unless ``conn`` is given."""
    body = (
        raw if raw is not None else (json.dumps(payload).encode() if payload is not None else b"")
    )
    hdrs = {"Content-Type": "application/json"}
    if key is not None:
        hdrs["Authorization"] = auth(key)
    if compress:
        body = gzip.compress(body)
        hdrs["Content-Encoding"] = "gzip"
    hdrs.update(headers or {})
    own = conn is None
    c = conn or http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        c.request(method, path, body=body if method == "POST" else None, headers=hdrs)
        resp = c.getresponse()
        data = resp.read()
        return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)
    finally:
        if own:
            c.close()


def batch(*items: dict[str, Any]) -> dict[str, Any]:
    return {"batch": list(items), "sentAt": "2024-01-01T00:00:00.000Z"}


@pytest.fixture
def seg() -> Iterator[LocalSegment]:
    with LocalSegment() as server:
        yield server


# -- basic delivery and records ---------------------------------------------------------------


def test_accepts_batch_and_records_it(seg: LocalSegment) -> None:
    r = send(seg, batch(track("m1"), track("m2"), track("m3")), headers={"X-Retry-Count": "2"})
    assert r.status == 200
    assert r.json() == {"success": True}
    assert [e["messageId"] for e in seg.accepted] == ["m1", "m2", "m3"]
    assert seg.accepted[0] == track("m1")  # exactly as sent, nothing added
    assert seg.message_ids() == {"m1", "m2", "m3"}
    assert seg.events(KEY) == seg.accepted
    assert seg.events("other") == []
    (req,) = seg.requests
    assert isinstance(req, RecordedRequest)
    assert (req.write_key, req.status, req.n_items, req.n_accepted) == (KEY, 200, 3, 3)
    assert req.retry_count == 2
    assert req.nbytes > 0
    assert req.headers["content-type"] == "application/json"
    assert req.fault is None
    assert req.received_at <= time.monotonic()
    assert seg.url == f"http://127.0.0.1:{seg.port}"
    assert seg.stats() == {
        "accepted": 3,
        "unique_message_ids": 3,
        "requests": 1,
        "dropped": 0,
        "duplicates": 0,
    }


def test_events_by_write_key_and_clear(seg: LocalSegment) -> None:
    send(seg, batch(track("a1")), key="ka")
    send(seg, batch(track("b1"), track("b2")), key="kb")
    assert [e["messageId"] for e in seg.events("kb")] == ["b1", "b2"]
    assert [e["messageId"] for e in seg.events("ka")] == ["a1"]
    seg.clear()
    assert seg.accepted == []
    assert seg.requests == []
    assert seg.message_ids() == set()
    assert seg.stats()["requests"] == 0
    # a cleared id can be accepted again
    assert send(seg, batch(track("a1"))).status == 200
    assert seg.accepted_count == 1


def test_keep_alive_serves_several_requests_on_one_connection(seg: LocalSegment) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", seg.port, timeout=5)
    try:
        send(seg, batch(track("k1")), conn=conn)
        sock = conn.sock
        assert sock is not None
        for i in range(2, 6):
            assert send(seg, batch(track(f"k{i}")), conn=conn).status == 200
        assert conn.sock is sock
    finally:
        conn.close()
    assert seg.accepted_count == 5


def test_stop_closes_idle_keep_alive_connections() -> None:
    server = LocalSegment().start()
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        assert send(server, batch(track("x")), conn=conn).status == 200
        server.stop()
        with pytest.raises((http.client.HTTPException, OSError)):
            send(server, batch(track("y")), conn=conn)
    finally:
        conn.close()
    server.stop()  # idempotent
    with pytest.raises(RuntimeError):
        _ = server.url


def test_the_loopback_servers_share_one_connection_tracker() -> None:
    from selligent_segment.testing._forward_proxy import ForwardProxy, _ProxyServer
    from selligent_segment.testing._server import ConnectionTracker, LoopbackServer

    for server in (LoopbackServer, _ProxyServer):
        assert issubclass(server, ConnectionTracker)
        assert {"track", "untrack", "close_connections"}.isdisjoint(vars(server))
    with ForwardProxy() as proxy:  # an idle client connection is shut when it stops
        client = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        try:
            client.sendall(b"GET http://127.0.0.1:9/ HTTP/1.1\r\nHost: x\r\n\r\n")
            assert client.recv(12).startswith(b"HTTP/1.")  # served: the connection is open
            proxy.stop()
            while client.recv(65536):  # the rest of the answer, then end of stream
                pass
        finally:
            client.close()


def test_chunked_body_is_accepted(seg: LocalSegment) -> None:
    body = json.dumps(batch(track("c1"), track("c2"))).encode()
    conn = http.client.HTTPConnection("127.0.0.1", seg.port, timeout=5)
    try:
        conn.request(
            "POST",
            "/v1/batch",
            body=iter([body[:10], body[10:]]),
            headers={"Authorization": auth(KEY), "Transfer-Encoding": "chunked"},
            encode_chunked=True,
        )
        assert conn.getresponse().status == 200
    finally:
        conn.close()
    assert seg.message_ids() == {"c1", "c2"}


def test_urllib_client_works(seg: LocalSegment) -> None:
    req = urllib.request.Request(
        seg.url + "/v1/batch",
        data=json.dumps(batch(track("u1"))).encode(),
        headers={"Authorization": auth(KEY), "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert resp.status == 200
    assert seg.message_ids() == {"u1"}


# -- auth -------------------------------------------------------------------------------------


def test_write_key_in_body_when_no_header(seg: LocalSegment) -> None:
    payload = batch(track("b1"))
    payload["writeKey"] = "body-key"
    assert send(seg, payload, key=None).status == 200
    assert seg.requests[0].write_key == "body-key"
    assert seg.events("body-key")[0]["messageId"] == "b1"


def test_header_wins_over_body_key() -> None:
    with LocalSegment(write_keys=["good"]) as server:
        payload = batch(track("h1"))
        payload["writeKey"] = "good"
        r = send(server, payload, key="bad")
        assert r.status == 401
        assert send(server, payload, key=None).status == 200


@pytest.mark.parametrize(
    "authorization",
    [None, "Basic !!!notbase64", "Bearer abc", "Basic " + base64.b64encode(b":").decode()],
)
def test_missing_or_malformed_auth_is_401(seg: LocalSegment, authorization: str | None) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    r = send(seg, batch(track("m")), key=None, headers=headers)
    assert r.status == 401
    assert r.json()["code"] == "unauthorized"
    assert seg.accepted == []
    assert seg.requests[0].status == 401


def test_only_listed_keys_and_rotation() -> None:
    with LocalSegment(write_keys=["old-secret-key"]) as server:
        assert send(server, batch(track("1")), key="old-secret-key").status == 200
        r = send(server, batch(track("2")), key="new-secret-key")
        assert r.status == 401
        assert "new-secret-key" not in r.body.decode()
        assert set(r.json()) == {"code", "message"}
        server.add_write_key("new-secret-key")
        assert send(server, batch(track("2")), key="new-secret-key").status == 200
        server.revoke_write_key("old-secret-key")
        r = send(server, batch(track("3")), key="old-secret-key")
        assert r.status == 401
        assert "old-secret-key" not in r.body.decode()
        assert server.message_ids() == {"1", "2"}


def test_revoke_with_any_key_accepted(seg: LocalSegment) -> None:
    seg.revoke_write_key("leaked")
    assert send(seg, batch(track("1")), key="leaked").status == 401
    assert send(seg, batch(track("1")), key="other").status == 200
    seg.add_write_key("leaked")
    assert send(seg, batch(track("2")), key="leaked").status == 200


def test_reprs_never_show_write_keys(seg: LocalSegment) -> None:
    secret = "s3cr3t-write-key"
    send(seg, batch(track("r1"), {"type": "track"}), key=secret)
    plan = FaultPlan(per_key={secret: [500]}, rates={500: 0.1}, mix_keys=[secret])
    texts = [repr(seg), repr(seg.requests), repr(seg.dropped), repr(plan), str(plan)]
    assert all(secret not in t for t in texts), texts
    assert seg.requests[0].write_key == secret  # still available as an attribute


# -- body rules -------------------------------------------------------------------------------


def test_gzip_body_is_accepted(seg: LocalSegment) -> None:
    r = send(seg, batch(track("g1"), track("g2")), compress=True)
    assert r.status == 200
    assert seg.message_ids() == {"g1", "g2"}
    req = seg.requests[0]
    assert req.headers["content-encoding"] == "gzip"
    assert req.nbytes < len(json.dumps(batch(track("g1"), track("g2"))))


def test_invalid_gzip_is_400(seg: LocalSegment) -> None:
    r = send(seg, raw=b"not gzip at all", headers={"Content-Encoding": "gzip"})
    assert r.status == 400
    assert r.json()["code"] == "invalid_request"


def test_body_over_500kb_is_400(seg: LocalSegment) -> None:
    filler = "x" * 20_000
    items = [track(f"big{i}", properties={"f": filler}) for i in range(26)]
    body = json.dumps(batch(*items)).encode()
    assert len(body) > MAX_REQUEST_BYTES
    r = send(seg, raw=body)
    assert r.status == 400
    assert r.json()["code"] == "request_too_large"
    # the limit applies after decompression too
    r = send(seg, raw=body, compress=True)
    assert r.status == 400
    assert seg.accepted == []
    # just under the limit is fine
    under = json.dumps(batch(*items[:24])).encode()
    assert len(under) <= MAX_REQUEST_BYTES
    assert send(seg, raw=under).status == 200
    assert seg.accepted_count == 24


@pytest.mark.parametrize(
    "raw",
    [b"{not json", b"[]", b'{"batch": {}}', b'{"events": []}', b""],
)
def test_invalid_json_or_shape_is_400(seg: LocalSegment, raw: bytes) -> None:
    r = send(seg, raw=raw)
    assert r.status == 400
    body = r.json()
    assert body["code"] == "invalid_request"
    assert body["message"]


def test_more_than_2500_items_answer_200_but_all_dropped(seg: LocalSegment) -> None:
    items = [
        {"type": "track", "event": "E", "messageId": f"t{i}", "userId": "u"} for i in range(2501)
    ]
    r = send(seg, batch(*items))
    assert r.status == 200
    assert seg.accepted == []
    dropped = seg.dropped
    assert len(dropped) == 2501
    assert {d.reason for d in dropped} == {"too_many_items"}
    assert seg.stats()["dropped"] == 2501
    # exactly the limit is accepted
    assert send(seg, batch(*items[:MAX_BATCH_ITEMS])).status == 200
    assert seg.accepted_count == MAX_BATCH_ITEMS


def test_invalid_items_are_dropped_silently_with_reasons(seg: LocalSegment) -> None:
    good = track("ok1")
    bad: dict[str, Any] = {
        "not_an_object": "just a string",
        "invalid_type": track("b1", type="bogus"),
        "missing_message_id": {k: v for k, v in track("x").items() if k != "messageId"},
        "message_id_too_long": track("m" * 101),
        "missing_event": {k: v for k, v in track("b4").items() if k != "event"},
        "missing_user_id": {k: v for k, v in track("b5").items() if k != "userId"},
        "too_large": track("b6", properties={"blob": "y" * MAX_ITEM_BYTES}),
    }
    identify_ok = {"type": "identify", "messageId": "id1", "anonymousId": "anon@example.com"}
    r = send(seg, batch(good, *bad.values(), identify_ok))
    assert r.status == 200
    assert [e["messageId"] for e in seg.accepted] == ["ok1", "id1"]
    dropped = seg.dropped
    assert [d.reason for d in dropped] == list(bad)
    assert all(isinstance(d, DroppedEvent) and d.write_key == KEY for d in dropped)
    assert dropped[0].event == "just a string"
    assert seg.requests[0].n_accepted == 2


def test_item_size_limit_is_compact_reserialisation(seg: LocalSegment) -> None:
    base = track("sz")
    compact = len(json.dumps(base, separators=(",", ":")).encode())
    fits = track("sz", properties={"email_id": "e1", "pad": "p" * (MAX_ITEM_BYTES - compact - 10)})
    assert len(json.dumps(fits, separators=(",", ":")).encode()) <= MAX_ITEM_BYTES
    # pretty-printing makes the raw item bigger than 32 KB, but it still fits compactly
    raw = json.dumps(batch(fits), indent=4).encode()
    assert send(seg, raw=raw).status == 200
    assert seg.message_ids() == {"sz"}


def test_strict_mode_answers_400_for_any_invalid_item() -> None:
    with LocalSegment(strict=True) as server:
        r = send(server, batch(track("s1"), {"type": "track", "messageId": "s2", "userId": "u"}))
        assert r.status == 400
        assert "item 1" in r.json()["message"]
        assert server.accepted == []
        assert server.dropped == []
        too_many = [track(f"t{i}") for i in range(MAX_BATCH_ITEMS + 1)]
        assert send(server, batch(*too_many)).status == 400
        assert send(server, batch(track("s1"))).status == 200
        assert server.message_ids() == {"s1"}
        assert [q.status for q in server.requests] == [400, 400, 200]


def test_duplicates_are_counted_not_accepted_again(seg: LocalSegment) -> None:
    send(seg, batch(track("d1"), track("d2")), key="ka")
    send(seg, batch(track("d2"), track("d3"), track("d3")), key="kb")
    assert [e["messageId"] for e in seg.accepted] == ["d1", "d2", "d3"]
    assert seg.duplicates == 2
    assert seg.stats()["duplicates"] == 2
    assert seg.requests[1].n_accepted == 1


def test_unknown_paths_are_404(seg: LocalSegment) -> None:
    r = send(seg, batch(track("z")), path="/v1/track")
    assert r.status == 404
    assert r.json()["code"] == "not_found"
    assert send(seg, method="GET", path="/nope").status == 404


# -- faults -----------------------------------------------------------------------------------


def test_scripted_faults_then_normal_handling() -> None:
    plan = FaultPlan(
        script=[
            Fault.http(429, retry_after=3, x_ratelimit_reset=1700000000),
            Fault.http(503, retry_after="Wed, 21 Oct 2015 07:28:00 GMT"),
            500,
            "drop",
        ]
    )
    with LocalSegment(faults=plan) as server:
        r = send(server, batch(track("f1")))
        assert r.status == 429
        assert r.headers["retry-after"] == "3"
        assert r.headers["x-ratelimit-reset"] == "1700000000"
        assert set(r.json()) == {"code", "message"}
        r = send(server, batch(track("f1")))
        assert (r.status, r.headers["retry-after"]) == (503, "Wed, 21 Oct 2015 07:28:00 GMT")
        r = send(server, batch(track("f1")))
        assert r.status == 500
        assert "retry-after" not in r.headers
        with pytest.raises((http.client.HTTPException, ConnectionError)):
            send(server, batch(track("f1")))
        assert server.wait_for_requests(4)
        assert send(server, batch(track("f1"))).status == 200
        reqs = server.requests
        assert [q.status for q in reqs] == [429, 503, 500, 0, 200]
        assert [q.fault for q in reqs] == ["status", "status", "status", "drop", None]
        assert all(q.n_items == 1 for q in reqs)
        assert server.message_ids() == {"f1"}
        assert server.accepted_count == 1


def test_drop_keeps_other_connections_working() -> None:
    with LocalSegment(faults=FaultPlan(script=["drop"])) as server:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        try:
            with pytest.raises((http.client.HTTPException, ConnectionError)):
                send(server, batch(track("a")), conn=conn)
            conn.close()
            assert send(server, batch(track("a")), conn=conn).status == 200  # reconnects
        finally:
            conn.close()


def test_latency_fault_and_constructor_latency() -> None:
    with LocalSegment(faults=FaultPlan(script=[Fault.latency(0.2)])) as server:
        t0 = time.monotonic()
        assert send(server, batch(track("l1"))).status == 200  # delayed, then handled
        assert time.monotonic() - t0 >= 0.2
        assert server.message_ids() == {"l1"}
    with LocalSegment(latency=0.1) as server:
        t0 = time.monotonic()
        assert send(server, batch(track("l2"))).status == 200
        assert time.monotonic() - t0 >= 0.1


def _run_mix(server: LocalSegment, n: int) -> list[int]:
    statuses: list[int] = []
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        for i in range(n):
            try:
                statuses.append(send(server, batch(track(f"x{i}")), conn=conn).status)
            except (http.client.HTTPException, ConnectionError):
                statuses.append(0)
                conn.close()
    finally:
        conn.close()
    return statuses


def test_fault_mix_proportions_and_seed_determinism() -> None:
    plan = FaultPlan.mix(seed=7, rates={500: 0.2, 429: 0.1, "drop": 0.1}, retry_after=1)
    with LocalSegment(faults=plan) as server:
        n = 400
        first = _run_mix(server, n)
        counts = Counter(first)
        assert 0.12 * n <= counts[500] <= 0.28 * n
        assert 0.04 * n <= counts[429] <= 0.16 * n
        assert 0.04 * n <= counts[0] <= 0.16 * n
        assert counts[200] == server.accepted_count
        assert [q.status for q in server.requests] == first
        rate_limited = [q for q in server.requests if q.status == 429]
        assert rate_limited
        server.set_faults(plan)  # same seed again: same sequence
        server.clear()
        second = _run_mix(server, n)
        assert second == first
        server.set_faults(FaultPlan.mix(seed=7, rates={429: 1.0}, retry_after=1))
        r429 = send(server, batch(track("r")))
        assert (r429.status, r429.headers["retry-after"]) == (429, "1")
        server.set_faults(None)
        assert _run_mix(server, 20) == [200] * 20


def test_per_key_faults_and_key_scoped_mix() -> None:
    plan = FaultPlan(per_key={"ka": [503, Fault.http(429, retry_after=2)]})
    with LocalSegment(faults=plan) as server:
        assert send(server, batch(track("b1")), key="kb").status == 200
        assert send(server, batch(track("a1")), key="ka").status == 503
        assert send(server, batch(track("b2")), key="kb").status == 200
        r = send(server, batch(track("a1")), key="ka")
        assert (r.status, r.headers["retry-after"]) == (429, "2")
        assert send(server, batch(track("a1")), key="ka").status == 200
        assert server.message_ids() == {"b1", "b2", "a1"}
        server.set_faults(FaultPlan.mix(seed=1, rates={500: 1.0}, keys=["ka"]))
        assert send(server, batch(track("a2")), key="ka").status == 500
        assert send(server, batch(track("b3")), key="kb").status == 200


def test_per_key_script_takes_precedence_over_global_script() -> None:
    plan = FaultPlan(script=[500], per_key={"ka": [503]})
    with LocalSegment(faults=plan) as server:
        assert send(server, batch(track("1")), key="ka").status == 503
        assert send(server, batch(track("1")), key="ka").status == 500
        assert send(server, batch(track("1")), key="ka").status == 200


def test_outage_and_end_outage(seg: LocalSegment) -> None:
    seg.outage(retry_after=5)
    for _ in range(3):
        r = send(seg, batch(track("o1")))
        assert (r.status, r.headers["retry-after"]) == (503, "5")
    seg.outage(500)
    assert send(seg, batch(track("o1"))).status == 500
    seg.end_outage()
    assert send(seg, batch(track("o1"))).status == 200
    assert [q.status for q in seg.requests] == [503, 503, 503, 500, 200]
    assert seg.message_ids() == {"o1"}


def test_fault_faults_before_auth_and_validation() -> None:
    with LocalSegment(write_keys=["only"], faults=FaultPlan(script=[503])) as server:
        assert send(server, raw=b"{bad json", key="wrong").status == 503
        assert send(server, raw=b"{bad json", key="wrong").status == 401


def test_fault_validation() -> None:
    with pytest.raises(ValueError, match="status"):
        Fault.http(99)
    with pytest.raises(ValueError, match="seconds"):
        Fault.latency(-1)
    with pytest.raises(ValueError, match="sum"):
        FaultPlan.mix(rates={500: 0.7, 503: 0.7})
    with pytest.raises(ValueError, match="rate key"):
        FaultPlan.mix(rates={"boom": 0.1})
    with pytest.raises(TypeError):
        FaultPlan(script=[1.5])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="line breaks"):
        Fault.http(429, retry_after="1\r\nX-Evil: 1")
    assert FaultPlan.from_json({"rates": {"500": 0.5}, "seed": 3}).rates == {500: 0.5}
    assert FaultPlan.from_json({}) == FaultPlan()


@pytest.mark.parametrize("keys", ["key-acme", b"key-acme"])
def test_keys_given_as_one_string_are_refused(keys: Any) -> None:
    """Found by a review: ``FaultPlan.mix(keys="key-acme")`` took the string for the set of
    its characters, so no fault was ever injected, and ``LocalSegment(write_keys=...)``
    alike accepted one-character keys only. A bare str or bytes is a TypeError now, which
    does not show the key."""
    with pytest.raises(TypeError, match=r"keys=\[key\]") as caught:
        FaultPlan.mix(rates={500: 1.0}, keys=keys)
    assert "key-acme" not in str(caught.value)
    with pytest.raises(TypeError, match="mix_keys"):
        FaultPlan(rates={500: 1.0}, mix_keys=keys)
    with pytest.raises(TypeError, match=r"write_keys=\[key\]") as caught:
        LocalSegment(write_keys=keys)
    assert "key-acme" not in str(caught.value)
    plan = FaultPlan.mix(rates={500: 1.0}, keys=("key-acme",))  # a collection of one
    with LocalSegment(write_keys={"key-acme"}, faults=plan) as server:
        assert send(server, batch(track("k1")), key="key-acme").status == 500


# -- waiting ----------------------------------------------------------------------------------


def test_wait_for_blocks_until_events_arrive(seg: LocalSegment) -> None:
    assert seg.wait_for(1, timeout=0.05) is False
    go = threading.Event()

    def sender() -> None:
        go.wait(5)
        send(seg, batch(track("w1")))
        send(seg, batch(track("w2")))

    t = threading.Thread(target=sender)
    t.start()
    go.set()
    assert seg.wait_for(2, timeout=5) is True
    t.join(5)
    assert seg.accepted_count == 2
    assert seg.wait_for(0, timeout=0) is True


# -- record_events=False and control endpoints ------------------------------------------------


def test_record_events_false_keeps_only_counters() -> None:
    with LocalSegment(record_events=False) as server:
        send(server, batch(track("n1"), track("n2"), {"type": "track"}))
        send(server, batch(track("n2")))
        assert server.wait_for(2)
        assert server.accepted == []
        assert server.requests == []
        assert server.dropped == []
        assert server.message_ids() == {"n1", "n2"}
        assert server.stats() == {
            "accepted": 2,
            "unique_message_ids": 2,
            "requests": 2,
            "dropped": 1,
            "duplicates": 1,
        }


def test_control_endpoints_in_process(seg: LocalSegment) -> None:
    send(seg, batch(track("c1")))
    stats = send(seg, method="GET", path="/_stats").json()
    assert stats == {
        "accepted": 1,
        "unique_message_ids": 1,
        "requests": 1,
        "dropped": 0,
        "duplicates": 0,
    }
    assert send(seg, {"seed": 1, "rates": {"500": 1.0}}, path="/_faults").status == 200
    assert send(seg, batch(track("c2"))).status == 500
    assert send(seg, {"outage": 502}, path="/_faults").status == 200
    assert send(seg, batch(track("c2"))).status == 502
    assert send(seg, {}, path="/_faults").status == 200
    assert send(seg, batch(track("c2"))).status == 200
    assert send(seg, {"rates": {"500": 2}}, path="/_faults").status == 400
    assert send(seg, raw=b"", path="/_reset").status == 200
    assert seg.stats()["requests"] == 0
    assert seg.accepted == []


# -- process mode -----------------------------------------------------------------------------


def _spawn(*args: str, stdin: int | IO[Any] = subprocess.PIPE) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "selligent_segment.testing", "--port", "0", *args],
        stdin=stdin,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 10)
    if not ready:
        proc.kill()
        pytest.fail("LocalSegment process did not start")
    line = proc.stdout.readline().strip()
    assert line.startswith("LISTENING http://127.0.0.1:"), line
    return proc, line.split(" ", 1)[1]


def _reap(proc: subprocess.Popen[str]) -> None:
    """Kill ``proc`` if it still runs, wait for it, close the pipes it was given."""
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    for pipe in (proc.stdout, proc.stdin):
        if pipe is not None:
            pipe.close()


def _http(
    url: str, path: str, payload: Any = None, key: str | None = None
) -> tuple[int, dict[str, Any]]:
    data = None if payload is None else json.dumps(payload).encode()
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = auth(key)
    req = urllib.request.Request(url + path, data=data, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.mark.slow  # half a second or more: the second step of .ci/run
def test_subprocess_mode_serves_and_stops_on_sigterm() -> None:
    proc, url = _spawn("--write-key", "bench-key")
    try:
        assert _http(url, "/v1/batch", batch(track("p1"), track("p2")), "bench-key")[0] == 200
        assert _http(url, "/v1/batch", batch(track("p2")), "bench-key")[0] == 200
        assert _http(url, "/v1/batch", batch(track("p3")), "nope")[0] == 401
        status, stats = _http(url, "/_stats")
        assert status == 200
        assert stats == {
            "accepted": 2,
            "unique_message_ids": 2,
            "requests": 3,
            "dropped": 0,
            "duplicates": 1,
        }
        assert (
            _http(url, "/_faults", {"seed": 1, "rates": {"503": 1.0}, "retry_after": 1})[0] == 200
        )
        assert _http(url, "/v1/batch", batch(track("p4")), "bench-key")[0] == 503
        assert _http(url, "/_faults", {})[0] == 200
        assert _http(url, "/v1/batch", batch(track("p4")), "bench-key")[0] == 200
        assert _http(url, "/_reset", {})[0] == 200
        assert _http(url, "/_stats")[1]["requests"] == 0
        proc.terminate()
        assert proc.wait(timeout=10) == 0
    finally:
        _reap(proc)


@pytest.mark.slow  # half a second or more: the second step of .ci/run
def test_subprocess_mode_fault_mix_and_stdin_close() -> None:
    proc, url = _spawn("--fault-mix", '{"seed": 1, "rates": {"500": 1.0}}')
    try:
        assert _http(url, "/v1/batch", batch(track("q1")), "k")[0] == 500
        assert proc.stdin is not None
        proc.stdin.close()
        assert proc.wait(timeout=10) == 0
    finally:
        _reap(proc)


@pytest.mark.slow  # half a second or more: the second step of .ci/run
@pytest.mark.parametrize("stdin", ["/dev/null", "a file"])
def test_subprocess_mode_keeps_serving_when_its_stdin_is_no_pipe(
    stdin: str, tmp_path: Path
) -> None:
    """Found by a review: the process stopped when its stdin reached its end, so started in
    the background of a script (stdin ``/dev/null``) or by ``docker run`` without ``-i`` it
    printed LISTENING and quit. Only a pipe or a socket is watched now: from anything else
    it serves until SIGTERM."""
    path = Path(os.devnull) if stdin == "/dev/null" else tmp_path / "input"
    if stdin == "a file":
        path.write_text("")
    with path.open("rb") as source:
        proc, url = _spawn(stdin=source)
    try:
        for _ in range(3):
            assert _http(url, "/_stats")[0] == 200
        assert proc.poll() is None
        proc.terminate()
        assert proc.wait(timeout=10) == 0
    finally:
        _reap(proc)


def test_process_mode_watches_a_piped_or_socket_stdin_only(tmp_path: Path) -> None:
    """Found by a review (with the test above): the end of any stdin stopped the process.
    Only a pipe's or a socket's end means the parent is done; /dev/null, a file or no
    stdin is not watched."""
    read_end, write_end = os.pipe()
    left, right = socket.socketpair()
    (tmp_path / "input").write_text("")
    try:
        with os.fdopen(read_end, closefd=False) as pipe, left.makefile() as sock:
            assert _pipe_or_socket(pipe) == read_end
            assert _pipe_or_socket(sock) == left.fileno()
        with open(os.devnull) as null, (tmp_path / "input").open() as file:
            assert _pipe_or_socket(null) is None
            assert _pipe_or_socket(file) is None
        assert _pipe_or_socket(None) is None
        assert _pipe_or_socket(io.StringIO()) is None  # no descriptor (a test's capture)
    finally:
        for fd in (read_end, write_end):
            os.close(fd)
        left.close()
        right.close()


# -- pytest fixture ---------------------------------------------------------------------------


def test_fixture_imported_into_a_module(request: pytest.FixtureRequest) -> None:
    server = request.getfixturevalue("local_segment")
    assert isinstance(server, LocalSegment)
    assert send(server, batch(track("fx"))).status == 200
    assert server.message_ids() == {"fx"}


def test_fixture_via_pytest_plugins(pytester: pytest.Pytester) -> None:
    pytester.makeconftest('pytest_plugins = ["selligent_segment.testing"]\n')
    pytester.makepyfile(
        """
        import base64, json, urllib.request

        def test_it(local_segment):
            body = json.dumps({"batch": [{"type": "track", "event": "E",
                                          "messageId": "m", "userId": "u"}]}).encode()
            req = urllib.request.Request(local_segment.url + "/v1/batch", data=body,
                headers={"Authorization": "Basic " + base64.b64encode(b"k:").decode()})
            with urllib.request.urlopen(req, timeout=5) as resp:
                assert resp.status == 200
            assert local_segment.wait_for(1)
            assert local_segment.message_ids() == {"m"}
        """
    )
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_wait_for_arrivals_counts_a_request_held_by_a_delay_before_it_is_answered() -> None:
    with LocalSegment(faults=FaultPlan(script=[Fault.latency(30.0)])) as server:

        def post() -> None:
            with contextlib.suppress(OSError, http.client.HTTPException):  # cut off at exit
                send(server, batch(track("a1")))

        threading.Thread(target=post, daemon=True).start()
        assert server.wait_for_arrivals(1)
        assert server.requests == []  # arrived, held by the delay, not answered yet
        assert not server.wait_for_requests(1, timeout=0.05)
