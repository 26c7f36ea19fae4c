"""Machine opens: opens fetched by a proxy, not a person (Apple Mail Privacy Protection
fetches every image of a message when it arrives). They are flagged, never dropped.

The Apple test is a *heuristic*, not a fact: Apple publishes no definitive signal. A hit
comes from Apple's own network, 17.0.0.0/8, or carries the bare user agent
``Mozilla/5.0`` that Apple's image proxy sends (a browser or mail client sends more).
Opens through iCloud Private Relay egress addresses (run by CDNs) are not recognised.
"""

from __future__ import annotations

import ipaddress
from typing import Any

__all__ = ["APPLE_NETWORK", "APPLE_PROXY_USER_AGENT", "machine_open"]

#: Apple's own address block.
APPLE_NETWORK = ipaddress.ip_network("17.0.0.0/8")
#: The whole user agent of Apple's image proxy.
APPLE_PROXY_USER_AGENT = "Mozilla/5.0"


def machine_open(ip: object, user_agent: object, flagged: object = None) -> dict[str, Any]:
    """The properties of an open: ``machine_open`` (True or False) and, when True,
    ``machine_open_reason`` (``esp`` when the provider flagged it, ``apple_proxy_ip`` or
    ``apple_proxy_user_agent`` for the Apple heuristic)."""
    if flagged is True:
        return {"machine_open": True, "machine_open_reason": "esp"}
    if isinstance(ip, str):
        try:
            address = ipaddress.ip_address(ip.strip())
        except ValueError:
            address = None
        if address is not None and address.version == 4 and address in APPLE_NETWORK:
            return {"machine_open": True, "machine_open_reason": "apple_proxy_ip"}
    if isinstance(user_agent, str) and user_agent.strip() == APPLE_PROXY_USER_AGENT:
        return {"machine_open": True, "machine_open_reason": "apple_proxy_user_agent"}
    return {"machine_open": False}
