"""Django: a one-file project (settings in code), the emitter built in ``AppConfig.ready()``.

- ``create_app()`` configures Django with ``SETTINGS`` and returns the WSGI application;
  setting Django up runs ``MailHooksConfig.ready()``, which builds the one emitter: the one
  given (a test's), or ``make_emitter()`` from the environment. Django is set up once per
  process, so ``create_app`` may be called once.
- The view finds the emitter on its app config (``emitter()``).
- Django has no shutdown hook. The emitter is closed by the library's own exit hook at
  interpreter exit and on SIGTERM (bounded by ``exit_timeout``); under gunicorn close it in
  ``worker_exit`` as ``gunicorn.conf.py`` does for Flask.

Serve it with any WSGI server: ``gunicorn 'django_app:create_app()'``.
"""

from __future__ import annotations

import json
import os
from typing import Any, ClassVar

from django.apps import AppConfig, apps
from django.conf import settings
from django.core.handlers.wsgi import WSGIHandler
from django.core.wsgi import get_wsgi_application
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path
from django.views.decorators.http import require_POST
from mail_hooks import answer, make_emitter

from selligent_segment import Emitter

SETTINGS: dict[str, Any] = {
    "DEBUG": False,
    "SECRET_KEY": os.environ.get("DJANGO_SECRET_KEY", "not-a-secret: no sessions, no forms"),
    "ALLOWED_HOSTS": ["127.0.0.1", "localhost", "testserver"],
    "ROOT_URLCONF": __name__,
    "INSTALLED_APPS": [f"{__name__}.MailHooksConfig"],
    "MIDDLEWARE": [],  # a machine-to-machine webhook: no sessions, no CSRF token
    "DATABASES": {},
}


class MailHooksConfig(AppConfig):
    name = __name__
    label = "mail_hooks"
    given: ClassVar[Emitter | None] = None  # set by create_app(emitter) before set-up
    emitter: Emitter

    def ready(self) -> None:
        self.emitter = self.given or make_emitter()


def emitter() -> Emitter:
    """The emitter built at set-up."""
    config = apps.get_app_config("mail_hooks")
    assert isinstance(config, MailHooksConfig)
    return config.emitter


@require_POST
def hook(request: HttpRequest, name: str) -> HttpResponse:
    """The platform's webhook: ``POST /hooks/bounce`` with the callback as JSON."""
    try:
        payload = json.loads(request.body)
    except ValueError:
        payload = None
    status, body, headers = answer(emitter(), name, payload)
    return JsonResponse(body, status=status, headers=headers)


urlpatterns = [path("hooks/<str:name>", hook)]


def create_app(emitter: Emitter | None = None) -> WSGIHandler:
    """Set Django up (once per process) and return the WSGI application."""
    if apps.ready:
        raise RuntimeError("Django is set up already: create_app runs once per process")
    MailHooksConfig.given = emitter
    if not settings.configured:
        settings.configure(**SETTINGS)
    return get_wsgi_application()
