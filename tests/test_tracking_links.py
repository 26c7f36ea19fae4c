"""Building tracking links (inputs/tracking/_links.py): URLs, List-Unsubscribe headers, and
what is refused when a link is made."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from urllib.parse import urlsplit

import pytest

from selligent_segment import ConfigurationError, InvalidEvent
from selligent_segment.inputs.tracking import ONE_CLICK, Token, TrackingKeys, TrackingLinks
from selligent_segment.inputs.tracking._token import unseal

KEYS = TrackingKeys({"k1": b"s" * 32}, "k1")
LINKS = TrackingLinks("https://t.example.com/track/", KEYS)
SENT = 1_790_000_000


def _token(url: str) -> Token:
    return unseal(url.rpartition("/")[2], KEYS, now=SENT, max_age=None)


def test_each_link_seals_its_kind_recipient_and_ids() -> None:
    who = {"tenant": "acme", "email": " Ada@Example.com ", "user_id": 1001, "sent_at": SENT}
    pixel = LINKS.open_pixel_url(email_id=42, campaign_id="c-7", **who)  # type: ignore[arg-type]
    assert pixel.startswith("https://t.example.com/track/o/k1.")
    assert _token(pixel) == Token(
        kind="open",
        sent_at=SENT,
        tenant="acme",
        user_id="1001",
        email="Ada@Example.com",
        email_id="42",
        campaign_id="c-7",
    )
    click = LINKS.click_url("https://example.com/a?b=1", link_id="l-1", **who)  # type: ignore[arg-type]
    assert urlsplit(click).path.startswith("/track/c/")
    assert _token(click).link_url == "https://example.com/a?b=1"
    assert _token(click).link_id == "l-1"
    unsubscribe = LINKS.unsubscribe_url(list_id="weekly", **who)  # type: ignore[arg-type]
    assert urlsplit(unsubscribe).path.startswith("/track/u/")
    assert _token(unsubscribe).kind == "unsubscribe"
    assert _token(unsubscribe).list_id == "weekly"


def test_sent_at_may_be_an_aware_datetime() -> None:
    moment = datetime.fromtimestamp(SENT, timezone.utc)
    assert _token(LINKS.open_pixel_url(email="a@b.co", sent_at=moment)).sent_at == SENT
    with pytest.raises(InvalidEvent, match="sent_at"):
        LINKS.open_pixel_url(email="a@b.co", sent_at=datetime(2026, 1, 1))


@pytest.mark.parametrize(
    ("sent_at", "reason"),
    [
        (time.time() * 1000, "more than a year ahead: POSIX seconds are expected"),
        (float("inf"), "not a finite number of seconds"),
        (float("nan"), "not a finite number of seconds"),
        (10**400, "more than a year ahead"),
        (-1, "before 1970"),
    ],
    ids=["milliseconds", "infinity", "nan", "huge", "negative"],
)
def test_a_send_time_whose_links_could_never_work_is_refused(sent_at: float, reason: str) -> None:
    """The endpoints refuse a token dated more than 5 minutes ahead of the hit: a send time
    in milliseconds made links that built without a word and answered 404 to every click
    and unsubscribe; infinity and NaN raised OverflowError and ValueError."""
    with pytest.raises(InvalidEvent) as caught:
        LINKS.unsubscribe_url(email="a@b.co", sent_at=sent_at)
    assert (caught.value.field, caught.value.reason[: len(reason)]) == ("sent_at", reason)
    ahead = int(time.time()) + 30 * 86400  # a send scheduled a month ahead is fine
    token = LINKS.open_pixel_url(email="a@b.co", sent_at=ahead).rpartition("/")[2]
    assert unseal(token, KEYS, now=ahead, max_age=None).sent_at == ahead


def test_list_unsubscribe_headers_follow_rfc_8058() -> None:
    headers = LINKS.list_unsubscribe_headers(email="a@b.co", sent_at=SENT, mailto="unsub@x.example")
    url = LINKS.unsubscribe_url(email="a@b.co", sent_at=SENT)
    assert headers == {
        "List-Unsubscribe": f"<{url}>, <mailto:unsub@x.example>",
        "List-Unsubscribe-Post": ONE_CLICK,
    }
    assert ONE_CLICK == "List-Unsubscribe=One-Click"
    plain = LINKS.list_unsubscribe_headers(email="a@b.co", sent_at=SENT)
    assert plain["List-Unsubscribe"] == f"<{url}>"
    uri = LINKS.list_unsubscribe_headers(
        email="a@b.co", sent_at=SENT, mailto="mailto:u@x.example?subject=unsubscribe"
    )
    assert uri["List-Unsubscribe"].endswith(", <mailto:u@x.example?subject=unsubscribe>")


@pytest.mark.parametrize("mailto", ["", "no-at-sign", "a@b.co>, <https://evil", "a b@c.d", "é@x.y"])
def test_a_bad_mailto_is_refused(mailto: str) -> None:
    with pytest.raises(InvalidEvent) as caught:
        LINKS.list_unsubscribe_headers(email="a@b.co", mailto=mailto)
    assert caught.value.field == "mailto"


def test_what_a_record_would_refuse_is_refused_when_the_link_is_made() -> None:
    with pytest.raises(InvalidEvent) as caught:
        LINKS.open_pixel_url(email="not-an-address")
    assert caught.value.field == "email"
    with pytest.raises(InvalidEvent):
        LINKS.open_pixel_url(tenant="acme")  # neither email nor user_id
    with pytest.raises(InvalidEvent) as caught:
        LINKS.click_url("javascript:alert(1)", email="a@b.co")
    assert caught.value.field == "link_url"


@pytest.mark.parametrize(
    "base",
    [
        "http://t.example.com",
        "ftp://t.example.com",
        "https://user@t.example.com",
        "https://t.example.com/?q=1",
        "https:///x",
        "t.example.com",
        "https://t.example.com/track?",  # an empty query: the token would land in it
        "https://t.example.com/track#",
        "https://t.example.com/x\r\nBcc: all@example.com",  # into List-Unsubscribe
        "https://t.example.com/a b",
        "https://t.\u00e9xample.com",
        # Found by a review: these passed, and a List-Unsubscribe header <https://t/a>b/u/…>
        # is read as https://t/a by the mailbox provider (the one-click POST went astray).
        "https://t.example.com/a>b",
        "https://t.example.com/a<b",
        'https://t.example.com/a"b',
        "https://t.example.com/a,b",
        "https://t.example.com\\track",
        "https://t.example.com/a`b",
        "https://t.example.com/a{b}",
        "https://t.example.com/a|b",
        "https://t.example.com/a^b",
    ],
)
def test_the_base_url_must_be_https_without_extras(base: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        TrackingLinks(base, KEYS)
    assert caught.value.setting == "base_url"


def test_plain_http_is_allowed_on_loopback_only() -> None:
    assert TrackingLinks("http://127.0.0.1:8080", KEYS).base_url == "http://127.0.0.1:8080"
    with pytest.raises(ConfigurationError):
        TrackingLinks("https://t.example.com", "not keys")  # type: ignore[arg-type]


def test_a_link_whose_token_the_endpoints_would_refuse_is_not_made() -> None:
    """Found by a review: long or non-ASCII ids gave a token over the 16,384 characters
    the endpoints read, and the link was made all the same (every hit then ``404``). It is
    refused when made, naming what made it long."""
    long_id = "\u00e9" * 8_000  # 3 bytes each in JSON, then base64: about 32,000 characters
    with pytest.raises(InvalidEvent) as caught:
        LINKS.unsubscribe_url(email="a@b.co", campaign_id=long_id)
    assert caught.value.field == "link"
    assert "16384" in str(caught.value) or "16,384" in str(caught.value)
    assert len(LINKS.unsubscribe_url(email="a@b.co", campaign_id="\u00e9" * 100)) < 2_000
