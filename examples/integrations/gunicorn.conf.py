"""gunicorn: the Flask app of ``flask_app.py`` in prefork workers, one emitter per worker.

``gunicorn -c gunicorn.conf.py`` (from this folder) with the environment ``make_emitter``
reads. The app is imported once, in the master (``preload_app``), but its emitter is built
in each worker, in ``post_fork``, never before the fork:

- a fork copies only the thread that calls it: an emitter made in the master would have
  no encoder or sender threads in the worker, and the library would have to rebuild it
  there (it does, starting empty, so nothing is sent twice);
- with a spool file (``SELLIGENT_SEGMENT_SPOOL``) an emitter opens its process's journal,
  takes the journal's ``flock`` and starts its threads when it is made: made in the
  master, the master would hold a journal, a lock and threads it never uses, and every
  worker would first have to let go of what it inherited. Made in the worker, each one
  owns its journal and its lock from the start, and the workers share the one spool file
  safely (a dead worker's journal is found by its free lock and replayed).

Shutdown: on SIGTERM the master asks each worker to stop; a worker finishes its requests,
then ``worker_exit`` flushes and closes its emitter (within ``graceful_timeout``). With the
memory spool what is still undelivered after ``EMITTER_CLOSE_TIMEOUT`` is reported
``unsent_at_close``; with a spool file it stays in the file, and the next worker (or
``selligent-segment flush``) delivers it.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import flask_app
from mail_hooks import make_emitter

if TYPE_CHECKING:
    from gunicorn.arbiter import Arbiter
    from gunicorn.workers.base import Worker

wsgi_app = "flask_app:build_app()"
preload_app = True
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
bind = [os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")]
graceful_timeout = 30
# Under graceful_timeout: the master kills a worker still running after it.
EMITTER_CLOSE_TIMEOUT = float(os.environ.get("EMITTER_CLOSE_TIMEOUT", "20"))


def post_fork(server: Arbiter, worker: Worker) -> None:
    """In the new worker, before it serves: its own emitter, on the app the master loaded."""
    flask_app.attach_emitter(server.app.wsgi(), make_emitter())


def worker_exit(server: Arbiter, worker: Worker) -> None:
    """In the worker, once it has stopped serving: deliver what it accepted, then close."""
    app = getattr(worker, "wsgi", None)  # None when the worker failed before loading it
    if app is not None:
        flask_app.close_emitter(app, EMITTER_CLOSE_TIMEOUT)
