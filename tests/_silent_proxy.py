"""A loopback TCP proxy that can go silent, as a network cut that drops packets does (a
firewall, a NAT timeout, a failover): no FIN, no RST, nothing forwarded either way."""

from __future__ import annotations

import contextlib
import socket
import threading
import urllib.parse


class SilentProxy:
    """Forwards ``url``'s host and port on a loopback port of its own (:attr:`url` is
    ``url`` pointed at it) until :meth:`go_silent`; :meth:`close` shuts everything."""

    def __init__(self, url: str) -> None:
        parts = urllib.parse.urlsplit(url)
        self._target = (parts.hostname or "127.0.0.1", parts.port or 5432)
        self._silent = threading.Event()
        self._sockets: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        port = self._listener.getsockname()[1]
        self.url = url.replace(f":{parts.port}/", f":{port}/", 1)
        threading.Thread(target=self._accept, daemon=True).start()

    def go_silent(self) -> None:
        """From now on nothing is forwarded and no new connection is answered."""
        self._silent.set()

    def close(self) -> None:
        self._silent.set()
        for sock in [self._listener, *self._sockets]:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self._sockets.append(client)
            if self._silent.is_set():
                continue  # accepted, never answered
            server = socket.create_connection(self._target)
            self._sockets.append(server)
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if not self._silent.is_set():
                    sink.sendall(data)
