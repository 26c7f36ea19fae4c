"""Egress: proxies from the settings or the environment, CONNECT for https, the CA
bundle, over real loopback sockets (a ForwardProxy, LocalSegment, a TLS server)."""

from __future__ import annotations

import base64
import logging
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_transport import KEY, Reply, _self_signed, message, running

from selligent_segment import ConfigurationError, Emitter, EmitterConfig
from selligent_segment.delivery._proxy import (
    Proxy,
    ProxyRoutes,
    bypasses,
    ca_bundle,
    parse_proxy,
    routes,
)
from selligent_segment.delivery._retry import Outcome
from selligent_segment.delivery._transport import HttpTransport
from selligent_segment.testing import ForwardProxy, LocalSegment

_PROXY_VARIABLES = (
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "no_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "REQUEST_METHOD",
    "SSL_CERT_FILE",
    "REQUESTS_CA_BUNDLE",
)
USER, PASSWORD = "egress-user", "pr0xy-S3cret"
TOKEN = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def proxy() -> Iterator[ForwardProxy]:
    with ForwardProxy() as forward:
        yield forward


def _dead_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    sock.close()
    return port


def _post(transport: HttpTransport, url: str, n: int = 1) -> list[Outcome]:
    try:
        return [transport.post(url, KEY, [message(i)]).outcome for i in range(n)]
    finally:
        transport.close()


# -- the environment, as requests reads it ----------------------------------------------


def test_the_environment_proxy_is_used(
    monkeypatch: pytest.MonkeyPatch, proxy: ForwardProxy, server: LocalSegment
) -> None:
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    assert _post(HttpTransport(), server.url, 3) == [Outcome.DELIVERED] * 3
    assert [(r.method, r.target, r.status) for r in proxy.requests] == [
        ("POST", f"{server.url}/v1/batch", 200)
    ] * 3
    assert server.accepted_count == 3
    assert proxy.connections == 1  # keep-alive to the proxy


def test_no_proxy_bypasses_the_proxy(
    monkeypatch: pytest.MonkeyPatch, proxy: ForwardProxy, server: LocalSegment
) -> None:
    monkeypatch.setenv("http_proxy", proxy.url)
    monkeypatch.setenv("NO_PROXY", f"example.com, 127.0.0.1:{server.port}")
    assert _post(HttpTransport(), server.url) == [Outcome.DELIVERED]
    assert proxy.requests == []
    assert server.accepted_count == 1


def test_an_explicit_proxy_wins_over_the_environment(
    monkeypatch: pytest.MonkeyPatch, proxy: ForwardProxy, server: LocalSegment
) -> None:
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{_dead_port()}")
    monkeypatch.setenv("NO_PROXY", "*")  # the environment's bypass does not apply either
    assert _post(HttpTransport(proxy=proxy.url), server.url) == [Outcome.DELIVERED]
    assert len(proxy.requests) == 1
    assert server.accepted_count == 1


def test_proxy_false_connects_directly_whatever_the_environment_says(
    monkeypatch: pytest.MonkeyPatch, server: LocalSegment
) -> None:
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{_dead_port()}")
    assert _post(HttpTransport(proxy=False), server.url) == [Outcome.DELIVERED]
    assert server.accepted_count == 1


def test_a_dead_environment_proxy_is_a_retryable_failure(
    monkeypatch: pytest.MonkeyPatch, server: LocalSegment
) -> None:
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{_dead_port()}")
    transport = HttpTransport(connect_timeout=2.0)
    response = transport.post(server.url, KEY, [message(1)])
    transport.close()
    assert (response.status, response.outcome) == (None, Outcome.RETRY)
    assert server.request_count == 0


# -- proxy credentials --------------------------------------------------------------------


def test_credentials_go_as_proxy_authorization_and_not_to_segment(
    server: LocalSegment,
) -> None:
    with ForwardProxy(credentials=(USER, PASSWORD)) as proxy:
        url = proxy.url.replace("http://", f"http://{USER}:{PASSWORD}@")
        transport = HttpTransport(proxy=url)
        assert PASSWORD not in repr(transport)
        assert _post(transport, server.url) == [Outcome.DELIVERED]
        (seen,) = proxy.requests
    assert seen.proxy_authorization == f"Basic {TOKEN}"
    assert TOKEN not in repr(seen)
    (request,) = server.requests
    assert not any(name.lower() == "proxy-authorization" for name in request.headers)


def test_refused_proxy_credentials_are_retried_and_never_shown(
    server: LocalSegment, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with ForwardProxy(credentials=(USER, "the-right-one")) as proxy:
        url = proxy.url.replace("http://", f"http://{USER}:{PASSWORD}@")
        transport = HttpTransport(proxy=url)
        response = transport.post(server.url, KEY, [message(1)])
        transport.close()
    assert response.status == 407
    assert response.outcome is Outcome.RETRY  # the proxy refused, not Segment
    assert response.error is not None
    assert "proxy" in response.error
    for text in (response.error, repr(response), repr(transport), caplog.text):
        assert PASSWORD not in text
        assert TOKEN not in text
    assert server.request_count == 0


def test_proxy_credentials_are_not_in_network_errors(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    transport = HttpTransport(proxy=f"http://{USER}:{PASSWORD}@127.0.0.1:{_dead_port()}")
    response = transport.post("https://127.0.0.1:9", KEY, [message(1)])
    transport.close()
    assert response.outcome is Outcome.RETRY
    for text in (response.error or "", repr(transport), caplog.text):
        assert PASSWORD not in text
        assert TOKEN not in text


# -- https through CONNECT, and the CA bundle --------------------------------------------


@pytest.fixture
def tls(tmp_path: Path) -> tuple[ssl.SSLContext, Path]:
    cert_path, key_path = _self_signed(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    return context, cert_path


def test_https_goes_through_a_connect_tunnel_verified_by_ssl_cert_file(
    monkeypatch: pytest.MonkeyPatch, tls: tuple[ssl.SSLContext, Path]
) -> None:
    context, cert = tls
    with ForwardProxy(credentials=(USER, PASSWORD)) as proxy, running(context) as segment:
        monkeypatch.setenv("HTTPS_PROXY", proxy.url.replace("//", f"//{USER}:{PASSWORD}@"))
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        assert _post(HttpTransport(), segment.url, 2) == [Outcome.DELIVERED] * 2
        seen = proxy.requests
        requests = segment.requests
    port = segment.url.rsplit(":", 1)[1]
    # One tunnel, kept alive for both posts; the proxy saw the target and nothing else.
    assert [(r.method, r.target, r.status) for r in seen] == [("CONNECT", f"127.0.0.1:{port}", 200)]
    assert seen[0].proxy_authorization == f"Basic {TOKEN}"
    assert len(requests) == 2
    assert requests[0].headers["Authorization"].startswith("Basic ")
    assert not any(name.lower() == "proxy-authorization" for name in requests[0].headers)


def test_https_through_an_explicit_proxy_with_an_explicit_ca_bundle(
    monkeypatch: pytest.MonkeyPatch, proxy: ForwardProxy, tls: tuple[ssl.SSLContext, Path]
) -> None:
    context, cert = tls
    monkeypatch.setenv("SSL_CERT_FILE", "/nonexistent/the-setting-wins.pem")
    with running(context) as segment:
        transport = HttpTransport(proxy=proxy.url, ca_certs=str(cert))
        assert _post(transport, segment.url) == [Outcome.DELIVERED]
        assert len(segment.requests) == 1
    assert [r.method for r in proxy.requests] == ["CONNECT"]


def test_verification_fails_through_the_tunnel_without_the_ca(
    proxy: ForwardProxy, tls: tuple[ssl.SSLContext, Path]
) -> None:
    context, _cert = tls
    with running(context) as segment:
        transport = HttpTransport(proxy=proxy.url, connect_timeout=2.0)
        response = transport.post(segment.url, KEY, [message(1)])
        transport.close()
        requests = segment.requests
    assert (response.status, response.outcome) == (None, Outcome.RETRY)
    assert response.error is not None
    assert "certificate" in response.error.lower()
    assert [r.method for r in proxy.requests] == ["CONNECT"]
    assert requests == []  # nothing was sent over the unverified tunnel


def test_an_https_proxy_is_reached_over_verified_tls(
    server: LocalSegment, tls: tuple[ssl.SSLContext, Path]
) -> None:
    context, cert = tls
    with ForwardProxy(tls=context) as proxy:
        assert proxy.url.startswith("https://")
        trusting = HttpTransport(proxy=proxy.url, ca_certs=str(cert))
        assert _post(trusting, server.url) == [Outcome.DELIVERED]
        assert [r.method for r in proxy.requests] == ["POST"]
        distrusting = HttpTransport(proxy=proxy.url, connect_timeout=2.0)
        refused = distrusting.post(server.url, KEY, [message(2)])
        distrusting.close()
        assert len(proxy.requests) == 1  # nothing reached the unverified proxy
    assert refused.outcome is Outcome.RETRY
    assert refused.error is not None
    assert "certificate" in refused.error.lower()
    assert server.accepted_count == 1


def test_a_client_silent_in_its_handshake_holds_no_other_client_nor_stop(
    server: LocalSegment, tls: tuple[ssl.SSLContext, Path]
) -> None:
    """Found by a review: ``ForwardProxy(tls=...)`` wrapped its listening socket, so
    ``accept()`` made the TLS handshake on the serving thread: one client that connected
    and said nothing held every other client, and ``stop()`` hung. Each connection's
    handshake is in its own thread now, bounded by a timeout, and ``stop()`` cuts it."""
    context, cert = tls
    proxy = ForwardProxy(tls=context).start()
    # Accepted first (the listen queue is in order), and silent: no ClientHello.
    silent = socket.create_connection(("127.0.0.1", proxy.port), timeout=30)
    stopper = threading.Thread(target=proxy.stop, daemon=True)
    try:
        transport = HttpTransport(proxy=proxy.url, ca_certs=str(cert), deadline=5.0)
        assert _post(transport, server.url) == [Outcome.DELIVERED]
        assert [r.method for r in proxy.requests] == ["POST"]
        stopper.start()
        stopper.join(10)
        assert not stopper.is_alive(), "stop() hung on the silent client"
        assert silent.recv(1) == b""  # and it cut the silent client's connection
    finally:
        silent.close()  # before the fix: ends the handshake, and so lets stop() return
        if stopper.is_alive():
            stopper.join(10)
        else:
            proxy.stop()


@pytest.mark.slow
def test_the_deadline_holds_through_a_tunnel(
    proxy: ForwardProxy, tls: tuple[ssl.SSLContext, Path]
) -> None:
    context, cert = tls
    with running(context) as segment:
        segment.script(Reply(action="hang"))
        transport = HttpTransport(proxy=proxy.url, ca_certs=str(cert), deadline=0.5)
        response = transport.post(segment.url, KEY, [message(1)])
        after = transport.post(segment.url, KEY, [message(2)])
        transport.close()
    assert (response.status, response.outcome) == (None, Outcome.RETRY)
    assert response.error is not None
    assert "deadline exceeded" in response.error
    assert after.outcome is Outcome.DELIVERED  # the cut tunnel was not pooled


@pytest.mark.slow
def test_the_deadline_holds_through_a_tunnel_in_an_https_proxy(
    tls: tuple[ssl.SSLContext, Path],
) -> None:
    """Found by a review: through an ``https://`` proxy the connection's socket is
    urllib3's TLS-in-TLS wrapper, not a socket, and the watchdog left it alone: an
    endpoint that never answered held the sender for the whole read timeout (or without
    bound, answering a byte at a time)."""
    context, cert = tls
    with ForwardProxy(tls=context) as proxy, running(context) as segment:
        segment.script(Reply(action="hang"))
        transport = HttpTransport(
            proxy=proxy.url, ca_certs=str(cert), deadline=0.5, read_timeout=30.0
        )
        started = time.monotonic()
        response = transport.post(segment.url, KEY, [message(1)])
        elapsed = time.monotonic() - started
        transport.close()
    # The deadline is the behaviour under test: generous, the machine is shared (the
    # proxy's own 10 s idle limit ended it before).
    assert elapsed < 0.5 + 3.0
    assert (response.status, response.outcome) == (None, Outcome.RETRY)
    assert response.error is not None
    assert "deadline exceeded" in response.error


@pytest.mark.slow
def test_the_deadline_holds_when_the_proxy_never_answers_connect() -> None:
    mute = socket.socket()  # accepts TCP connections (the backlog), never answers
    mute.bind(("127.0.0.1", 0))
    mute.listen(8)
    try:
        transport = HttpTransport(
            proxy=f"http://127.0.0.1:{mute.getsockname()[1]}",
            connect_timeout=10.0,
            read_timeout=10.0,
            deadline=0.5,
        )
        response = transport.post("https://127.0.0.1:9", KEY, [message(1)])
        transport.close()
    finally:
        mute.close()
    assert (response.status, response.outcome) == (None, Outcome.RETRY)
    assert response.error is not None
    assert "deadline exceeded" in response.error


def test_the_test_proxy_reaches_loopback_only(proxy: ForwardProxy) -> None:
    transport = HttpTransport(proxy=proxy.url, connect_timeout=2.0)
    response = transport.post("https://segment.invalid", KEY, [message(1)])
    transport.close()
    assert response.outcome is Outcome.RETRY
    assert [(r.method, r.status) for r in proxy.requests] == [("CONNECT", 403)]


# -- the Emitter and its settings ---------------------------------------------------------


def test_the_emitter_sends_through_its_proxy_setting(
    proxy: ForwardProxy, server: LocalSegment
) -> None:
    with Emitter(KEY, endpoint=server.url, proxy=proxy.url, handle_sigterm=False) as emitter:
        emitter.delivered(email="a@example.com", event_id="e1")
        assert emitter.flush(10)
    assert server.accepted_count == 1
    assert [r.method for r in proxy.requests] == ["POST"]


def test_the_emitter_settings_are_checked_naming_them(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError) as bad_proxy:
        EmitterConfig(write_key=KEY, proxy=f"socks5://{USER}:{PASSWORD}@127.0.0.1:1080")
    assert bad_proxy.value.setting == "proxy"
    assert PASSWORD not in str(bad_proxy.value)
    with pytest.raises(ConfigurationError) as empty:
        EmitterConfig(write_key=KEY, proxy="")
    assert empty.value.setting == "proxy"
    with pytest.raises(ConfigurationError) as missing:
        EmitterConfig(write_key=KEY, ca_bundle=tmp_path / "none.pem")
    assert missing.value.setting == "ca_bundle"
    assert "not a file" in str(missing.value)
    config = EmitterConfig(write_key=KEY, proxy=f"http://{USER}:{PASSWORD}@proxy:3128")
    assert PASSWORD not in repr(config)


def test_a_bad_environment_variable_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", f"ftp://{USER}:{PASSWORD}@proxy")
    with pytest.raises(ConfigurationError) as bad:
        HttpTransport()
    assert bad.value.setting == "HTTPS_PROXY"
    assert PASSWORD not in str(bad.value)
    monkeypatch.delenv("HTTPS_PROXY")
    monkeypatch.setenv("SSL_CERT_FILE", "/nonexistent/ca.pem")
    with pytest.raises(ConfigurationError) as no_file:
        HttpTransport()
    assert no_file.value.setting == "SSL_CERT_FILE"


def _from_env(environ: dict[str, str]) -> Emitter:
    return Emitter.from_env({"SEGMENT_WRITE_KEY": KEY, **environ}, handle_sigterm=False)


def test_from_env_reads_the_proxy_and_ca_variables_of_its_mapping_only(
    monkeypatch: pytest.MonkeyPatch, proxy: ForwardProxy, server: LocalSegment
) -> None:
    # The process's own variables would break delivery: the mapping given wins.
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{_dead_port()}")
    monkeypatch.setenv("SSL_CERT_FILE", "/nonexistent/ca.pem")
    with _from_env({"SELLIGENT_SEGMENT_ENDPOINT": server.url}) as emitter:
        emitter.delivered(email="a@example.com", event_id="e1")
        assert emitter.flush(10)
    with _from_env({"SELLIGENT_SEGMENT_ENDPOINT": server.url, "http_proxy": proxy.url}) as em:
        em.delivered(email="a@example.com", event_id="e2")
        assert em.flush(10)
    assert [r.method for r in proxy.requests] == ["POST"]
    bypass = {"http_proxy": proxy.url, "NO_PROXY": f"127.0.0.1:{server.port}"}
    with _from_env({"SELLIGENT_SEGMENT_ENDPOINT": server.url, **bypass}) as em:
        em.delivered(email="a@example.com", event_id="e3")
        assert em.flush(10)
    assert len(proxy.requests) == 1  # NO_PROXY of the mapping: direct
    assert server.accepted_count == 3


def test_from_env_names_a_bad_proxy_or_ca_variable_of_its_mapping() -> None:
    with pytest.raises(ConfigurationError) as bad:
        _from_env({"HTTPS_PROXY": f"ftp://{USER}:{PASSWORD}@proxy"})
    assert bad.value.setting == "HTTPS_PROXY"
    assert PASSWORD not in str(bad.value)
    with pytest.raises(ConfigurationError) as no_file:
        _from_env({"REQUESTS_CA_BUNDLE": "/nonexistent/ca.pem"})
    assert no_file.value.setting == "REQUESTS_CA_BUNDLE"


# -- the rules, as pure functions ---------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "port", "entries", "expected"),
    [
        ("api.segment.io", 443, ("*",), True),
        ("api.segment.io", 443, ("segment.io",), True),
        ("api.segment.io", 443, (".segment.io",), True),
        ("segment.io", 443, (".segment.io",), True),
        ("badsegment.io", 443, ("segment.io",), False),
        ("api.segment.io", 443, ("api.segment.io:443",), True),
        ("api.segment.io", 443, ("api.segment.io:8443",), False),
        ("API.Segment.IO.", 443, ("api.segment.io",), True),
        ("10.1.2.3", 443, ("10.0.0.0/8",), True),
        ("11.1.2.3", 443, ("10.0.0.0/8",), False),
        ("127.0.0.1", 8080, ("127.0.0.1",), True),
        ("::1", 8080, ("::1",), True),
        ("::1", 8080, ("[::1]:8080",), True),
        ("events.eu1.segmentapis.com", 443, ("segment.io", "localhost"), False),
        ("localhost", 80, (), False),
    ],
)
def test_no_proxy_matching(host: str, port: int, entries: tuple[str, ...], expected: bool) -> None:
    assert bypasses(host, port, entries) is expected


def test_environment_routes_follow_requests() -> None:
    env = {"HTTPS_PROXY": "http://upper:3128", "https_proxy": "lower:3128"}
    assert routes(None, env).https == Proxy("http://lower:3128", "https_proxy")
    # set but empty in lower case: no proxy, the upper-case one ignored
    assert routes(None, {"https_proxy": "", "HTTPS_PROXY": "http://upper:3128"}).https is None
    # ALL_PROXY for either scheme
    both = routes(None, {"ALL_PROXY": "http://all:8080"})
    assert both.http == both.https == Proxy("http://all:8080", "ALL_PROXY")
    # httpoxy: a CGI request's Proxy header becomes HTTP_PROXY; it is ignored
    assert routes(None, {"REQUEST_METHOD": "GET", "HTTP_PROXY": "http://evil:1"}).http is None
    assert routes(None, {}) == ProxyRoutes()
    assert routes(None, {}).describe() == "direct"
    spaced = routes(None, {"HTTP_PROXY": "http://p:1", "no_proxy": " a.com , .b.com,,"})
    assert spaced.no_proxy == ("a.com", ".b.com")
    assert spaced.for_url("http://x.b.com/") is None
    assert spaced.for_url("http://x.c.com/") == parse_proxy("http://p:1", "HTTP_PROXY")


def test_a_loopback_endpoint_never_goes_through_a_proxy_elsewhere() -> None:
    """Found by a review: with ``HTTP_PROXY`` set, a plain ``http://127.0.0.1`` endpoint
    (allowed because loopback traffic never leaves the machine) went to the proxy in
    clear, write key and events, and the proxy reached its own 127.0.0.1. A loopback
    endpoint takes an environment proxy only when that proxy is on loopback too; a
    ``proxy`` setting still decides."""
    corporate = routes(
        None, {"HTTP_PROXY": "http://proxy.corp:3128", "HTTPS_PROXY": "http://proxy.corp:3128"}
    )
    for url in ("http://127.0.0.1:8080/v1/batch", "http://localhost:1/", "https://[::1]:8443/"):
        assert corporate.for_url(url) is None, url
    assert corporate.for_url("https://api.segment.io/v1/batch") is not None
    local = routes(None, {"HTTP_PROXY": "http://127.0.0.1:3128"})
    assert local.for_url("http://127.0.0.1:8080/") == parse_proxy(
        "http://127.0.0.1:3128", "HTTP_PROXY"
    )
    explicit = routes("http://proxy.corp:3128", {})
    assert explicit.for_url("http://127.0.0.1:8080/") is not None


def test_an_empty_lowercase_no_proxy_falls_back_to_no_proxy_as_requests_does() -> None:
    """Found by a review: ``no_proxy=""`` hid ``NO_PROXY``, where ``requests`` and curl
    read the upper-case one, so traffic meant to go direct went through the proxy."""
    env = {"HTTPS_PROXY": "http://proxy.corp:3128", "no_proxy": "", "NO_PROXY": "api.segment.io"}
    assert routes(None, env).for_url("https://api.segment.io/v1/batch") is None


def test_parse_proxy() -> None:
    proxy = parse_proxy(f"https://{USER}:p%40ss@[::1]", "proxy")
    assert proxy.url == "https://[::1]:443"
    token = base64.b64encode(f"{USER}:p@ss".encode()).decode()
    assert proxy.headers == {"Proxy-Authorization": f"Basic {token}"}
    assert proxy.credentials == (token,)
    assert token not in repr(proxy)
    assert parse_proxy("proxy.internal", "proxy").url == "http://proxy.internal:80"
    for bad, reason in [
        ("socks5h://h:1080", "SOCKS"),
        ("http://", "host"),
        (f"http://{USER}:{PASSWORD}@h:1/path", "only"),
        (f"http://{USER}:{PASSWORD}@h:99999", "not a valid URL"),
        ("http://h :1", "whitespace"),
    ]:
        with pytest.raises(ConfigurationError, match=reason) as info:
            parse_proxy(bad, "proxy")
        assert PASSWORD not in str(info.value)
    with pytest.raises(ConfigurationError, match="expected a proxy URL"):
        routes(True)


def test_ca_bundle_order(tmp_path: Path) -> None:
    first, second = tmp_path / "a.pem", tmp_path / "b.pem"
    first.write_text("x")
    second.write_text("y")
    env = {"SSL_CERT_FILE": str(first), "REQUESTS_CA_BUNDLE": str(second)}
    assert ca_bundle(None, env) == str(first)
    assert ca_bundle(None, {"REQUESTS_CA_BUNDLE": str(second)}) == str(second)
    assert ca_bundle(second, env) == str(second)
    assert ca_bundle(None, {}) is None
    with pytest.raises(ConfigurationError) as directory:
        ca_bundle(tmp_path, env)
    assert directory.value.setting == "ca_bundle"


@pytest.mark.slow
def test_the_cli_proxy_and_ca_bundle_options(
    monkeypatch: pytest.MonkeyPatch, proxy: ForwardProxy, server: LocalSegment, tmp_path: Path
) -> None:
    from test_cli_send import rec, run, write

    data = write(tmp_path / "in.jsonl", rec(1, "acme"))
    sent = run(data, "--write-key", KEY, "--endpoint", server.url, "--proxy", proxy.url)
    assert sent.returncode == 0, sent.stderr
    assert [r.method for r in proxy.requests] == ["POST"]
    # direct: the environment's (dead) proxy is not used
    dead = {"HTTP_PROXY": f"http://127.0.0.1:{_dead_port()}"}
    direct = run(data, "--write-key", KEY, "--endpoint", server.url, "--proxy", "direct", env=dead)
    assert direct.returncode == 0, direct.stderr
    assert server.request_count == 2
    missing = run(
        data, "--write-key", KEY, "--endpoint", server.url, "--ca-bundle", str(tmp_path / "x")
    )
    assert missing.returncode == 2
    assert "ca_bundle" in missing.stderr
    assert "not a file" in missing.stderr
