"""Redirect targets (inputs/tracking/_target.py): only absolute http(s) URLs with a host,
nothing a browser could read as another place."""

from __future__ import annotations

import pytest

from selligent_segment import InvalidEvent
from selligent_segment.inputs.tracking import check_target


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/offer?a=1&b=%20#top",
        "http://example.com",
        "HTTPS://Example.com:8443/x",
        "https://[2001:db8::1]/x",
        "https://xn--bcher-kva.example/",
    ],
)
def test_absolute_http_urls_are_kept_as_they_are(url: str) -> None:
    assert check_target(url) == url


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("javascript:alert(1)", "http:// or https://"),
        ("JaVaScRiPt:alert(1)", "http:// or https://"),
        ("data:text/html,<x>", "whitespace"),
        ("data:text/html,x", "http:// or https://"),
        ("ftp://example.com/", "http:// or https://"),
        ("//evil.example/", "http:// or https://"),
        ("/relative/path", "http:// or https://"),
        ("https:evil.example", "must name a host"),
        ("https:/evil.example", "must name a host"),
        ("https:///evil.example", "must name a host"),
        ("https:\\\\evil.example", "backslashes"),
        ("https://good.example\\@evil.example", "backslashes"),
        ("https://good.example@evil.example/", "credentials"),
        ("https://user:pw@good.example/", "credentials"),
        (" https://example.com", "whitespace"),
        ("https://example.com/\nLocation: x", "whitespace"),
        ("https://example.com/\x00", "whitespace"),
        ("https://exämple.com/", "ASCII"),
        ("https://example.com:99999999999/", "not a valid URL"),
        ("https://example.com:port/", "not a valid URL"),
        ("", "characters"),
        ("https://example.com/" + "a" * 5000, "characters"),
    ],
)
def test_everything_else_is_refused_naming_link_url(url: str, reason: str) -> None:
    with pytest.raises(InvalidEvent) as caught:
        check_target(url)
    assert caught.value.field == "link_url"
    assert reason in caught.value.reason


def test_a_non_text_target_is_refused() -> None:
    with pytest.raises(InvalidEvent, match="link_url: expected text"):
        check_target(None)
