"""The seed schemas: the columns and sources a mapping gets when its ``fields`` are omitted.

One job: state, once, the example contact table (Identify) and interaction table (Track)
that Selligent's Segment destination starts from, with the Segment field each column reads
and the key each table is upserted on.

Guarantee: every key column is among the fields; every source here compiles (tested).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final

from selligent_segment._naming import PROFILES

__all__ = ["SEED_FIELDS", "SEED_KEYS", "SELLIGENT_EMAIL_EVENTS"]

_IDENTIFY: Final[Mapping[str, Any]] = MappingProxyType(
    {
        "customer_id": "$.userId",
        "email_address": "$.traits.email",
        "first_name": "$.traits.firstName",
        "last_name": "$.traits.lastName",
        "address_street_1": "$.traits.address.street",
        "address_street_2": "$.traits.address.street2",
        "address_city": "$.traits.address.city",
        "address_state": "$.traits.address.state",
        "address_zip": "$.traits.address.postalCode",
        "country": "$.traits.address.country",
    }
)

_TRACK: Final[Mapping[str, Any]] = MappingProxyType(
    {
        "event_id": "$.messageId",
        "customer_id": "$.userId",
        "event_type": "$.event",
        "event_timestamp": {"path": "$.timestamp", "format": "datetime"},
        "channel": {"path": "$.properties.channel", "fallback": "$.channel"},
        "ip_address": "$.context.ip",
        "plan_name": "$.properties.plan_name",
        "acct_type": "$.properties.acct_type",
    }
)

#: Column -> source of each kind's seed table, in column order.
SEED_FIELDS: Final[Mapping[str, Mapping[str, Any]]] = MappingProxyType(
    {"identify": _IDENTIFY, "track": _TRACK}
)
#: The upsert key of each kind's seed table.
SEED_KEYS: Final[Mapping[str, tuple[str, ...]]] = MappingProxyType(
    {"identify": ("customer_id",), "track": ("event_id",)}
)

#: The Email events this library sends to Segment, under every naming profile (the six of
#: the ``selligent`` profile and ``segment-spec``'s ``Unsubscribed``). What is not loaded
#: back is any track carrying ``context.integration.name == "selligent"`` (unless a tenant
#: asks), these names or a tenant's own.
SELLIGENT_EMAIL_EVENTS: Final = frozenset(
    name for profile in PROFILES.values() for name in profile.values()
)
