"""The platform's own tracking endpoints: an open pixel, a click redirect and RFC 8058
one-click unsubscribe, as one ASGI application (:class:`TrackingApp`), with
:class:`TrackingLinks` to build the signed links (and the ``List-Unsubscribe`` headers)
of outgoing mail. See ``docs/inputs.md``, "Tracking endpoints".

Guarantees: links are HMAC-SHA256-signed (:class:`TrackingKeys`, several keys accepted,
one signing) and a tampered, expired or unknown-key link is refused with ``404``; a click
only ever redirects to the ``http``/``https`` URL sealed in its link; a ``GET`` never
unsubscribes; an unsubscribe is answered ``200`` only once the Emitter accepted it; hits
by machines are sent flagged (``machine_open`` / ``scanner``, :class:`ScannerRules`).
"""

from __future__ import annotations

from selligent_segment.inputs.tracking._app import PIXEL, Accepts, TrackingApp
from selligent_segment.inputs.tracking._links import ONE_CLICK, TrackingLinks
from selligent_segment.inputs.tracking._scanners import DEFAULT_SCANNER_AGENTS, ScannerRules
from selligent_segment.inputs.tracking._target import check_target
from selligent_segment.inputs.tracking._token import Token, TokenRefused, TrackingKeys

__all__ = [
    "DEFAULT_SCANNER_AGENTS",
    "ONE_CLICK",
    "PIXEL",
    "Accepts",
    "ScannerRules",
    "Token",
    "TokenRefused",
    "TrackingApp",
    "TrackingKeys",
    "TrackingLinks",
    "check_target",
]
