"""A forwarding HTTP proxy on loopback that records what went through it.

:class:`ForwardProxy` does what a corporate egress proxy does, for tests of proxy
settings: ``CONNECT host:port`` opens a byte tunnel (how ``https://`` endpoints are
reached: the proxy sees the target, never the request), and a request with an absolute
URI (``POST http://host:port/v1/batch``) is forwarded and its answer relayed. With
``credentials`` it demands ``Proxy-Authorization: Basic`` and answers ``407`` otherwise.

Guarantees: only loopback targets are reached (any other is answered ``403``), so a
test never leaves the machine; every request is recorded before it is answered or
tunnelled; over TLS each connection's handshake is made on its own thread, within
:data:`HANDSHAKE_TIMEOUT`, so a silent client holds up no other; :meth:`ForwardProxy.stop`
closes every open connection and tunnel; nothing is logged, and the
``Proxy-Authorization`` a request carried is out of every repr.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import select
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import attrs

from selligent_segment._context import StartedOnEnter
from selligent_segment.delivery._endpoint import is_loopback_host
from selligent_segment.testing._server import ConnectionTracker

__all__ = ["ForwardProxy", "ProxiedRequest"]

# Headers meant for the proxy or for one connection only: never forwarded.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authorization",
        "proxy-authenticate",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
_RELAY_CHUNK = 64 * 1024
#: Seconds a client of a TLS proxy has to complete its handshake.
HANDSHAKE_TIMEOUT = 10.0


@attrs.frozen
class ProxiedRequest:
    """One request the proxy received: ``method`` (``CONNECT``, ``POST``...), ``target``
    (``host:port`` for CONNECT, else the absolute URI), the ``Proxy-Authorization`` it
    carried (None: none; out of the repr), and the ``status`` the proxy answered itself
    (``200`` for an opened tunnel, ``407``, ``403``, ``502``) or relayed."""

    method: str
    target: str
    proxy_authorization: str | None = attrs.field(repr=False)
    status: int


class ForwardProxy(StartedOnEnter):
    """A threaded forwarding proxy on ``127.0.0.1``; a context manager that starts it.

    ``url`` is ``http://127.0.0.1:PORT``, to give as a ``proxy`` setting or
    ``HTTPS_PROXY``; ``requests`` lists what went through, in arrival order, and
    ``connections`` counts the client connections it accepted. With
    ``credentials=(user, password)`` a request without the matching
    ``Proxy-Authorization`` is answered ``407 Proxy Authentication Required``; with
    ``tls`` (a server-side ``ssl.SSLContext``) clients reach the proxy itself over TLS
    (an ``https://`` proxy URL).
    """

    def __init__(
        self, *, credentials: tuple[str, str] | None = None, tls: ssl.SSLContext | None = None
    ) -> None:
        self._tls = tls
        self._expected: str | None = None
        if credentials is not None:
            token = base64.b64encode(":".join(credentials).encode("utf-8")).decode("ascii")
            self._expected = f"Basic {token}"
        self._lock = threading.Lock()
        self._requests: list[ProxiedRequest] = []
        self._connections = 0
        self._server: _ProxyServer | None = None
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        state = self.url if self._server is not None else "stopped"
        return f"<ForwardProxy {state}, {len(self.requests)} requests>"

    def start(self) -> ForwardProxy:
        """Bind a free loopback port and serve in a daemon thread."""
        if self._server is None:
            self._server = _ProxyServer(self)
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                args=(0.05,),
                name="selligent-segment-forward-proxy",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close every connection and tunnel (idempotent)."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.close_connections()
        server.server_close()
        if self._thread is not None:
            self._thread.join(5)

    @property
    def port(self) -> int:
        """The bound port (the proxy must be started)."""
        if self._server is None:
            raise RuntimeError("the proxy is not started")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (``https://`` when served over TLS)."""
        scheme = "https" if self._tls is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    @property
    def requests(self) -> list[ProxiedRequest]:
        """What went through so far, in arrival order (a copy)."""
        with self._lock:
            return list(self._requests)

    @property
    def connections(self) -> int:
        """Client connections accepted so far (a keep-alive client reuses one)."""
        with self._lock:
            return self._connections

    def _connected(self) -> None:
        with self._lock:
            self._connections += 1

    def _record(self, method: str, target: str, auth: str | None, status: int) -> None:
        with self._lock:
            self._requests.append(ProxiedRequest(method, target, auth, status))

    def _allowed(self, auth: str | None) -> bool:
        return self._expected is None or auth == self._expected


class _ProxyServer(ConnectionTracker, ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, owner: ForwardProxy) -> None:
        self.owner = owner
        super().__init__(("127.0.0.1", 0), _ProxyHandler)

    def process_request(self, request: Any, client_address: Any) -> None:
        self.track(request)
        self.owner._connected()
        super().process_request(request, client_address)

    def finish_request(self, request: Any, client_address: Any) -> None:
        """Serve one connection, on its own thread; over TLS the handshake is made here
        (never on the serving thread, where a silent client would hold every other and
        ``stop()``), within :data:`HANDSHAKE_TIMEOUT` seconds."""
        tls = self.owner._tls
        if tls is None:
            super().finish_request(request, client_address)
            return
        request.settimeout(HANDSHAKE_TIMEOUT)
        secured = tls.wrap_socket(request, server_side=True, do_handshake_on_connect=False)
        # wrap_socket took the descriptor from ``request``: stop() must shut ``secured``.
        self.track(secured)
        self.untrack(request)
        try:
            secured.do_handshake()
            secured.settimeout(None)
            super().finish_request(secured, client_address)
        finally:
            self.untrack(secured)
            with contextlib.suppress(OSError):
                secured.shutdown(socket.SHUT_WR)
            secured.close()

    def shutdown_request(self, request: Any) -> None:
        self.untrack(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client gone or a tunnel shut at stop is expected here


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _ProxyServer

    def log_message(self, format: str, *args: Any) -> None:
        pass  # nothing is logged: no header reaches a log

    def _refuse(self, status: int, reason: str, extra: dict[str, str] | None = None) -> None:
        body = reason.encode()
        self.send_response(status)
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _admit(self, target_host: str) -> int:
        """200 to go on, else the status to answer (407, 403)."""
        if not self.server.owner._allowed(self.headers.get("Proxy-Authorization")):
            return 407
        return 200 if is_loopback_host(target_host) else 403

    def _deny(self, status: int) -> None:
        if status == 407:
            self._refuse(
                407,
                "proxy authentication required",
                {"Proxy-Authenticate": 'Basic realm="selligent-segment test proxy"'},
            )
        elif status == 403:
            self._refuse(403, "this test proxy reaches loopback hosts only")
        else:
            self._refuse(400, "CONNECT needs host:port")

    def do_CONNECT(self) -> None:
        owner = self.server.owner
        auth = self.headers.get("Proxy-Authorization")
        host, _, port_text = self.path.rpartition(":")
        host = host.strip("[]")
        status = self._admit(host) if port_text.isdigit() else 400
        if status != 200:
            owner._record("CONNECT", self.path, auth, status)
            self._deny(status)
            return
        try:
            upstream = socket.create_connection((host, int(port_text)), timeout=5)
        except OSError:
            owner._record("CONNECT", self.path, auth, 502)
            self._refuse(502, "cannot reach the target")
            return
        owner._record("CONNECT", self.path, auth, 200)
        self.send_response(200, "Connection established")
        self.end_headers()
        self.server.track(upstream)
        try:
            _relay(self.connection, upstream)
        finally:
            self.server.untrack(upstream)
            upstream.close()
            self.close_connection = True

    def _forward(self) -> None:
        owner = self.server.owner
        auth = self.headers.get("Proxy-Authorization")
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if parts.scheme != "http" or not parts.hostname:
            owner._record(self.command, self.path, auth, 400)
            self._refuse(400, "expected an absolute http:// URI")
            return
        status = self._admit(parts.hostname)
        if status != 200:
            owner._record(self.command, self.path, auth, status)
            self._deny(status)
            return
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        upstream = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=30)
        try:
            upstream.request(self.command, path or "/", body=body, headers=headers)
            answer = upstream.getresponse()
            data = answer.read()
        except (OSError, http.client.HTTPException):
            owner._record(self.command, self.path, auth, 502)
            self._refuse(502, "the target did not answer")
            return
        finally:
            upstream.close()
        owner._record(self.command, self.path, auth, answer.status)
        self.send_response(answer.status, answer.reason)
        for name, value in answer.getheaders():
            if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length":
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _forward


def _relay(client: socket.socket, upstream: socket.socket) -> None:
    """Copy bytes both ways until either side closes (or the proxy stops)."""
    sockets = [client, upstream]
    while True:
        readable, _, broken = select.select(sockets, [], sockets, 1.0)
        if broken:
            return
        for sock in readable:
            try:
                data = sock.recv(_RELAY_CHUNK)
            except OSError:
                return
            if not data:
                return
            other = upstream if sock is client else client
            try:
                other.sendall(data)
            except OSError:
                return
