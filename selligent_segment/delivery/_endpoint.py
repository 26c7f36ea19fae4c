"""Which base URL events are posted to, validated once when the configuration is built.

Guarantee: the URL returned is an absolute ``http(s)`` URL with a host and no credentials,
query or fragment; plain ``http`` only to a loopback host unless allowed in so many words;
an error never echoes anything that could be a credential.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from urllib3.exceptions import LocationParseError
from urllib3.util import parse_url

from selligent_segment._errors import ConfigurationError, shown
from selligent_segment._limits import BATCH_PATH as _BATCH_PATH

__all__ = ["REGIONS", "is_loopback_host", "resolve_endpoint"]

#: Segment's regional ingestion endpoints. A write key of one region sent to the other is
#: rejected, sometimes silently, so the region must match the workspace.
REGIONS: dict[str, str] = {
    "us": "https://api.segment.io",
    "eu": "https://events.eu1.segmentapis.com",
}


def resolve_endpoint(endpoint: str | None, region: str, allow_insecure_http: bool) -> str:
    """Return the base URL to post to (``{base}/v1/batch``), without a trailing slash.

    With no ``endpoint`` the region decides: ``"us"`` (the default Segment endpoint) or
    ``"eu"``. A custom ``endpoint`` (a proxy, a Segment-compatible collector, a local test
    server) overrides the region; it must be an absolute ``http(s)`` URL with a host, no
    credentials, query or fragment. Plain ``http://`` is accepted only for a loopback host
    (127.0.0.0/8, ::1, ``localhost``) unless ``allow_insecure_http`` is true, because the
    write key travels in every request. Anything else raises
    :class:`~selligent_segment.ConfigurationError` naming ``"endpoint"`` or ``"region"``;
    the message never echoes anything that could be a credential.
    """
    if not isinstance(region, str) or region.strip().lower() not in REGIONS:
        given = region if isinstance(region, str) else type(region).__name__
        raise ConfigurationError("region", f"must be 'us' or 'eu', got {shown(given)}")
    if endpoint is None:
        return REGIONS[region.strip().lower()]
    if not isinstance(endpoint, str):
        raise ConfigurationError("endpoint", f"must be a string, got {type(endpoint).__name__}")
    return _validate_custom(endpoint, allow_insecure_http)


def is_loopback_host(host: str) -> bool:
    """True if ``host`` (as in a URL, IPv6 without brackets) can only mean this machine:
    ``localhost`` or an address in 127.0.0.0/8 or ::1. No name is resolved."""
    name = host.lower().rstrip(".")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _validate_custom(endpoint: str, allow_insecure_http: bool) -> str:
    text = endpoint.strip()
    if not text:
        raise ConfigurationError("endpoint", "must not be empty")
    if any(ord(ch) < 0x21 or ord(ch) == 0x7F for ch in text):
        raise ConfigurationError("endpoint", "must not contain whitespace or control characters")
    try:
        parts = urlsplit(text)
        port = parts.port  # parses and range-checks the port
    except ValueError as exc:
        reason = shown(str(exc), quote=False)  # urllib quotes e.g. the port as given
        raise ConfigurationError("endpoint", f"is not a valid URL ({reason})") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ConfigurationError(
            "endpoint",
            f"must start with https:// or http://, got scheme {shown(scheme or '(none)')}",
        )
    if parts.username is not None or parts.password is not None:
        # Not echoed: the user part is exactly where a secret would be.
        raise ConfigurationError(
            "endpoint", "must not contain credentials; the write key is sent as a header"
        )
    host = parts.hostname
    if not host:
        raise ConfigurationError("endpoint", "must name a host, e.g. https://collector.example")
    if parts.query or text.endswith("?"):
        raise ConfigurationError("endpoint", "must not contain a query string")
    if parts.fragment or "#" in text:
        raise ConfigurationError("endpoint", "must not contain a fragment")
    if scheme == "http" and not allow_insecure_http and not is_loopback_host(host):
        raise ConfigurationError(
            "endpoint",
            f"plain http:// to non-loopback host {shown(host)} would expose the write key; "
            "use https:// or set allow_insecure_http",
        )
    path = parts.path.rstrip("/")
    if path.endswith(_BATCH_PATH):
        raise ConfigurationError(
            "endpoint", f"give the base URL only; {_BATCH_PATH} is appended to it"
        )
    if port == 0:
        raise ConfigurationError("endpoint", "port 0 cannot be connected to")
    result = f"{scheme}://{_netloc(host, port)}{path}"
    try:
        sent = parse_url(result).host or ""  # what the transport does with it (IDNA 2008)
    except LocationParseError:
        raise ConfigurationError(
            "endpoint", f"is not a URL the transport can send to (host {shown(host)})"
        ) from None
    labels = sent.removesuffix(".").split(".")
    if not _is_address(host) and not all(0 < len(label) <= 63 for label in labels):
        # As urllib3 checks the name before every connect (the send would raise each time).
        raise ConfigurationError(
            "endpoint",
            f"{shown(host)} is not a valid host name (an empty label, or one over 63 characters)",
        )
    return result


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _netloc(host: str, port: int | None) -> str:
    """Host (lower-cased, IPv6 bracketed) and port as given, with no user information."""
    shown = f"[{host}]" if ":" in host else host
    return shown if port is None else f"{shown}:{port}"
