"""Serve an ASGI application on loopback from a background thread, for tests and demos:
``with serve_asgi(app) as url: ...``.

The listening socket is bound and listening before the context is entered, so a request sent
at once waits in the kernel's backlog instead of failing: no polling for readiness. Needs
``uvicorn`` (the ``server`` extra, and the ``test`` extra).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

from selligent_segment._asgi import ASGIApp

__all__ = ["serve_asgi"]


@contextlib.contextmanager
def serve_asgi(app: ASGIApp, *, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Run ``app`` under uvicorn on ``host:port`` (``0``: any free port) until the block
    ends; yields the base URL, ``http://host:port``. The server is stopped and its thread
    joined on exit, open connections closed."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="serve-asgi", daemon=True
    )
    thread.start()
    try:
        yield f"http://{host}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join()
        sock.close()
