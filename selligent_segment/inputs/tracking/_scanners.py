"""Which hits on a tracking link are machines, not people: documented heuristics.

One job: :class:`ScannerRules` says whether an open is a *machine open* (a prefetch,
Apple Mail Privacy Protection, a security scanner) and whether a click is a *scanner*
click. Every hit is sent, flagged, so nothing is lost and downstream tools decide:
``Email Opened`` carries ``machine_open`` (true or false, as the ESP adapters send it)
and, when true, ``machine_open_reason``; ``Email Link Clicked`` carries ``scanner`` and,
when true, ``scanner_reason``. The reason is the first rule below that holds.

A hit is flagged when any rule holds (in this order):

1. ``head``: a ``HEAD`` request (browsers open links with ``GET``; link checkers use
   ``HEAD``);
2. ``soon_after_send``: within ``window`` seconds of the send time sealed in the link
   (scanners fetch every link as the message is delivered; people take longer);
3. ``no_user_agent`` / ``scanner_user_agent``: no ``User-Agent``, or one containing a
   known scanner or prefetcher name (``scanner_agents``, case-insensitive);
4. opens only, Apple Mail Privacy Protection, which fetches images for its users when the
   message arrives: ``apple_proxy_user_agent``, a ``User-Agent`` that is exactly
   ``Mozilla/5.0`` (``mpp_agents``), or ``apple_proxy_ip``, an address in Apple's own
   network ``17.0.0.0/8`` (``mpp_networks``).

Heuristics, not proof: Gmail's and Yahoo's image proxies fetch when a person opens, so
they count as people; a scanner with a browser's agent, slower than ``window``, from
elsewhere counts as one too.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Any

import attrs

from selligent_segment._errors import ConfigurationError, shown
from selligent_segment._validate import check_number
from selligent_segment.inputs.esp._machine_open import APPLE_NETWORK, APPLE_PROXY_USER_AGENT

__all__ = ["DEFAULT_MPP_NETWORKS", "DEFAULT_SCANNER_AGENTS", "ScannerRules"]

#: Substrings of the ``User-Agent`` of link scanners, prefetchers and scripts.
DEFAULT_SCANNER_AGENTS = (
    "barracuda",
    "mimecast",
    "proofpoint",
    "urldefense",
    "messagelabs",
    "symantec",
    "trendmicro",
    "trend micro",
    "forcepoint",
    "sophos",
    "zscaler",
    "fireeye",
    "ironport",
    "safelinks",
    "bingpreview",
    "headlesschrome",
    "phantomjs",
    "python-requests",
    "python-urllib",
    "go-http-client",
    "curl/",
    "wget/",
    "okhttp",
    "libwww-perl",
    "bot",
    "crawler",
    "spider",
    "scanner",
    "preview",
)
#: Apple's own network, from which Mail Privacy Protection's proxies fetch (the same
#: heuristic as the ESP adapters' ``machine_open``).
DEFAULT_MPP_NETWORKS = (str(APPLE_NETWORK),)


def _agents(value: object) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise ConfigurationError("scanner_agents", "expected a sequence of text")
    if not all(isinstance(a, str) and a.strip() for a in value):
        raise ConfigurationError("scanner_agents", "every entry must be non-blank text")
    return tuple(a.strip().lower() for a in value)


def _exact_agents(value: object) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise ConfigurationError("mpp_agents", "expected a sequence of text")
    if not all(isinstance(a, str) for a in value):
        raise ConfigurationError("mpp_agents", "every entry must be text")
    return tuple(value)


def _networks(
    value: object,
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise ConfigurationError("mpp_networks", "expected a sequence of networks")
    networks = []
    for item in value:
        try:
            networks.append(ipaddress.ip_network(item))
        except (TypeError, ValueError):
            raise ConfigurationError(
                "mpp_networks", f"{shown(item)} is not a network (such as 17.0.0.0/8)"
            ) from None
    return tuple(networks)


def _window(_instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    check_number(attribute.name, value, minimum=0)


@attrs.frozen(kw_only=True)
class ScannerRules:
    """The rules of the module text, their lists and window configurable; validated when
    made (:class:`~selligent_segment.ConfigurationError` names the setting)."""

    window: float = attrs.field(default=10.0, validator=_window)
    """Seconds after the sealed send time within which a hit is a scanner's (0: off)."""
    scanner_agents: tuple[str, ...] = attrs.field(default=DEFAULT_SCANNER_AGENTS, converter=_agents)
    """Case-insensitive substrings of scanners' ``User-Agent``."""
    mpp_agents: tuple[str, ...] = attrs.field(
        default=(APPLE_PROXY_USER_AGENT,), converter=_exact_agents
    )
    """Exact ``User-Agent`` values of Apple Mail Privacy Protection's fetches (opens)."""
    mpp_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = attrs.field(
        default=DEFAULT_MPP_NETWORKS, converter=_networks
    )
    """Networks of Apple Mail Privacy Protection's proxies (opens)."""

    def scanner_reason(self, *, method: str, user_agent: str | None, age: float) -> str | None:
        """Why a hit is a machine's by rules 1-3 (``head``, ``soon_after_send``,
        ``no_user_agent``, ``scanner_user_agent``), or None; ``age`` is seconds since the
        send."""
        if method == "HEAD":
            return "head"
        if self.window and age < self.window:  # a token dated ahead (clock skew) too
            return "soon_after_send"
        if not user_agent:
            return "no_user_agent"
        agent = user_agent.lower()
        if any(name in agent for name in self.scanner_agents):
            return "scanner_user_agent"
        return None

    def machine_open_reason(
        self, *, method: str, user_agent: str | None, ip: str | None, age: float
    ) -> str | None:
        """Why an open is a machine's by rules 1-4 (those of :meth:`scanner_reason`, then
        ``apple_proxy_user_agent``, ``apple_proxy_ip``), or None."""
        reason = self.scanner_reason(method=method, user_agent=user_agent, age=age)
        if reason is not None:
            return reason
        if user_agent in self.mpp_agents:
            return "apple_proxy_user_agent"
        if ip is None:
            return None
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return None
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # an IPv4 client on a dual-stack listener
        if any(address in network for network in self.mpp_networks):
            return "apple_proxy_ip"
        return None
