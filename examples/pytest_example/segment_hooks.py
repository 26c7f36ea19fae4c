"""The integration under test: the one factory, and the mail platform's hooks turned into
Emitter calls.

This is the code *you* write, in the shape every page of the documentation uses:

- :func:`make_emitter` is the one place an :class:`Emitter` is built: production reads the
  environment (``SELLIGENT_SEGMENT_WRITE_KEYS=keys.json``, ``SELLIGENT_SEGMENT_SPOOL``...:
  docs/hooks.md). The application calls it once at start-up and closes the emitter at
  shutdown.
- Each hook takes the emitter as its first argument (dependency injection), so a test
  hands it one pointed at a local Segment stand-in.

The payload shapes (``account``, ``recipient``, ``id``...) are a made-up platform's; the
tests next to this file check, against ``LocalSegment``, what reaches Segment.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from selligent_segment import DeliveryFailure, Emitter

Payload = Mapping[str, Any]
log = logging.getLogger("segment_hooks")


def report_failure(failure: DeliveryFailure) -> None:
    """Events Segment refused for good, or given up after the retry budget."""
    log.error(
        "Segment: %d events of %s not delivered: %s",
        len(failure.message_ids),
        failure.tenant,
        failure.reason,
    )


def make_emitter(**overrides: Any) -> Emitter:
    """The one factory: production reads the environment; ``overrides`` (a test's fast
    retry policy, say) win over it."""
    return Emitter.from_env(on_failure=report_failure, **overrides)


def on_delivery(emitter: Emitter, delivery: Payload) -> None:
    """The MTA accepted the message."""
    emitter.delivered(
        tenant=delivery["account"],
        email=delivery["recipient"],
        user_id=delivery.get("contact_id"),
        event_id=delivery["id"],
        timestamp=delivery["at"],
        email_id=delivery.get("message_id"),
        campaign_id=delivery.get("campaign"),
    )


def on_bounce(emitter: Emitter, bounce: Payload) -> None:
    """The MTA reports a bounce (a synchronous refusal or an asynchronous DSN)."""
    dsn = str(bounce["dsn"])  # e.g. "5.1.1": 5.x.x is permanent, 4.x.x transient
    emitter.bounced(
        tenant=bounce["account"],
        email=bounce["recipient"],
        event_id=bounce["id"],  # the platform's own id: a replayed hook is sent once
        timestamp=bounce["at"],
        bounce_type="hard" if dsn.startswith("5") else "soft",
        smtp_status=dsn,
        bounce_reason=bounce.get("diagnostic"),
    )


def on_click(emitter: Emitter, click: Payload) -> None:
    """The link redirector."""
    emitter.link_clicked(
        tenant=click["account"],
        email=click["recipient"],
        event_id=click["id"],
        timestamp=click["at"],
        link_url=click["url"],
        ip=click.get("ip"),
        user_agent=click.get("ua"),
    )


def on_unsubscribe(emitter: Emitter, unsubscribe: Payload) -> None:
    """The unsubscribe link, List-Unsubscribe or the preference centre."""
    emitter.unsubscribed(
        tenant=unsubscribe["account"],
        email=unsubscribe["recipient"],
        user_id=unsubscribe.get("contact_id"),
        event_id=unsubscribe["id"],
        timestamp=unsubscribe["at"],
        list_id=unsubscribe.get("list"),
    )
