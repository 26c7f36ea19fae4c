"""Test helpers: a real-HTTP stand-in for Segment's Tracking API, and seams without sockets.

- :class:`LocalSegment` serves ``POST /v1/batch`` on loopback with Segment's documented
  acceptance rules (auth, gzip, 500 KB / 32 KB / 2,500 items, required fields, duplicate
  ``messageId``) and records what it accepted, dropped and was asked; :class:`Fault` and
  :class:`FaultPlan` inject status codes, dropped connections and latency.
- :class:`MockTransport` answers every batch from a function
  (``Emitter(transport=MockTransport(handler))``) and :class:`FakeClock` makes the senders'
  time a test's to move (``Emitter(clock=FakeClock())``).
- In pytest the ``local_segment`` fixture (a started :class:`LocalSegment`, stopped after the
  test) comes with the package: a ``pytest11`` plugin, no ``conftest.py`` needed. pytest is
  not needed to import this module.
- :class:`ForwardProxy` is a forwarding proxy on loopback (``CONNECT`` tunnels and
  absolute-URI requests, optional ``Proxy-Authorization``) that records what went
  through, for tests of proxy settings.
- :class:`LocalSelligent` serves Selligent Marketing Cloud's ``data/load`` on loopback
  (lists with declared :class:`SelligentColumn` s, upsert by key, per-row validation,
  ``401`` for a wrong ``X-ApiKey``, the same injectable faults) and keeps the rows to read
  back; the ``local_selligent`` fixture gives a started one.
- :func:`main` runs a :class:`LocalSegment` as a process:
  ``python -m selligent_segment.testing --port 0`` (``--selligent``: a LocalSelligent).

See ``docs/testing.md``. Write keys never appear in a repr, an exception text or a log line
of this package.
"""

from __future__ import annotations

from importlib.util import find_spec

from selligent_segment.testing._fake_clock import FakeClock
from selligent_segment.testing._faults import Fault, FaultLike, FaultPlan
from selligent_segment.testing._faults import FaultKind as FaultKind  # the signatures' aliases,
from selligent_segment.testing._faults import RateKey as RateKey  # importable here as before
from selligent_segment.testing._faults import RatesLike as RatesLike  # (not in __all__)
from selligent_segment.testing._forward_proxy import ForwardProxy, ProxiedRequest
from selligent_segment.testing._local_segment import DroppedEvent, LocalSegment, RecordedRequest
from selligent_segment.testing._local_selligent import LocalSelligent, RecordedLoad
from selligent_segment.testing._mock_transport import (
    Handler,
    MockRequest,
    MockResponse,
    MockTransport,
)
from selligent_segment.testing._process import main
from selligent_segment.testing._rules import (
    MAX_BATCH_ITEMS,
    MAX_ITEM_BYTES,
    MAX_MESSAGE_ID_CHARS,
    MAX_REQUEST_BYTES,
)
from selligent_segment.testing._selligent_rules import SelligentColumn, SelligentList

__all__ = [
    "MAX_BATCH_ITEMS",
    "MAX_ITEM_BYTES",
    "MAX_MESSAGE_ID_CHARS",
    "MAX_REQUEST_BYTES",
    "DroppedEvent",
    "FakeClock",
    "Fault",
    "FaultLike",
    "FaultPlan",
    "ForwardProxy",
    "Handler",
    "LocalSegment",
    "LocalSelligent",
    "MockRequest",
    "MockResponse",
    "MockTransport",
    "ProxiedRequest",
    "RecordedLoad",
    "RecordedRequest",
    "SelligentColumn",
    "SelligentList",
    "main",
]

if find_spec("pytest") is not None:  # the fixture, for `from ... import local_segment`
    from selligent_segment.testing._plugin import local_segment, local_selligent

    __all__ += ["local_segment", "local_selligent"]
