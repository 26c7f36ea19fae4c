"""Property-based tests of the destination mapping: any JSON event maps, skips or is a
RowError (never another exception), and the fused fast paths equal the plain code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from selligent_segment.destination import (
    MappedRow,
    RowError,
    Skipped,
    TenantConfig,
    load_config,
    map_event,
)
from selligent_segment.destination._source import (
    _MISSING,
    Source,
    _getter,
    _resolver,
    compile_source,
    parse_path,
    to_text,
)

pytestmark = pytest.mark.slow

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "destination.toml"
TENANTS: dict[str, TenantConfig] = dict(load_config(EXAMPLE, require_secrets=False).tenants)

NAMES = st.sampled_from(
    [
        "userId",
        "traits",
        "email",
        "firstName",
        "address",
        "postalCode",
        "event",
        "properties",
        "plan_name",
        "context",
        "ip",
        "timestamp",
        "messageId",
        "x",
    ]
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**20), 10**20),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    st.sampled_from(
        [
            "2026-11-30T10:00:00Z",
            "2026-11-30",
            "2026-11-30T10:00:00",
            "0001-01-01T00:00:00+01:00",
            "9999-12-31T23:59:59-01:00",
            "12",
            "1e400",
            "true",
            "",
        ]
    ),
)
JSON = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(NAMES, children, max_size=4),
    max_leaves=12,
)
EVENTS = st.builds(
    lambda base, kind, extra: {**base, **extra, **({"type": kind} if kind else {})},
    st.dictionaries(NAMES, JSON, max_size=6),
    st.sampled_from(["identify", "track", "page", None]),
    st.fixed_dictionaries(
        {},
        optional={
            "messageId": st.one_of(st.text(min_size=1, max_size=10), JSON),
            "userId": st.one_of(st.text(max_size=10), JSON),
            "timestamp": JSON,
            "event": st.one_of(st.sampled_from(["Order Completed", "Email Opened"]), JSON),
            "traits": st.dictionaries(NAMES | st.just("birthday"), JSON, max_size=5),
            "properties": st.dictionaries(NAMES | st.just("total"), JSON, max_size=5),
        },
    ),
)


@SETTINGS
@given(event=EVENTS, tenant=st.sampled_from(sorted(TENANTS)))
def test_any_event_maps_skips_or_is_a_row_error(event: dict[str, Any], tenant: str) -> None:
    config = TENANTS[tenant]
    error: RowError | None = None
    try:
        result = map_event(config, event)
    except RowError as exc:
        error = exc
    if error is not None:
        assert error.column is None or error.column in _columns(config, event)
        return
    if isinstance(result, Skipped):
        assert result.reason
        return
    assert isinstance(result, MappedRow)
    mapping = config.mapping(result.kind)
    assert mapping is not None
    assert all(type(v) is str for v in result.values)
    assert len(result.values) == len(result.columns)
    positions = [mapping.columns.index(c) for c in result.columns]
    assert positions == sorted(positions)  # a subset, in the mapping's order
    for column in mapping.key:
        assert result.values[result.columns.index(column)] != ""
    assert result.message_id == event["messageId"]


def _columns(config: TenantConfig, event: dict[str, Any]) -> tuple[str, ...]:
    mapping = config.mapping(str(event.get("type")))
    return () if mapping is None else mapping.columns


PATHS = st.lists(NAMES, min_size=1, max_size=3).map(lambda names: "$." + ".".join(names))


@SETTINGS
@given(path=PATHS, event=st.dictionaries(NAMES, JSON, max_size=6))
def test_the_fused_path_resolvers_equal_the_plain_getter(path: str, event: dict[str, Any]) -> None:
    fused = compile_source(path)
    assert isinstance(fused, Source)
    segments = parse_path(path)
    assert segments is not None
    plain = _resolver((_getter(segments),), to_text, False, None)
    generic = _resolver((_getter(segments), _getter(segments)), to_text, False, None)
    expected = plain(event)
    assert fused.resolve(event) == expected
    # the generic resolver differs only by trying the second getter on null or "": same here
    assert generic(event) == expected


@SETTINGS
@given(event=st.dictionaries(NAMES, JSON, max_size=6), path=PATHS)
def test_unrolled_getters_equal_a_plain_walk(event: dict[str, Any], path: str) -> None:
    segments = parse_path(path)
    assert segments is not None
    value: Any = event
    for name in segments:
        if not isinstance(value, dict) or name not in value:
            value = _MISSING
            break
        value = value[name]
    assert _getter(segments)(event) is value
