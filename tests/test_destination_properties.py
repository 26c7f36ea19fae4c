"""Property-based tests of the destination mapping: any JSON event maps, skips or is a
RowError (never another exception), and the fused fast paths equal the plain code; a
spooled row read by its bytes (the loader's transport) equals the row parsed whole."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
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
from selligent_segment.destination._mapping import resolve_row, resolve_row_by_field
from selligent_segment.destination._rows import decode, read_row, row_payload, split_row
from selligent_segment.destination._source import (
    _MISSING,
    Source,
    _getter,
    _resolver,
    compile_source,
    parse_path,
    to_text,
)
from selligent_segment.destination._transport import _groups, _groups_by_row

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


# -- the spooled row: read by bytes, equal to the plain parse -------------------------------

TEXT = st.one_of(
    st.text(max_size=12),
    st.sampled_from([',"values":[', ',"group":', '"]}]', "\\", '\\",', "\n", "é☃𝄞", "]}]"]),
)
ROWS = st.builds(
    lambda tenant, kind, list_name, key, pairs, message_id: MappedRow(
        tenant,
        kind,
        list_name,
        tuple(key),
        tuple(c for c, _ in pairs),
        tuple(v for _, v in pairs),
        message_id,
    ),
    TEXT,
    st.sampled_from(["identify", "track"]),
    TEXT,
    st.lists(TEXT, min_size=1, max_size=2),
    st.lists(st.tuples(TEXT, TEXT), max_size=5),
    st.text(min_size=1, max_size=12) | st.just(',"values":'),
)


def _plain_groups(bodies: list[bytes]) -> dict[bytes, tuple[list[int], bytes]]:
    """The transport's grouping and request body done the plain way: each row parsed
    whole (read_row), grouped by its fields, the body serialised again."""
    groups: dict[tuple[object, ...], list[int]] = {}
    rows = [read_row(body) for body in bodies]
    for index, row in enumerate(rows):
        groups.setdefault((row.kind, row.list, row.key, row.columns), []).append(index)
    return {
        orjson.dumps([kind, name, list(key), list(columns)]): (
            indexes,
            orjson.dumps([rows[i].values for i in indexes]),
        )
        for (kind, name, key, columns), indexes in groups.items()
    }


@SETTINGS
@given(rows=st.lists(ROWS, min_size=1, max_size=6))
def test_spooled_rows_read_by_bytes_equal_the_plain_parse(rows: list[MappedRow]) -> None:
    bodies = [row_payload(row) for row in rows]
    for row, body in zip(rows, bodies, strict=True):
        group, values = split_row(body)
        assert orjson.loads(values) == list(row.values)
        plain = read_row(body)
        assert (plain.kind, plain.list, plain.key, plain.columns, plain.values) == (
            row.kind,
            row.list,
            row.key_fields,
            row.columns,
            list(row.values),
        )
        assert group == orjson.dumps([row.kind, row.list, row.key_fields, row.columns])
        # the spool's decoder (a journal replay) keeps the payload as it is
        message = decode(body)
        assert (message.tenant, message.message_id, message.kind) == (
            row.tenant,
            row.message_id,
            row.kind,
        )
        assert message.body == body
    groups, bad = _groups(bodies)
    assert not bad
    fast = {g: (r.indexes, b"[" + b",".join(r.values) + b"]") for g, r in groups.items()}
    assert fast == _plain_groups(bodies)
    assert list(fast) == list(_plain_groups(bodies))  # first appearance order
    by_row, bad = _groups_by_row(bodies)
    assert not bad
    assert [(g, r.indexes, r.values) for g, r in by_row.items()] == [
        (g, r.indexes, r.values) for g, r in groups.items()
    ]


@SETTINGS
@given(row=ROWS)
def test_a_payload_of_the_older_form_decodes_to_the_same_row(row: MappedRow) -> None:
    older = orjson.dumps(
        [
            row.tenant,
            None,
            {
                "type": row.kind,
                "list": row.list,
                "key": row.key_fields,
                "columns": row.columns,
                "values": row.values,
                "messageId": row.message_id,
            },
        ]
    )
    message = decode(older)
    assert (message.tenant, message.message_id, message.kind) == (
        row.tenant,
        row.message_id,
        row.kind,
    )
    assert message.body == row_payload(row)


@SETTINGS
@given(body=st.binary(max_size=60) | TEXT.map(str.encode))
def test_a_body_split_row_cannot_read_is_refused_never_misread(body: bytes) -> None:
    try:
        group, values = split_row(body)
    except ValueError:
        assert _groups([body]) == ({}, {0: "not a spooled row"})
        return
    groups, bad = _groups([body])
    assert not bad
    assert [(g, r.values) for g, r in groups.items()] == [(group, [values])]


@SETTINGS
@given(
    event=EVENTS,
    tenant=st.sampled_from(sorted(TENANTS)),
    kind=st.sampled_from(["identify", "track"]),
)
def test_resolving_a_row_at_once_equals_field_by_field(
    event: dict[str, Any], tenant: str, kind: str
) -> None:
    mapping = TENANTS[tenant].mapping(kind)
    assert mapping is not None
    outcomes = []
    for resolve in (resolve_row, resolve_row_by_field):
        try:
            outcomes.append(resolve(mapping, event))
        except RowError as exc:
            outcomes.append((type(exc), str(exc), exc.column))  # type: ignore[arg-type]
    assert outcomes[0] == outcomes[1]
