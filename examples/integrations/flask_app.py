"""Flask: an app factory with the emitter stored on ``app.extensions``.

- ``create_app()`` builds the app and its one emitter (``make_emitter()``, from the
  environment); a test passes its own: ``create_app(Emitter(..., endpoint=segment.url))``.
- ``build_app()`` and ``attach_emitter()`` are the two halves, for a prefork server that
  must build the emitter in each worker after the fork (``gunicorn.conf.py``).
- Flask has no shutdown hook. The emitter is closed by the library's own exit hook at
  interpreter exit and on SIGTERM (bounded by ``exit_timeout``); a server with a hook of
  its own closes it there (``close_emitter``, as gunicorn's ``worker_exit`` does).

Run it alone: ``SEGMENT_WRITE_KEY=... flask --app flask_app:create_app run``.
"""

from __future__ import annotations

from flask import Blueprint, Flask, current_app, jsonify, request
from flask.typing import ResponseReturnValue
from mail_hooks import answer, make_emitter

from selligent_segment import Emitter

EXTENSION = "selligent_segment"

hooks = Blueprint("hooks", __name__)


def build_app() -> Flask:
    """The app without its emitter: attach one before it serves a request."""
    app = Flask(__name__)
    app.register_blueprint(hooks)
    return app


def attach_emitter(app: Flask, emitter: Emitter) -> Flask:
    """Give ``app`` the emitter its views use."""
    app.extensions[EXTENSION] = emitter
    return app


def create_app(emitter: Emitter | None = None) -> Flask:
    """The app and its one emitter: ``emitter`` when given (a test's), else built by the
    factory from the environment."""
    return attach_emitter(build_app(), emitter or make_emitter())


def emitter_of(app: Flask) -> Emitter:
    """The emitter ``app``'s views use."""
    emitter: Emitter = app.extensions[EXTENSION]
    return emitter


def close_emitter(app: Flask, timeout: float = 10.0) -> bool:
    """Flush and close ``app``'s emitter; True when everything accepted was delivered."""
    return emitter_of(app).close(timeout)


@hooks.post("/hooks/<name>")
def hook(name: str) -> ResponseReturnValue:
    """The platform's webhook: ``POST /hooks/bounce`` with the callback as JSON."""
    payload = request.get_json(silent=True)
    status, body, headers = answer(emitter_of(current_app), name, payload)
    return jsonify(body), status, headers
