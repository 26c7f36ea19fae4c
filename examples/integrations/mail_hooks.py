"""The mail platform's hooks: the one factory and the hook functions that every framework
integration in this folder uses (``docs/integrations.md``).

- :func:`make_emitter` is the one place an :class:`Emitter` is built in production: from
  the environment (``SEGMENT_WRITE_KEY`` or ``SELLIGENT_SEGMENT_WRITE_KEYS``,
  ``SELLIGENT_SEGMENT_ENDPOINT``, ``SELLIGENT_SEGMENT_SPOOL``...). Each app calls it once
  at start-up (per worker process in a prefork server) and closes the emitter at shutdown.
- The hooks take the emitter as their first argument (dependency injection): a test hands
  them an emitter pointed at ``LocalSegment``, or sets the environment and lets
  :func:`make_emitter` build it.
- :func:`answer` is what a web view does with one callback: run the hook and say which HTTP
  status and JSON body to answer, so every framework's view is three lines.

The payload shapes (``account``, ``recipient``, ``id``, ``dsn``...) are a made-up platform's;
yours will differ, the calls will not.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from selligent_segment import Emitter, EmitterClosed, InvalidEvent, SpoolFull, UnknownTenant

Payload = Mapping[str, Any]


def make_emitter() -> Emitter:
    """The one factory: production reads the environment."""
    return Emitter.from_env()


def on_bounce(emitter: Emitter, bounce: Payload) -> None:
    """The MTA reports a bounce (a synchronous refusal or an asynchronous DSN)."""
    dsn = str(bounce["dsn"])  # "5.1.1": 5.x.x is permanent (hard), 4.x.x transient (soft)
    emitter.bounced(
        tenant=bounce["account"],
        email=bounce["recipient"],
        event_id=bounce["id"],  # the platform's own id: a replayed hook is sent once
        timestamp=bounce.get("at"),
        bounce_type="hard" if dsn.startswith("5") else "soft",
        smtp_status=dsn,
        bounce_reason=bounce.get("diagnostic"),
    )


def on_unsubscribe(emitter: Emitter, unsubscribe: Payload) -> None:
    """The unsubscribe link, List-Unsubscribe or the preference centre."""
    emitter.unsubscribed(
        tenant=unsubscribe["account"],
        email=unsubscribe["recipient"],
        event_id=unsubscribe["id"],
        timestamp=unsubscribe.get("at"),
        list_id=unsubscribe.get("list"),
    )


#: The hooks a web endpoint or a task queue can call, by name.
HOOKS: dict[str, Callable[[Emitter, Payload], None]] = {
    "bounce": on_bounce,
    "unsubscribe": on_unsubscribe,
}


class Answer(NamedTuple):
    """What a web view answers to one callback."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str]


def answer(emitter: Emitter, hook: str, payload: object) -> Answer:
    """Run ``hook`` with ``payload`` and say what to answer: ``202`` once the event is
    accepted, ``400`` naming the field for a callback that would fail again (the platform
    must not retry it), ``404`` for an unknown hook, ``503`` with ``Retry-After`` when the
    emitter is full or stopping, or the tenant has no write key yet (the platform retries
    later). Never an email address or a
    write key in the body."""
    call = HOOKS.get(hook)
    if call is None:
        return Answer(404, {"error": "no such hook"}, {})
    if not isinstance(payload, Mapping):
        return Answer(400, {"error": {"field": None, "reason": "not a JSON object"}}, {})
    try:
        call(emitter, payload)
    except KeyError as exc:
        return Answer(400, {"error": {"field": str(exc.args[0]), "reason": "missing"}}, {})
    except InvalidEvent as exc:
        return Answer(400, {"error": {"field": exc.field, "reason": exc.reason}}, {})
    except UnknownTenant:  # a configuration gap, not a bad callback: keep it coming back
        return Answer(503, {"error": "no write key for this tenant yet"}, {"Retry-After": "60"})
    except (SpoolFull, EmitterClosed):
        return Answer(503, {"error": "busy: retry later"}, {"Retry-After": "5"})
    return Answer(202, {"accepted": True}, {})
