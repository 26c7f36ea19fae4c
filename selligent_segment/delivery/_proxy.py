"""Which HTTP proxy, if any, a request goes through, and which CA bundle verifies TLS.

Both are decided once, when the transport is made, from its settings or, when a setting
is left ``None``, from the environment, as the official client (through ``requests``)
reads it: ``https_proxy``/``HTTPS_PROXY`` for an ``https://`` endpoint, ``http_proxy``/
``HTTP_PROXY`` for ``http://``, ``all_proxy``/``ALL_PROXY`` for either, the lower-case
form first (set but empty: no proxy), upper-case ``HTTP_PROXY`` ignored in a CGI process
(``REQUEST_METHOD`` set: the httpoxy rule), and ``no_proxy``/``NO_PROXY`` naming the
hosts that bypass it (an empty ``no_proxy`` reads ``NO_PROXY``, as ``requests`` does). A
loopback endpoint never takes an environment proxy that is not on loopback itself (it
would reach its own loopback; plain http would cross the network in clear). The CA
bundle: ``SSL_CERT_FILE``, else ``REQUESTS_CA_BUNDLE``, else certifi's.

Guarantee: a proxy's credentials (``http://user:pass@proxy:3128``) are kept only as the
value of the ``Proxy-Authorization`` header, out of every repr; no error text echoes a
proxy setting (the user part is exactly where a secret would be). A bad setting or
variable raises :class:`~selligent_segment.ConfigurationError` naming it.
"""

from __future__ import annotations

import base64
import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import unquote, urlsplit

import attrs

from selligent_segment._errors import ConfigurationError, shown
from selligent_segment.delivery._endpoint import is_loopback_host

__all__ = [
    "CA_VARIABLES",
    "DIRECT",
    "PROXY_VARIABLES",
    "Proxy",
    "ProxyRoutes",
    "bypasses",
    "ca_bundle",
    "ca_bundle_variable",
    "check_ca_bundle",
    "parse_proxy",
    "proxy_for",
    "routes",
]

#: ``proxy=DIRECT`` (``False``): connect directly, whatever the environment says.
DIRECT = False

_DEFAULT_PORTS = {"http": 80, "https": 443}
#: The environment variables that name the CA bundle, in order.
CA_VARIABLES = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE")
#: The environment variables the proxy routes are read from (``REQUEST_METHOD``: the
#: httpoxy rule).
PROXY_VARIABLES = (
    *(f"{name}_proxy" for name in ("http", "https", "all", "no")),
    *(f"{name}_PROXY" for name in ("HTTP", "HTTPS", "ALL", "NO")),
    "REQUEST_METHOD",
)


@attrs.frozen
class Proxy:
    """One proxy: its URL without credentials, and the headers sent to it.

    ``url`` is ``scheme://host:port`` (``http`` or ``https``); ``headers`` holds
    ``Proxy-Authorization`` when the setting carried credentials, and is out of the repr.
    ``source`` names where it came from (``proxy``, ``HTTPS_PROXY``...), for error texts.
    """

    url: str
    source: str
    headers: Mapping[str, str] = attrs.field(factory=dict, repr=False)

    @property
    def credentials(self) -> tuple[str, ...]:
        """The secret strings this proxy holds (the header's token), for scrubbing."""
        value = self.headers.get("Proxy-Authorization", "")
        return (value.split(" ", 1)[1],) if " " in value else ()


@attrs.frozen
class ProxyRoutes:
    """The proxies of one transport: per endpoint scheme, and the hosts that bypass them.

    ``explicit`` is true when the ``proxy`` setting decided (a URL, or direct): then
    ``no_proxy`` is empty and the environment plays no part.
    """

    http: Proxy | None = None
    https: Proxy | None = None
    no_proxy: tuple[str, ...] = ()
    explicit: bool = False

    def for_url(self, url: str) -> Proxy | None:
        """The proxy a request to ``url`` goes through, or None for a direct connection."""
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        proxy = self.https if scheme == "https" else self.http if scheme == "http" else None
        if proxy is None:
            return None
        host = parts.hostname or ""
        port = parts.port or _DEFAULT_PORTS.get(scheme)
        if self.no_proxy and bypasses(host, port, self.no_proxy):
            return None
        proxy_host = urlsplit(proxy.url).hostname or ""
        if not self.explicit and is_loopback_host(host) and not is_loopback_host(proxy_host):
            # A proxy elsewhere would reach its own loopback, and plain http (allowed for
            # loopback only) would carry the write key across the network in clear.
            return None
        return proxy

    def describe(self) -> str:
        """A credential-free summary for a repr: ``direct``, a URL, or ``environment``."""
        if self.explicit:
            return self.https.url if self.https is not None else "direct"
        if self.http is None and self.https is None:
            return "direct"
        return "environment"


def parse_proxy(value: object, setting: str) -> Proxy:
    """``value`` (a proxy URL) as a :class:`Proxy`; :class:`ConfigurationError` naming
    ``setting`` when it is not an ``http://`` or ``https://`` URL with a host (a URL with
    no scheme is taken as ``http://``, as ``requests`` does). The value is never echoed."""
    if not isinstance(value, str):
        got = shown(type(value).__name__, quote=False)
        raise ConfigurationError(setting, f"expected a proxy URL, got {got}")
    text = value.strip()
    if not text:
        raise ConfigurationError(setting, "is empty")
    if any(ord(ch) < 0x21 or ord(ch) == 0x7F for ch in text):
        raise ConfigurationError(setting, "must not contain whitespace or control characters")
    if "://" not in text:
        text = "http://" + text
    try:
        parts = urlsplit(text)
        port = parts.port
        host = parts.hostname
        username, password = parts.username, parts.password
    except ValueError:
        raise ConfigurationError(setting, "is not a valid URL (the value is not shown)") from None
    scheme = parts.scheme.lower()
    if scheme.startswith("socks"):
        raise ConfigurationError(
            setting, "SOCKS proxies are not supported; give an http:// or https:// proxy"
        )
    if scheme not in _DEFAULT_PORTS:
        raise ConfigurationError(
            setting, f"must be an http:// or https:// URL, got scheme {shown(scheme)}"
        )
    if not host:
        raise ConfigurationError(setting, "must name a host, e.g. http://proxy.internal:3128")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigurationError(setting, "must be scheme://[user:password@]host[:port] only")
    netloc = f"[{host}]" if ":" in host else host
    url = f"{scheme}://{netloc}:{port or _DEFAULT_PORTS[scheme]}"
    headers: dict[str, str] = {}
    if username is not None or password is not None:
        pair = f"{unquote(username or '')}:{unquote(password or '')}"
        token = base64.b64encode(pair.encode("utf-8")).decode("ascii")
        headers["Proxy-Authorization"] = f"Basic {token}"
    return Proxy(url, setting, headers)


def routes(proxy: str | bool | None, environ: Mapping[str, str] | None = None) -> ProxyRoutes:
    """The routes for the ``proxy`` setting: a URL (every request goes through it, the
    environment ignored, ``NO_PROXY`` included), ``False`` (:data:`DIRECT`: no proxy, the
    environment ignored), or ``None`` (the environment decides, read from ``environ``,
    default ``os.environ``). :class:`ConfigurationError` names the setting or variable."""
    if proxy is None:
        return _from_environment(os.environ if environ is None else environ)
    if proxy is False:
        return ProxyRoutes(explicit=True)
    if proxy is True or proxy == "":
        raise ConfigurationError(
            "proxy",
            "expected a proxy URL, False (no proxy) or None (the environment's "
            "HTTPS_PROXY/HTTP_PROXY/NO_PROXY)",
        )
    chosen = parse_proxy(proxy, "proxy")
    return ProxyRoutes(http=chosen, https=chosen, explicit=True)


def proxy_for(url: str, environ: Mapping[str, str]) -> tuple[str | bool, str | None]:
    """The ``proxy`` setting that sends a request to ``url`` where ``proxy=None`` would
    with ``environ`` as the environment: the value of the variable that applies (its
    credentials included) and that variable's name, or ``(DIRECT, None)``. A bad proxy
    variable raises :class:`ConfigurationError` naming it, as :func:`routes` does."""
    chosen = _from_environment(environ).for_url(url)
    if chosen is None:
        return DIRECT, None
    return environ[chosen.source].strip(), chosen.source


def _variable(environ: Mapping[str, str], name: str, *, upper: bool = True) -> tuple[str, str]:
    """``(variable, value)``: the lower-case form when set (even empty), else upper-case."""
    lower = name.lower()
    if lower in environ:
        return lower, environ[lower].strip()
    if upper and name.upper() in environ:
        return name.upper(), environ[name.upper()].strip()
    return lower, ""


def _from_environment(environ: Mapping[str, str]) -> ProxyRoutes:
    found: dict[str, Proxy | None] = {}
    cgi = "REQUEST_METHOD" in environ
    fallback_name, fallback = _variable(environ, "all_proxy")
    for scheme in ("http", "https"):
        name, value = _variable(environ, f"{scheme}_proxy", upper=not (cgi and scheme == "http"))
        if not value:
            name, value = fallback_name, fallback
        found[scheme] = parse_proxy(value, name) if value else None
    _, no_proxy = _variable(environ, "no_proxy")
    if not no_proxy:  # set but empty in lower case: requests and curl read NO_PROXY then
        no_proxy = environ.get("NO_PROXY", "").strip()
    hosts = tuple(h for h in no_proxy.replace(" ", "").lower().split(",") if h)
    return ProxyRoutes(http=found["http"], https=found["https"], no_proxy=hosts)


def bypasses(host: str, port: int | None, no_proxy: tuple[str, ...]) -> bool:
    """True when ``NO_PROXY``'s entries (lower-case) say ``host`` is reached directly.

    As ``requests`` and ``urllib`` read it: ``*`` matches every host; an entry matches the
    host itself and its subdomains (``example.com`` and ``.example.com`` both match
    ``api.example.com``, but not ``badexample.com``, which ``requests``' plain suffix test
    would also match); an entry with a port (``example.com:8443``) matches that port only;
    a CIDR block (``10.0.0.0/8``) or an address matches an IP address host.
    """
    name = host.lower().strip("[]").rstrip(".")
    try:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(name)
    except ValueError:
        address = None
    for entry in no_proxy:
        if entry == "*":
            return True
        entry_host, entry_port = _split_port(entry)
        if entry_port is not None and entry_port != port:
            continue
        entry_host = entry_host.strip("[]").lstrip(".").rstrip(".")
        if not entry_host:
            continue
        if address is not None:
            try:
                if address in ipaddress.ip_network(entry_host, strict=False):
                    return True
            except ValueError:
                pass
            continue
        if name == entry_host or name.endswith("." + entry_host):
            return True
    return False


def _split_port(entry: str) -> tuple[str, int | None]:
    head, sep, tail = entry.rpartition(":")
    if sep and tail.isdigit() and (not head.count(":") or head.endswith("]")):
        return head, int(tail)
    return entry, None


def ca_bundle(
    value: str | os.PathLike[str] | None,
    environ: Mapping[str, str] | None = None,
    *,
    setting: str = "ca_bundle",
) -> str | None:
    """The CA bundle file TLS is verified with: ``value``, else ``SSL_CERT_FILE``, else
    ``REQUESTS_CA_BUNDLE`` (read from ``environ``, default ``os.environ``), else None
    (the caller's default, certifi's bundle). :class:`ConfigurationError` names
    ``setting`` or the variable when the file is missing or unreadable."""
    if value is not None:
        return check_ca_bundle(value, setting)
    found = ca_bundle_variable(os.environ if environ is None else environ)
    return None if found is None else found[0]


def ca_bundle_variable(environ: Mapping[str, str]) -> tuple[str, str] | None:
    """The CA bundle ``environ`` names (``SSL_CERT_FILE``, else ``REQUESTS_CA_BUNDLE``) and
    that variable's name, or None. :class:`ConfigurationError` names the variable when
    the file is missing or unreadable."""
    for name in CA_VARIABLES:
        given = environ.get(name, "").strip()
        if given:
            return check_ca_bundle(given, name), name
    return None


def check_ca_bundle(value: object, setting: str) -> str:
    """``value`` as the path of a readable regular file, else ConfigurationError naming
    ``setting``. Only existence and readability are checked here; a file that holds no
    certificate fails the first TLS connection, which is then retried and reported."""
    if not isinstance(value, (str, os.PathLike)):
        got = shown(type(value).__name__, quote=False)
        raise ConfigurationError(setting, f"expected the path of a PEM file, got {got}")
    path = Path(value)
    if not str(value).strip():
        raise ConfigurationError(setting, "is empty")
    if not path.is_file():
        raise ConfigurationError(setting, f"{shown(str(path))} is not a file")
    if not os.access(path, os.R_OK):
        raise ConfigurationError(setting, f"{shown(str(path))} is not readable")
    return str(path)
