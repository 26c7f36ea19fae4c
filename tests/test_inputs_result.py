"""What adapters return (``inputs/_result.py``): records with their places, problems."""

from __future__ import annotations

import orjson
import pytest

from selligent_segment import CallbackRecord, EventKind
from selligent_segment.inputs import Parsed
from selligent_segment.inputs.esp import _sendgrid
from selligent_segment.inputs.esp._common import Collector, PlatformIds

A = CallbackRecord(EventKind.DELIVERED, email="a@example.com")
B = CallbackRecord(EventKind.OPENED, email="b@example.com")


def test_a_record_without_a_place_is_named_by_its_input() -> None:
    assert Parsed((A, B)).place(1, "FILE") == "FILE"
    assert Parsed((A, B), places=("FILE:event-1", "")).place(1, "FILE") == "FILE"
    assert Parsed((A, B), places=("FILE:event-1", "FILE:event-3")).place(1, "x") == "FILE:event-3"


def test_places_are_one_per_record_or_none() -> None:
    with pytest.raises(ValueError, match="1 places for 2 records"):
        Parsed((A, B), places=("FILE:event-1",))


def test_adding_keeps_each_records_place() -> None:
    placed = Parsed((A,), places=("m1 recipient 2",))
    assert (Parsed((B,)) + placed).places == ("", "m1 recipient 2")
    assert (placed + Parsed((B,))).place(1, "m2") == "m2"
    assert (Parsed((A,)) + Parsed((B,))).places == ()


def test_an_esp_record_is_placed_at_its_event_not_at_its_index_among_records() -> None:
    event = {"email": "a@example.com", "timestamp": 1794999000}
    events = [{**event, "event": "processed"}, {**event, "event": "delivered"}]
    parsed = _sendgrid.parse(orjson.dumps(events), "body.json")
    assert [p.where for p in parsed.problems] == ["body.json:event-1"]  # skipped
    assert parsed.place(0, "body.json") == "body.json:event-2"


def test_the_collector_places_each_record_it_makes() -> None:
    out = Collector("test", "w")
    assert out.parsed().places == ()
    out.skip(0, "event", "processed")
    out.add(1, EventKind.DELIVERED, {}, PlatformIds(), {}, email="a@example.com")
    out.add(2, EventKind.OPENED, {}, PlatformIds(), {}, email="b@example.com")
    assert out.parsed().places == ("w:event-2", "w:event-3")
