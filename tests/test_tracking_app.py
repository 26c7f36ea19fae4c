"""The tracking endpoints (inputs/tracking/_app.py) over real loopback HTTP, into an Emitter
delivering to LocalSegment: the pixel, the click redirect, one-click unsubscribe, refusals."""

from __future__ import annotations

import asyncio
import http.client
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import attrs
import pytest
from _asgi_calls import beside_a_held_body, call_asgi, chunk, post_scope, request
from _delivery import QUICK

from selligent_segment import ConfigurationError, Emitter
from selligent_segment.inputs.tracking import (
    PIXEL,
    Token,
    TrackingApp,
    TrackingKeys,
    TrackingLinks,
)
from selligent_segment.inputs.tracking import _app as app_module
from selligent_segment.inputs.tracking._token import seal
from selligent_segment.testing import LocalSegment
from selligent_segment.testing._asgi_server import serve_asgi

KEYS = TrackingKeys({"k1": b"s" * 32}, "k1")
NOW = float(int(time.time()))  # the app's clock: fixed for every test of this module
SENT = int(NOW) - 3600  # an hour before: not a scanner by timing
BROWSER = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_0) AppleWebKit/605.1.15 Safari/605.1.15"
WHO: dict[str, Any] = {"tenant": "acme", "email": "Ada@Example.com", "sent_at": SENT}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
ONE_CLICK = b"List-Unsubscribe=One-Click"


@attrs.frozen
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


@attrs.define
class Site:
    url: str
    links: TrackingLinks
    emitter: Emitter
    segment: LocalSegment

    def request(
        self,
        method: str,
        target: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        """One request; ``target`` is a link (its path is used) or a path."""
        parts = urlsplit(self.url)
        path = urlsplit(target).path if "://" in target else target
        query = urlsplit(target).query if "://" in target else ""
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
        try:
            sent = {"User-Agent": BROWSER} if headers is None else headers
            conn.request(method, path + (f"?{query}" if query else ""), body=body, headers=sent)
            answer = conn.getresponse()
            got = {k.lower(): v for k, v in answer.getheaders()}
            return Answer(answer.status, got, answer.read())
        finally:
            conn.close()

    def events(self) -> list[dict[str, Any]]:
        assert self.emitter.flush(10)
        return self.segment.accepted


def _site(segment: LocalSegment, **options: Any) -> Iterator[Site]:
    emitter_options = {k: options.pop(k) for k in ("spool", "profile_updates") if k in options}
    emitter = Emitter(
        write_keys={"acme": "key-acme"},
        endpoint=segment.url,
        batch=QUICK,
        handle_sigterm=False,
        **emitter_options,
    )
    app = TrackingApp(emitter, KEYS, now=lambda: NOW, **options)
    try:
        with serve_asgi(app) as url:
            yield Site(url, TrackingLinks(url + "/t", KEYS), emitter, segment)
    finally:
        emitter.close()


@pytest.fixture
def site(local_segment: LocalSegment) -> Iterator[Site]:
    yield from _site(local_segment)


# -- the open pixel ---------------------------------------------------------------------------


def test_the_pixel_is_a_gif_never_cached_and_emits_an_open(site: Site) -> None:
    answer = site.request("GET", site.links.open_pixel_url(email_id=42, **WHO))
    assert answer.status == 200
    assert answer.body == PIXEL
    assert answer.body[:6] == b"GIF89a"
    assert answer.body[6:10] == b"\x01\x00\x01\x00"  # 1 x 1
    assert answer.headers["content-type"] == "image/gif"
    assert "no-store" in answer.headers["cache-control"]
    assert "set-cookie" not in answer.headers
    (event,) = site.events()
    assert event["event"] == "Email Opened"
    assert event["anonymousId"] == "ada@example.com"
    assert event["properties"] == {"machine_open": False, "email_id": "42"}
    assert event["context"]["userAgent"] == BROWSER
    assert event["context"]["ip"] == "127.0.0.1"
    assert event["timestamp"].startswith(time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(NOW)))


@pytest.mark.parametrize(
    ("method", "agent", "sent_at", "reason"),
    [
        ("HEAD", BROWSER, SENT, "head"),
        ("GET", BROWSER, int(NOW) - 2, "soon_after_send"),
        ("GET", "Mozilla/5.0", SENT, "apple_proxy_user_agent"),
        ("GET", "Mimecast URL scanner", SENT, "scanner_user_agent"),
    ],
)
def test_machine_opens_are_sent_flagged(
    site: Site, method: str, agent: str, sent_at: int, reason: str
) -> None:
    link = site.links.open_pixel_url(**dict(WHO, sent_at=sent_at))
    answer = site.request(method, link, headers={"User-Agent": agent})
    assert answer.status == 200
    assert answer.headers["content-length"] == str(len(PIXEL))
    (event,) = site.events()
    assert event["properties"] == {"machine_open": True, "machine_open_reason": reason}


# -- the click redirect -----------------------------------------------------------------------


def test_a_click_redirects_to_the_sealed_url_and_emits_it(site: Site) -> None:
    target = "https://example.com/offer?a=1&b=2#top"
    answer = site.request("GET", site.links.click_url(target, link_id="l-1", **WHO))
    assert answer.status == 302
    assert answer.headers["location"] == target
    assert "no-store" in answer.headers["cache-control"]
    (event,) = site.events()
    assert event["event"] == "Email Link Clicked"
    assert event["properties"] == {"scanner": False, "link_url": target, "link_id": "l-1"}


def test_a_head_or_scanner_click_still_redirects_and_is_flagged(site: Site) -> None:
    link = site.links.click_url("https://example.com/", **WHO)
    assert site.request("HEAD", link).headers["location"] == "https://example.com/"
    answer = site.request("GET", link, headers={"User-Agent": "Proofpoint URL Defense"})
    assert answer.headers["location"] == "https://example.com/"
    reasons = sorted(e["properties"]["scanner_reason"] for e in site.events())
    assert reasons == ["head", "scanner_user_agent"]


def test_no_parameter_or_path_trick_is_ever_followed(site: Site) -> None:
    link = site.links.click_url("https://example.com/safe", **WHO)
    token = urlsplit(link).path.rpartition("/")[2]
    for trick in ("?url=https://evil.example", "?next=//evil.example", "?redirect=javascript:x"):
        answer = site.request("GET", link + trick)
        assert answer.status == 302
        assert answer.headers["location"] == "https://example.com/safe"
    for path in (
        "/t/c//evil.example",
        "/t/c/https:%2F%2Fevil.example",
        "/t/c/\\\\evil.example",
        f"/t/c/{token}/https://evil.example",
        f"/t/c/{token}%2F%2Fevil.example",
        "/t/c/javascript:alert(1)",
    ):
        answer = site.request("GET", path)
        assert answer.status == 404, path
        assert "location" not in answer.headers
    events = site.events()  # the three real clicks only (same instant on this clock: one id)
    assert len(events) + site.segment.duplicates == 3
    assert {e["properties"]["link_url"] for e in events} == {"https://example.com/safe"}


@pytest.mark.parametrize(
    "target",
    ["javascript:alert(1)", "//evil.example/", "https:\\\\evil.example", "data:text/html,x"],
)
def test_a_signed_token_with_an_unsafe_target_is_refused_too(site: Site, target: str) -> None:
    # Made without TrackingLinks (which refuses these): the app checks again itself.
    token = Token(kind="click", sent_at=SENT, email="a@b.co", link_url=target)
    answer = site.request("GET", f"/t/c/{seal(token, KEYS)}")
    assert answer.status == 404
    assert "location" not in answer.headers
    assert site.events() == []


# -- one-click unsubscribe --------------------------------------------------------------------


def test_get_shows_a_confirmation_page_and_never_unsubscribes(site: Site) -> None:
    link = site.links.unsubscribe_url(list_id="weekly", **WHO)
    for method in ("GET", "HEAD", "GET"):
        answer = site.request(method, link)
        assert answer.status == 200
        assert "set-cookie" not in answer.headers
    page = site.request("GET", link).body
    assert b'<form method="post">' in page
    assert b'name="List-Unsubscribe" value="One-Click"' in page
    assert site.events() == []


def _multipart(boundary: str = "XyZ") -> tuple[bytes, dict[str, str]]:
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="List-Unsubscribe"\r\n\r\n'
        f"One-Click\r\n--{boundary}--\r\n"
    ).encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def test_post_in_either_encoding_unsubscribes_once(site: Site) -> None:
    link = site.links.unsubscribe_url(list_id="weekly", **WHO)
    first = site.request("POST", link, ONE_CLICK, FORM)
    assert first.status == 200
    assert "location" not in first.headers
    assert "set-cookie" not in first.headers
    body, headers = _multipart()
    assert site.request("POST", link, body, headers).status == 200
    assert site.request("POST", link, ONE_CLICK, FORM).status == 200
    (event,) = site.events()
    assert event["event"] == "Email Unsubscribed"
    assert event["properties"] == {"list_id": "weekly"}
    assert site.segment.duplicates == 2  # the repeats carried the same messageId


def test_two_links_are_two_unsubscribes(site: Site) -> None:
    for list_id in ("weekly", "daily"):
        link = site.links.unsubscribe_url(list_id=list_id, **WHO)
        assert site.request("POST", link, ONE_CLICK, FORM).status == 200
    assert sorted(e["properties"]["list_id"] for e in site.events()) == ["daily", "weekly"]


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        (b"List-Unsubscribe=Yes", FORM),
        (ONE_CLICK, {"Content-Type": "text/plain;charset=UTF-8"}),  # fetch()'s default
        (b"", FORM),
        (b"", {}),  # no Content-Type, no body
    ],
)
def test_a_post_with_a_valid_link_unsubscribes_whatever_its_body(
    site: Site, body: bytes, headers: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    """The signed link is the credential; scanners GET, they do not POST. A POST whose
    body is not RFC 8058's was refused with a 400, not retried, not logged: the person's
    unsubscribe was lost (some clients send such bodies; found by a review). It is
    accepted now, and the log says how it differed (no address in it)."""
    caplog.set_level(logging.INFO, logger="selligent_segment")
    answer = site.request("POST", site.links.unsubscribe_url(**WHO), body, headers)
    assert answer.status == 200
    assert [e["event"] for e in site.events()] == ["Email Unsubscribed"]
    assert "unsubscribe POST without the one-click body" in caplog.text
    assert "example.com" not in caplog.text


def test_a_one_click_body_over_the_limit_still_unsubscribes(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    """Found by a review: a body over 16 KiB was answered ``413`` and nothing emitted,
    against the promise that the signed link is the credential and a refusal would lose
    the person's request. The body is not read past the limit; the unsubscribe stands."""
    caplog.set_level(logging.INFO, logger="selligent_segment")
    answer = site.request("POST", site.links.unsubscribe_url(**WHO), b"x" * 20_000, FORM)
    assert answer.status == 200
    assert [e["event"] for e in site.events()] == ["Email Unsubscribed"]
    assert "over 16384 bytes, not read" in caplog.text


def test_an_unsubscribe_link_never_expires(local_segment: LocalSegment) -> None:
    """Opens and clicks expire after ``max_age``; an unsubscribe link must keep working
    (a person unsubscribing from a mail of last year got a 404: found by a review)."""
    for site in _site(local_segment, max_age=86_400):
        old = dict(WHO, sent_at=SENT - 400 * 86_400)
        assert (
            site.request("GET", site.links.click_url("https://example.com/", **old)).status == 404
        )
        answer = site.request("POST", site.links.unsubscribe_url(**old), ONE_CLICK, FORM)
        assert answer.status == 200
        assert [e["event"] for e in site.events()] == ["Email Unsubscribed"]


def test_200_comes_only_once_the_unsubscribe_is_journaled(
    local_segment: LocalSegment, tmp_path: Path
) -> None:
    spool = tmp_path / "spool.db"
    local_segment.outage(503)
    for site in _site(local_segment, spool=spool):
        link = site.links.unsubscribe_url(**WHO)
        assert site.request("POST", link, ONE_CLICK, FORM).status == 200
        site.emitter.close(timeout=0)  # nothing delivered: the outage
    local_segment.end_outage()
    with Emitter(
        write_keys={"acme": "key-acme"}, endpoint=local_segment.url, spool=spool, batch=QUICK
    ) as later:
        assert later.flush(10)
    assert [e["event"] for e in local_segment.accepted] == ["Email Unsubscribed"]


def test_an_unsubscribe_the_emitter_cannot_take_is_answered_503(site: Site) -> None:
    site.emitter.close()
    answer = site.request("POST", site.links.unsubscribe_url(**WHO), ONE_CLICK, FORM)
    assert answer.status == 503
    assert answer.headers["retry-after"] == "60"


def test_an_unsubscribe_with_profile_updates_also_marks_the_profile(
    local_segment: LocalSegment,
) -> None:
    for site in _site(local_segment, profile_updates=True):
        link = site.links.unsubscribe_url(user_id="u-1", tenant="acme", sent_at=SENT)
        assert site.request("POST", link, ONE_CLICK, FORM).status == 200
        assert site.request("POST", link, ONE_CLICK, FORM).status == 200  # a repeat
        events = site.events()
    assert [e["type"] for e in events] == ["track", "identify"]
    assert events[1]["userId"] == "u-1"
    assert events[1]["traits"]["email_unsubscribed"] is True
    assert local_segment.duplicates == 2


# -- refusals ---------------------------------------------------------------------------------


def _other_last(text: str) -> str:
    """``text`` with its last character changed (to ``A``, or ``B`` when it was ``A``)."""
    return text[:-1] + ("B" if text.endswith("A") else "A")


def test_a_tampered_unknown_expired_or_misrouted_token_gets_one_404(
    local_segment: LocalSegment,
) -> None:
    for site in _site(local_segment, max_age=86_400):
        good = site.links.click_url("https://example.com/", **WHO)
        token = urlsplit(good).path.rpartition("/")[2]
        key_id, body, mac = token.split(".")
        other = TrackingLinks(site.url + "/t", TrackingKeys({"k9": b"o" * 32}, "k9"))
        bad_paths = [
            f"/t/c/{key_id}.{_other_last(body)}.{mac}",
            f"/t/c/{key_id}.{body}.{_other_last(mac)}",
            urlsplit(other.click_url("https://example.com/", **WHO)).path,
            urlsplit(
                site.links.click_url("https://example.com/", **dict(WHO, sent_at=SENT - 90_000))
            ).path,
            f"/t/u/{token}",  # a click token on the unsubscribe route
            f"/t/o/{token}",
            "/t/c/",
            "/t/x/" + token,
        ]
        answers = [site.request("GET", path) for path in bad_paths]
        assert [a.status for a in answers] == [404] * len(bad_paths)
        assert len({a.body for a in answers[:-2]}) == 1  # no oracle
        post = site.request("POST", f"/t/u/{token}", ONE_CLICK, FORM)
        assert post.status == 404
        assert site.events() == []


def test_other_methods_are_refused_with_allow(site: Site) -> None:
    answer = site.request("POST", site.links.open_pixel_url(**WHO), ONE_CLICK, FORM)
    assert answer.status == 405
    assert answer.headers["allow"] == "GET, HEAD"
    answer = site.request("DELETE", site.links.unsubscribe_url(**WHO))
    assert answer.headers["allow"] == "GET, HEAD, POST"


def test_a_hit_the_emitter_refuses_is_still_answered_and_logged_without_the_email(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    other = dict(WHO, tenant="unknown-tenant")
    with caplog.at_level(logging.INFO, logger="selligent_segment"):
        assert site.request("GET", site.links.open_pixel_url(**other)).status == 200
        answer = site.request("GET", site.links.click_url("https://example.com/", **other))
        assert answer.headers["location"] == "https://example.com/"
    assert "unknown-tenant" in caplog.text
    assert "ada@example.com" not in caplog.text.lower()
    assert "k1." not in caplog.text  # no token
    assert site.events() == []
    for r in caplog.records:  # the CLI's formatter adds the prefix: the text never has it
        assert not r.getMessage().startswith("selligent-segment:"), r.getMessage()


def test_a_mac_spelt_in_another_base64_form_is_refused() -> None:
    """The MAC's last character carries 4 bits and 2 unused ones: a token whose MAC differs
    only there decodes to the same bytes, and was accepted (with another event id)."""
    from selligent_segment.inputs.tracking._token import TokenRefused, unseal

    keys = TrackingKeys({"k1": b"k" * 32}, "k1")
    links = TrackingLinks("https://t.example/t", keys)
    token = urlsplit(links.click_url("https://example.com/", **WHO)).path.rpartition("/")[2]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(token[-1])
    twin = token[:-1] + alphabet[last ^ 1]  # the same 4 significant bits
    assert unseal(token, keys, now=SENT + 60, max_age=None).sent_at == SENT
    with pytest.raises(TokenRefused):
        unseal(twin, keys, now=SENT + 60, max_age=None)


# -- a slow Emitter: hits answered in time, unsubscribes never behind them -------------------


class Gated:
    """An Emitter stand-in whose ``emit`` of the record types in ``held`` waits for
    ``release``; every record it took is in ``taken`` (``took`` set at each)."""

    def __init__(self, *held: str) -> None:
        self.held = set(held)
        self.release = threading.Event()
        self.took = threading.Event()
        self.lock = threading.Lock()
        self.taken: list[dict[str, Any]] = []

    def emit(self, record: Any) -> bool:
        if record["type"] in self.held:
            assert self.release.wait(30)
        with self.lock:
            self.taken.append(record)
        self.took.set()
        return True

    def types(self) -> list[str]:
        with self.lock:
            return [r["type"] for r in self.taken]


def _get(link: str) -> dict[str, Any]:
    return post_scope(urlsplit(link).path, {"User-Agent": BROWSER}) | {"method": "GET"}


def _post(link: str) -> dict[str, Any]:
    return post_scope(urlsplit(link).path, FORM)


LINKS = TrackingLinks("https://t.example/t", KEYS)


def test_a_click_is_answered_in_time_while_the_emitter_is_slow() -> None:
    """Found by a review: a hit waited for the Emitter however long it took (a locked
    PostgreSQL spool held every click and pixel 8 s). It waits ``hit_wait`` at most;
    its record is still handed over when the Emitter takes it."""
    emitter = Gated("link_clicked")
    app = TrackingApp(emitter, KEYS, now=lambda: NOW, hit_wait=0)
    status, _ = call_asgi(app, _get(LINKS.click_url("https://example.com/", **WHO)), [])
    assert status == 302
    assert emitter.types() == []
    emitter.release.set()
    assert emitter.took.wait(30)
    assert emitter.types() == ["link_clicked"]


def test_an_unsubscribe_never_waits_behind_clicks_the_emitter_holds() -> None:
    """Opens and clicks had the event loop's default thread pool, a few threads, and the
    one-click POST queued behind them (14.7 s behind 12 slow clicks). Unsubscribes have
    threads of their own."""
    emitter = Gated("link_clicked")
    app = TrackingApp(emitter, KEYS, now=lambda: NOW, hit_wait=0)
    click = LINKS.click_url("https://example.com/", **WHO)

    async def scenario() -> list[tuple[int, bytes]]:
        clicks = [request(app, _get(click), []) for _ in range(40)]
        unsubscribe = request(app, _post(LINKS.unsubscribe_url(**WHO)), [chunk(ONE_CLICK)])
        return await asyncio.gather(*clicks, unsubscribe)

    try:
        answers = asyncio.run(scenario())
        assert [status for status, _ in answers] == [302] * 40 + [200]
        assert emitter.types() == ["unsubscribed"]
    finally:
        emitter.release.set()


def test_an_unsubscribe_the_emitter_does_not_take_in_time_is_answered_503() -> None:
    """``unsubscribe_wait`` at most, then 503 with Retry-After: the mailbox provider tries
    again (the same event id: one unsubscribe, however many tries land)."""
    emitter = Gated("unsubscribed")
    app = TrackingApp(emitter, KEYS, now=lambda: NOW, unsubscribe_wait=1e-3)
    try:
        scope = _post(LINKS.unsubscribe_url(**WHO))
        assert call_asgi(app, scope, [chunk(ONE_CLICK)])[0] == 503
    finally:
        emitter.release.set()
    assert emitter.took.wait(30)  # taken late: its retry is the same event


def test_hits_waiting_past_the_bound_are_answered_and_counted_not_recorded(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Memory stays bounded while the Emitter is stuck: past ``max_waiting_hits`` a hit
    is answered, not recorded, and the log says how many were not."""
    emitter = Gated("opened")
    app = TrackingApp(emitter, KEYS, now=lambda: NOW, hit_wait=0, max_waiting_hits=2)
    pixel = _get(LINKS.open_pixel_url(**WHO))

    async def scenario() -> list[tuple[int, bytes]]:
        return [await request(app, dict(pixel), []) for _ in range(3)]

    try:
        assert [status for status, _ in asyncio.run(scenario())] == [200, 200, 200]
        assert "tracking: 1 open or click not recorded" in caplog.text
    finally:
        emitter.release.set()
    assert emitter.took.wait(30)


def test_a_one_click_body_that_does_not_arrive_in_time_still_unsubscribes() -> None:
    """Found by a review: a body not whole within ``body_deadline`` was answered ``408``
    and nothing emitted. The body never decides (the signed link does): it is given up
    on, and the unsubscribe stands."""
    emitter = Gated()
    app = TrackingApp(emitter, KEYS, now=lambda: NOW, body_deadline=1e-6)
    scope = _post(LINKS.unsubscribe_url(**WHO))
    assert call_asgi(app, scope, [chunk(b"List-", more=True)])[0] == 200
    assert emitter.types() == ["unsubscribed"]


def test_one_click_bodies_held_open_never_refuse_another_unsubscribe(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Found by a review: 1,024 connections sending 16 KiB of a body and stopping took the
    whole body budget, and every other one-click POST got ``503`` for as long as they
    held on. Past the budget a body is not read, and the unsubscribe stands."""
    monkeypatch.setattr(app_module, "MAX_BODIES_BYTES", 60)
    emitter = Gated()
    app = TrackingApp(emitter, KEYS, now=lambda: NOW)
    held = _post(LINKS.unsubscribe_url(**dict(WHO, email="held@example.com")))
    scope = _post(LINKS.unsubscribe_url(**WHO))
    status, _ = asyncio.run(beside_a_held_body(app, held, scope, [chunk(ONE_CLICK)]))
    assert status == 200
    assert emitter.types() == ["unsubscribed"]


@pytest.mark.parametrize("setting", ["unsubscribe_wait", "body_deadline"])
def test_a_zero_wait_that_would_fail_every_unsubscribe_is_refused(setting: str) -> None:
    """Found by a review: ``unsubscribe_wait=0`` answered ``503`` to unsubscribes the
    Emitter had accepted, ``body_deadline=0`` gave up on every body."""
    with pytest.raises(ConfigurationError) as caught:
        TrackingApp(Gated(), KEYS, **{setting: 0})
    assert caught.value.setting == setting


async def _settle() -> None:
    """Let every request started reach its wait for the Emitter: on their way they wait
    on nothing but the event loop (the bodies are given at once), so a bounded number of
    turns of it does (no clock involved)."""
    for _ in range(100):
        await asyncio.sleep(0)


def test_repeated_posts_of_one_link_are_one_emit_and_hold_up_no_one() -> None:
    """Found by a review: each POST of the same link was queued for the Emitter again, with
    no bound: a burst on one's own unsubscribe link (5,000 POSTs while ``emit`` took 5 ms)
    queued thousands of copies of one event, and everyone else's unsubscribe waited behind
    them until answered ``503``. A POST of a link whose event is on its way waits for that
    one; every answer is the outcome of that one emit."""
    emitter = Gated("unsubscribed")
    app = TrackingApp(emitter, KEYS, now=lambda: NOW)
    burst = _post(LINKS.unsubscribe_url(**dict(WHO, email="burst@example.com")))
    other = _post(LINKS.unsubscribe_url(**WHO))

    async def scenario() -> list[tuple[int, bytes]]:
        posts = [asyncio.ensure_future(request(app, dict(burst), [chunk(ONE_CLICK)]))]
        for _ in range(50):
            posts.append(asyncio.ensure_future(request(app, dict(burst), [chunk(ONE_CLICK)])))
        posts.append(asyncio.ensure_future(request(app, dict(other), [chunk(ONE_CLICK)])))
        await _settle()
        emitter.release.set()
        return await asyncio.gather(*posts)

    try:
        answers = asyncio.run(scenario())
    finally:
        emitter.release.set()
    assert [status for status, _ in answers] == [200] * 52
    assert sorted(r["email"] for r in emitter.taken) == ["Ada@Example.com", "burst@example.com"]


def test_unsubscribes_waiting_past_the_bound_are_answered_503_at_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Memory stays bounded while the Emitter is stuck: past ``max_waiting_unsubscribes``
    links on their way, a POST is answered ``503`` with ``Retry-After`` at once (the
    provider tries again), counted in a WARNING line at most every 10 s."""
    emitter = Gated("unsubscribed")
    app = TrackingApp(emitter, KEYS, now=lambda: NOW, max_waiting_unsubscribes=1)
    first = _post(LINKS.unsubscribe_url(**dict(WHO, email="first@example.com")))
    others = [
        _post(LINKS.unsubscribe_url(**dict(WHO, email=f"p{i}@example.com"))) for i in range(3)
    ]

    async def scenario() -> tuple[list[tuple[int, bytes]], tuple[int, bytes]]:
        waiting = asyncio.ensure_future(request(app, first, [chunk(ONE_CLICK)]))
        await _settle()
        refused = [await request(app, scope, [chunk(ONE_CLICK)]) for scope in others]
        emitter.release.set()
        return refused, await waiting

    try:
        refused, taken = asyncio.run(scenario())
    finally:
        emitter.release.set()
    assert [status for status, _ in refused] == [503] * 3
    assert taken[0] == 200
    assert [r["email"] for r in emitter.taken] == ["first@example.com"]
    assert caplog.text.count("unsubscribe") == 1
    assert "tracking: 1 unsubscribe answered 503" in caplog.text


def test_unsubscribes_not_taken_in_time_are_logged_at_most_every_10_s(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Found by a review: every unsubscribe answered ``503`` for want of the Emitter wrote
    a WARNING line of its own (1,101 lines in one burst)."""
    emitter = Gated("unsubscribed")
    app = TrackingApp(emitter, KEYS, now=lambda: NOW, unsubscribe_wait=1e-3)
    scopes = [
        _post(LINKS.unsubscribe_url(**dict(WHO, email=f"p{i}@example.com"))) for i in range(3)
    ]

    async def scenario() -> list[tuple[int, bytes]]:
        return [await request(app, scope, [chunk(ONE_CLICK)]) for scope in scopes]

    try:
        assert [status for status, _ in asyncio.run(scenario())] == [503] * 3
    finally:
        emitter.release.set()
    assert caplog.text.count("not taken by the Emitter") == 1


def test_a_branded_page_may_style_itself_but_never_run_a_script(site: Site) -> None:
    """Found by a review: the pages' policy was ``default-src 'none'``, so a platform's
    ``confirm_page`` with its inline styles, stylesheet, logo or font rendered bare."""
    answer = site.request("GET", site.links.unsubscribe_url(**WHO))
    policy = dict(
        part.strip().split(" ", 1) for part in answer.headers["content-security-policy"].split(";")
    )
    assert policy["default-src"] == "'none'"  # scripts, frames, connections: none
    assert policy["style-src"] == "'unsafe-inline' https:"
    assert policy["img-src"] == "https: data:"
    assert policy["font-src"] == "https:"
    assert policy["form-action"] == "'self'"
    assert "script-src" not in policy


def test_records_left_waiting_by_a_closed_event_loop_count_against_no_bound() -> None:
    """Found by a second review: a loop closed while the Emitter still held a record never
    completes its future, so the record counted against ``max_waiting_unsubscribes`` (or
    ``max_waiting_hits``) for good, and every later unsubscribe was answered ``503`` at
    once, every later hit not recorded (an app served by one loop after another)."""
    emitter = Gated("unsubscribed", "opened")
    app = TrackingApp(
        emitter,
        KEYS,
        now=lambda: NOW,
        unsubscribe_wait=1e-3,
        max_waiting_unsubscribes=1,
        hit_wait=0,
        max_waiting_hits=1,
    )
    people = [dict(WHO, email=f"p{i}@example.com") for i in range(2)]
    try:
        for who in people:  # each in an event loop of its own, closed after it
            assert call_asgi(app, _post(LINKS.unsubscribe_url(**who)), [chunk(ONE_CLICK)])[0] == 503
            assert call_asgi(app, _get(LINKS.open_pixel_url(**who)), [])[0] == 200
    finally:
        emitter.release.set()
    app._unsubscribes.shutdown(wait=True)  # every record handed over has been taken
    app._hits.shutdown(wait=True)
    taken = sorted((r["type"], r["email"]) for r in emitter.taken)
    assert taken == sorted(
        (kind, who["email"]) for kind in ("opened", "unsubscribed") for who in people
    )
