"""Selligent's Segment destination: a customer's Segment ``identify`` and ``track`` calls
become rows of that customer's Selligent lists, through a per-customer mapping.

- :func:`load_config` reads the one TOML file describing every tenant (its Selligent
  account, the environment variables holding its secrets, its mappings) and raises
  :class:`DestinationConfigError` listing every problem, each naming tenant, table, column
  and reason.
- :func:`map_event` turns one event into a :class:`MappedRow` (strings, as Selligent's
  ``data/load`` takes them), a :class:`Skipped` with its reason, or raises
  :class:`RowError` (a dead letter naming the column and the missing source).
- :class:`Loader` journals mapped rows durably and loads them into each tenant's lists
  (``data/load``) through the library's spool file and dispatcher, with
  :class:`SelligentTransport`.
- :class:`Receiver` is the ASGI application Segment's Webhooks destination posts to
  (``POST /segment/{tenant}``): signatures checked, every event journaled before ``200``.
- :func:`check_samples` maps sample events (:data:`SAMPLE_EVENTS`, or a customer's own)
  through every tenant, as ``selligent-segment destination check`` does.

See ``docs/destination.md``.
"""

from __future__ import annotations

from selligent_segment.destination._check import SAMPLE_EVENTS, SampleOutcome, check_samples
from selligent_segment.destination._config import (
    ConfigProblem,
    DestinationConfig,
    DestinationConfigError,
    Field,
    TableMapping,
    TenantConfig,
    load_config,
    parse_config,
)
from selligent_segment.destination._loader import DeadRow, Loader, LoaderSettings
from selligent_segment.destination._mapping import MappedRow, RowError, Skipped, map_event
from selligent_segment.destination._receiver import Receiver
from selligent_segment.destination._seed import SEED_FIELDS, SEED_KEYS, SELLIGENT_EMAIL_EVENTS
from selligent_segment.destination._source import Source, ValueProblem
from selligent_segment.destination._transport import SelligentTransport

__all__ = [
    "SAMPLE_EVENTS",
    "SEED_FIELDS",
    "SEED_KEYS",
    "SELLIGENT_EMAIL_EVENTS",
    "ConfigProblem",
    "DeadRow",
    "DestinationConfig",
    "DestinationConfigError",
    "Field",
    "Loader",
    "LoaderSettings",
    "MappedRow",
    "Receiver",
    "RowError",
    "SampleOutcome",
    "SelligentTransport",
    "Skipped",
    "Source",
    "TableMapping",
    "TenantConfig",
    "ValueProblem",
    "check_samples",
    "load_config",
    "map_event",
    "parse_config",
]
