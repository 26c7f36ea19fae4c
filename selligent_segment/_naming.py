"""Event names: which Segment event name each callback kind becomes, per tenant."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import attrs

from selligent_segment._errors import ConfigurationError, InvalidEvent, shown
from selligent_segment._record import EventKind

__all__ = ["PROFILES", "EventNaming"]

_SELLIGENT: Mapping[EventKind, str] = MappingProxyType(
    {
        EventKind.DELIVERED: "Email Delivered",
        EventKind.OPENED: "Email Opened",
        EventKind.LINK_CLICKED: "Email Link Clicked",
        EventKind.UNSUBSCRIBED: "Email Unsubscribed",
        EventKind.BOUNCED: "Email Bounced",
        EventKind.MARKED_AS_SPAM: "Email Marked as Spam",
    }
)

#: The named profiles: ``selligent`` (the Selligent source's names, the default) and
#: ``segment-spec`` (the Email spec page's names; only the unsubscribe differs).
PROFILES: Mapping[str, Mapping[EventKind, str]] = MappingProxyType(
    {
        "selligent": _SELLIGENT,
        "segment-spec": MappingProxyType({**_SELLIGENT, EventKind.UNSUBSCRIBED: "Unsubscribed"}),
    }
)
"""The event-name profiles, read-only: ``"selligent"`` (the Selligent source's names,
``Email Unsubscribed`` among them; the default) and ``"segment-spec"`` (the Email spec's
``Unsubscribed``). Each maps every :class:`EventKind` to its event name."""


def _kind_map(setting: str, value: Any) -> Mapping[EventKind, str]:
    if not isinstance(value, Mapping):
        raise ConfigurationError(setting, f"expected a mapping, got {type(value).__name__}")
    out: dict[EventKind, str] = {}
    for key, name in value.items():
        try:
            kind = EventKind.parse(key)
        except InvalidEvent as exc:
            raise ConfigurationError(f"{setting}[{shown(key)}]", exc.reason) from None
        if not isinstance(name, str) or not name.strip():
            raise ConfigurationError(
                f"{setting}[{shown(key)}]", "event name must be non-blank text"
            )
        out[kind] = name.strip()
    return MappingProxyType(out)


def _overrides(value: Any) -> Mapping[EventKind, str]:
    return _kind_map("overrides", value)


def _tenant_maps(value: Any) -> Mapping[str, Mapping[EventKind, str]]:
    if not isinstance(value, Mapping):
        raise ConfigurationError("tenant_overrides", "expected a mapping of tenant -> names")
    return MappingProxyType(
        {str(t): _kind_map(f"tenant_overrides[{shown(t)}]", names) for t, names in value.items()}
    )


def _check_profile(_: object, __: object, value: object) -> None:
    if not isinstance(value, str) or value not in PROFILES:
        raise ConfigurationError(
            "profile", f"unknown profile {shown(value)} (known: {list(PROFILES)})"
        )


@attrs.frozen(slots=True)
class EventNaming:
    """Event names per kind: a profile, global overrides, then per-tenant overrides.

    Guarantee: validated on construction; :meth:`name` always returns non-blank text.
    """

    profile: str = attrs.field(default="selligent", validator=_check_profile)
    """A key of :data:`PROFILES`: ``"selligent"`` or ``"segment-spec"``."""
    overrides: Mapping[EventKind, str] = attrs.field(factory=dict, converter=_overrides, hash=False)
    """Names that replace the profile's for every tenant, by kind (a kind or its value)."""
    tenant_overrides: Mapping[str, Mapping[EventKind, str]] = attrs.field(
        factory=dict, converter=_tenant_maps, hash=False
    )
    """Names for one tenant, by kind; they win over ``overrides``."""
    #: kind -> name before per-tenant overrides, resolved once (name() is on the hot path).
    _names: Mapping[EventKind, str] = attrs.field(init=False, repr=False, eq=False, hash=False)

    def __attrs_post_init__(self) -> None:
        profile = PROFILES[self.profile]
        names = {kind: self.overrides.get(kind) or profile[kind] for kind in EventKind}
        object.__setattr__(self, "_names", names)

    def name(self, kind: EventKind, tenant: str | None = None) -> str:
        """The event name for ``kind`` as seen by ``tenant``."""
        if tenant is not None and self.tenant_overrides:
            per_tenant = self.tenant_overrides.get(tenant)
            if per_tenant is not None and kind in per_tenant:
                return per_tenant[kind]
        return self._names[kind]
