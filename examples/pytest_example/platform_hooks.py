"""The integration under test: the mail platform's hook payloads turned into Emitter calls.

This is the code *you* write (the payload shapes here are a made-up platform's); the
tests next to it check, against a local Segment stand-in, what reaches Segment.
"""

from __future__ import annotations

from typing import Any

from selligent_segment import Emitter


def on_delivery(emitter: Emitter, payload: dict[str, Any]) -> None:
    emitter.delivered(
        tenant=payload["account"],
        email=payload["recipient"],
        user_id=payload.get("contact_id"),
        event_id=payload["id"],
        timestamp=payload["at"],
        email_id=payload.get("message_id"),
        campaign_id=payload.get("campaign"),
    )


def on_bounce(emitter: Emitter, payload: dict[str, Any]) -> None:
    dsn = str(payload["dsn"])  # e.g. "5.1.1": 5.x.x is permanent, 4.x.x transient
    emitter.bounced(
        tenant=payload["account"],
        email=payload["recipient"],
        event_id=payload["id"],
        timestamp=payload["at"],
        bounce_type="hard" if dsn.startswith("5") else "soft",
        smtp_status=dsn,
        bounce_reason=payload.get("diagnostic"),
    )


def on_click(emitter: Emitter, payload: dict[str, Any]) -> None:
    emitter.link_clicked(
        tenant=payload["account"],
        email=payload["recipient"],
        event_id=payload["id"],
        timestamp=payload["at"],
        link_url=payload["url"],
        ip=payload.get("ip"),
        user_agent=payload.get("ua"),
    )


def on_unsubscribe(emitter: Emitter, payload: dict[str, Any]) -> None:
    emitter.unsubscribed(
        tenant=payload["account"],
        email=payload["recipient"],
        user_id=payload.get("contact_id"),
        event_id=payload["id"],
        timestamp=payload["at"],
        list_id=payload.get("list"),
    )
