"""Celery: the hooks as tasks; one emitter per worker process, built after the fork.

- The web tier only enqueues (``bounce.delay(payload)``); the worker's pool processes run
  the hooks. Each pool process builds its emitter on ``worker_process_init`` (after the
  fork: the parent's threads do not survive it) and closes it on
  ``worker_process_shutdown``: pool processes end with ``os._exit``, which skips the
  interpreter's exit hooks, so this is the only place the emitter is flushed.
- A callback the emitter cannot take now (``SpoolFull``, ``EmitterClosed``) is retried by
  Celery; an invalid one (``InvalidEvent``) fails the task and is not retried.
- ``use_emitter()`` hands the tasks an emitter directly, for ``task_always_eager`` tests.

The broker is ``CELERY_BROKER_URL``; unset, kombu's ``filesystem://`` transport in
``CELERY_QUEUE_DIR`` (a directory any process on the machine can share: no broker server).
Run it: ``celery -A celery_app worker``.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery
from celery.signals import worker_process_init, worker_process_shutdown
from mail_hooks import Payload, make_emitter, on_bounce, on_unsubscribe

from selligent_segment import Emitter, EmitterClosed, SpoolFull

# Seconds a stopping pool process spends delivering what it accepted.
CLOSE_TIMEOUT = float(os.environ.get("EMITTER_CLOSE_TIMEOUT", "10"))


def _broker_options() -> dict[str, Any]:
    queue = os.environ.get("CELERY_QUEUE_DIR", "/tmp/celery-queue")
    os.makedirs(queue, exist_ok=True)
    # One folder both ways: the producers write the messages there, the workers take them;
    # the exchange tables beside them (kombu's default is ./control, in the working directory).
    control = os.path.join(queue, "control")
    os.makedirs(control, exist_ok=True)
    return {
        "data_folder_in": queue,
        "data_folder_out": queue,
        "control_folder": control,
        "polling_interval": 0.2,
    }


app = Celery("mail_hooks")
app.conf.update(
    broker_url=os.environ.get("CELERY_BROKER_URL", "filesystem://"),
    broker_transport_options=_broker_options(),
    task_acks_late=True,  # a task whose process dies is run again: the event_id dedups it
    worker_hijack_root_logger=False,
)

_emitter: Emitter | None = None


def use_emitter(emitter: Emitter | None) -> None:
    """Give this process's tasks ``emitter`` (None: forget it)."""
    global _emitter
    _emitter = emitter


def emitter() -> Emitter:
    """This process's emitter."""
    if _emitter is None:
        raise RuntimeError("no emitter in this process: worker_process_init builds it")
    return _emitter


@worker_process_init.connect
def _build_emitter(**_: Any) -> None:
    use_emitter(make_emitter())


@worker_process_shutdown.connect
def _close_emitter(**_: Any) -> None:
    if _emitter is not None:
        _emitter.close(CLOSE_TIMEOUT)


@app.task(autoretry_for=(SpoolFull, EmitterClosed), retry_backoff=True, max_retries=None)
def bounce(payload: Payload) -> None:
    on_bounce(emitter(), payload)


@app.task(autoretry_for=(SpoolFull, EmitterClosed), retry_backoff=True, max_retries=None)
def unsubscribe(payload: Payload) -> None:
    on_unsubscribe(emitter(), payload)
