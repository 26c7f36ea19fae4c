"""FastAPI: the lifespan builds the one emitter and closes it; views get it by ``Depends``.

- ``create_app()`` makes the app; its lifespan builds the emitter at start-up (the one
  given, a test's, or ``make_emitter()`` from the environment) and ``aclose``-s it at
  shutdown, so uvicorn's graceful stop (SIGTERM, Ctrl-C) flushes what was accepted.
- Views ask for it with ``Depends(get_emitter)``: a test may replace it with
  ``app.dependency_overrides[get_emitter] = ...``.
- ``emit`` never waits on the network, so an ``async def`` view calls it directly, on the
  event loop.

Run it: ``SEGMENT_WRITE_KEY=... uvicorn --factory fastapi_app:create_app``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Body, Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from mail_hooks import answer, make_emitter

from selligent_segment import Emitter

CLOSE_TIMEOUT = 10.0  # seconds the shutdown may spend delivering what is still queued


def get_emitter(request: Request) -> Emitter:
    """The app's emitter, for ``Depends``."""
    emitter: Emitter = request.app.state.emitter
    return emitter


async def hook(
    name: str,
    payload: Annotated[Any, Body()],
    emitter: Annotated[Emitter, Depends(get_emitter)],
) -> JSONResponse:
    """The platform's webhook: ``POST /hooks/bounce`` with the callback as JSON."""
    status, body, headers = answer(emitter, name, payload)
    return JSONResponse(body, status_code=status, headers=headers)


def create_app(emitter: Emitter | None = None) -> FastAPI:
    """The app; its lifespan owns ``emitter`` (a test's) or the one ``make_emitter()``
    builds at start-up, and closes it at shutdown."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.emitter = emitter or make_emitter()
        try:
            yield
        finally:
            await app.state.emitter.aclose(CLOSE_TIMEOUT)

    app = FastAPI(lifespan=lifespan)
    app.add_api_route("/hooks/{name}", hook, methods=["POST"])
    return app
