"""Endpoint resolution and validation."""

from __future__ import annotations

import pytest

from selligent_segment import ConfigurationError
from selligent_segment.delivery._endpoint import REGIONS, is_loopback_host, resolve_endpoint


@pytest.mark.parametrize(
    ("region", "expected"),
    [
        ("us", "https://api.segment.io"),
        ("eu", "https://events.eu1.segmentapis.com"),
        ("EU", "https://events.eu1.segmentapis.com"),
        (" us ", "https://api.segment.io"),
    ],
)
def test_regions(region: str, expected: str) -> None:
    assert resolve_endpoint(None, region, False) == expected


@pytest.mark.parametrize("region", ["", "usa", "eu1", "ap", "us-west"])
def test_unknown_region(region: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        resolve_endpoint(None, region, False)
    assert info.value.setting == "region"


def test_region_must_be_a_string() -> None:
    with pytest.raises(ConfigurationError) as info:
        resolve_endpoint(None, None, False)  # type: ignore[arg-type]
    assert info.value.setting == "region"


def test_region_is_validated_even_with_a_custom_endpoint() -> None:
    with pytest.raises(ConfigurationError) as info:
        resolve_endpoint("https://collector.example", "mars", False)
    assert info.value.setting == "region"


def test_region_urls_have_no_trailing_slash() -> None:
    assert all(not url.endswith("/") and url.startswith("https://") for url in REGIONS.values())


@pytest.mark.parametrize(
    ("endpoint", "expected"),
    [
        ("https://collector.example", "https://collector.example"),
        ("https://collector.example/", "https://collector.example"),
        ("https://collector.example//", "https://collector.example"),
        ("  https://collector.example  ", "https://collector.example"),
        ("HTTPS://Collector.Example:8443/", "https://collector.example:8443"),
        ("https://proxy.example/segment/", "https://proxy.example/segment"),
        ("https://[2001:db8::1]:443/a/", "https://[2001:db8::1]:443/a"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("http://127.9.9.9/", "http://127.9.9.9"),
        ("http://localhost:9000/", "http://localhost:9000"),
        ("http://LOCALHOST", "http://localhost"),
        ("http://[::1]:9000", "http://[::1]:9000"),
        # Names IDNA 2008 (urllib3's) takes and the older rules of Python's codec refused
        # (found by a review of the host check); a trailing dot; a zoned link-local address.
        ("https://موقع1.example", "https://موقع1.example"),
        ("https://bücher.example/", "https://bücher.example"),
        ("https://collector.example./", "https://collector.example."),
        ("https://[fe80::1%25eth0]:9000", "https://[fe80::1%25eth0]:9000"),
    ],
)
def test_custom_endpoint(endpoint: str, expected: str) -> None:
    assert resolve_endpoint(endpoint, "eu", False) == expected


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://collector.example",
        "http://10.0.0.5:8080",
        "http://192.168.1.1",
        "http://128.0.0.1",
        "http://[::2]",
        "http://localhost.evil.example",
        "http://0.0.0.0:80",
    ],
)
def test_plain_http_to_a_non_loopback_host_is_refused(endpoint: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        resolve_endpoint(endpoint, "us", False)
    assert info.value.setting == "endpoint"
    assert "allow_insecure_http" in info.value.reason


def test_plain_http_allowed_when_asked() -> None:
    assert resolve_endpoint("http://collector.example/", "us", True) == "http://collector.example"


@pytest.mark.parametrize(
    ("endpoint", "fragment"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("collector.example", "https://"),
        ("localhost:8080", "https://"),
        ("ftp://collector.example", "https://"),
        ("file:///etc/passwd", "https://"),
        ("https://", "host"),
        ("https:///path", "host"),
        ("https://collector.example?x=1", "query"),
        ("https://collector.example/?", "query"),
        ("https://collector.example#top", "fragment"),
        ("https://collector.example/v1/batch", "appended"),
        ("https://collector.example/v1/batch/", "appended"),
        ("https://collector.example:99999", "valid URL"),
        ("https://collector.example:port", "valid URL"),
        ("https://[::1", "valid URL"),
        ("https://collector .example", "whitespace"),
        ("https://collector.example/\npath", "whitespace"),
        # Found by a review: accepted here, refused by urllib3 at every send (the events
        # stuck, a traceback a second in the log).
        ("https://segment..example.com", "not a valid host name"),
        ("https://.segment.example.com", "not a valid host name"),
        ("https://" + "a" * 64 + ".example.com", "not a valid host name"),
        ("https://ex%ample.com", "not a URL"),
        ("https://collector.example:0", "port 0"),
    ],
)
def test_invalid_endpoint(endpoint: str, fragment: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        resolve_endpoint(endpoint, "us", True)
    assert info.value.setting == "endpoint"
    assert fragment in info.value.reason


def test_endpoint_must_be_a_string() -> None:
    with pytest.raises(ConfigurationError) as info:
        resolve_endpoint(b"https://x.example", "us", False)  # type: ignore[arg-type]
    assert info.value.setting == "endpoint"


def test_credentials_in_the_url_are_refused_without_being_echoed() -> None:
    with pytest.raises(ConfigurationError) as info:
        resolve_endpoint("https://writekeyABC:s3cret@collector.example", "us", False)
    assert info.value.setting == "endpoint"
    assert "writekeyABC" not in str(info.value)
    assert "s3cret" not in str(info.value)


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("localhost", True),
        ("LocalHost.", True),
        ("127.0.0.1", True),
        ("127.255.255.254", True),
        ("::1", True),
        ("0:0:0:0:0:0:0:1", True),
        ("10.0.0.1", False),
        ("::", False),
        ("example.com", False),
        ("localhost.example.com", False),
        ("", False),
    ],
)
def test_is_loopback_host(host: str, expected: bool) -> None:
    assert is_loopback_host(host) is expected
