"""Checking a loaded config against sample events: what ``destination check`` runs.

One job: map sample events (built-in ones shaped like the seed schemas, and a customer's
own) through every tenant's mapping and turn each event that cannot be mapped into a
:class:`~selligent_segment.destination.ConfigProblem` naming tenant, table, column and
reason, so a mapping that would dead-letter real traffic is caught before it runs.

Guarantees: every (tenant, sample) pair is tried, none stops the others; the outcome of
each is reported (:class:`SampleOutcome`); sample values never appear in a problem's text.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any, Final

import attrs

from selligent_segment.destination._config import ConfigProblem, DestinationConfig
from selligent_segment.destination._mapping import MappedRow, RowError, Skipped, map_event

__all__ = ["SAMPLE_EVENTS", "SampleOutcome", "check_samples"]

_IDENTIFY: Final[Mapping[str, Any]] = {
    "type": "identify",
    "messageId": "sample-identify-0001",
    "userId": "user-0001",
    "anonymousId": "anon-0001",
    "timestamp": "2026-11-30T09:15:00.000Z",
    "context": {"ip": "203.0.113.7", "locale": "en-GB"},
    "traits": {
        "email": "Jane.Doe@example.com",
        "firstName": "Jane",
        "lastName": "Doe",
        "phone": "+44 20 7946 0000",
        "createdAt": "2025-03-01T10:00:00Z",
        "address": {
            "street": "1 Sample Street",
            "street2": "Flat 2",
            "city": "London",
            "state": "London",
            "postalCode": "EC1A 1AA",
            "country": "GB",
        },
    },
}
_TRACK: Final[Mapping[str, Any]] = {
    "type": "track",
    "messageId": "sample-track-0001",
    "userId": "user-0001",
    "anonymousId": "anon-0001",
    "event": "Subscription Started",
    "timestamp": "2026-11-30T09:16:00.000Z",
    "channel": "server",
    "context": {"ip": "203.0.113.7", "traits": {"email": "Jane.Doe@example.com"}},
    "properties": {"plan_name": "Pro", "acct_type": "business", "channel": "web"},
}

#: The built-in samples, by label: an identify and a track shaped like the seed schemas.
SAMPLE_EVENTS: Final[Mapping[str, Mapping[str, Any]]] = MappingProxyType(
    {"built-in identify": _IDENTIFY, "built-in track": _TRACK}
)


@attrs.frozen
class SampleOutcome:
    """What one sample became for one tenant: a row, a skip, or a problem."""

    tenant: str
    label: str
    result: MappedRow | Skipped | ConfigProblem


def check_samples(
    config: DestinationConfig, samples: Iterable[tuple[str, Mapping[str, Any]]]
) -> tuple[list[ConfigProblem], list[SampleOutcome]]:
    """Map every sample (``(label, event)``) for every tenant: the problems (events that
    cannot be mapped) and every outcome, tenant by tenant in the config's order."""
    samples = list(samples)
    problems: list[ConfigProblem] = []
    outcomes: list[SampleOutcome] = []
    for name, tenant in config.tenants.items():
        for label, event in samples:
            result: MappedRow | Skipped | ConfigProblem
            try:
                result = map_event(tenant, event)
            except RowError as exc:
                kind = event.get("type")
                table = kind if kind in ("identify", "track") else None
                reason = f"sample {label}: {exc.source}: {exc.reason}"
                result = ConfigProblem(reason, tenant=name, table=table, column=exc.column)
                problems.append(result)
            outcomes.append(SampleOutcome(name, label, result))
    return problems, outcomes
