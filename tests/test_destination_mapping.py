"""map_event and the sources: paths, fallbacks, templates, literals, formatting, loops, keys."""

from __future__ import annotations

from typing import Any

import pytest
from _destination import tenant_table

from selligent_segment import PROFILES
from selligent_segment.destination import (
    SELLIGENT_EMAIL_EVENTS,
    MappedRow,
    RowError,
    Skipped,
    TenantConfig,
    map_event,
    parse_config,
)
from selligent_segment.destination._source import Source, compile_source, to_text


def make_tenant(**tables: Any) -> TenantConfig:
    table = tenant_table(**tables)
    return parse_config({"tenants": {"acme": table}}, {"KEY": "k:s"}).tenants["acme"]


def resolve(spec: object, event: dict[str, Any]) -> str | None:
    source = compile_source(spec)
    assert isinstance(source, Source), source
    return source.resolve(event)


IDENTIFY = {
    "type": "identify",
    "messageId": "m-1",
    "userId": "u-1",
    "traits": {
        "email": "Ann@Example.com",
        "firstName": "Ann",
        "address": {"postalCode": 75001, "city": "Paris"},
    },
}


def test_the_seed_identify_maps_what_the_event_has_and_leaves_out_the_rest() -> None:
    row = map_event(make_tenant(), IDENTIFY)
    assert isinstance(row, MappedRow)
    assert (row.tenant, row.kind, row.list, row.key_fields, row.message_id) == (
        "acme",
        "identify",
        "CONTACTS",
        ("customer_id",),
        "m-1",
    )
    assert dict(zip(row.columns, row.values, strict=True)) == {
        "customer_id": "u-1",
        "email_address": "Ann@Example.com",
        "first_name": "Ann",
        "address_city": "Paris",
        "address_zip": "75001",
    }
    assert "Ann" not in repr(row)  # values (personal data) stay out of the repr


def test_a_complete_row_shares_the_mappings_columns_tuple() -> None:
    tenant = make_tenant(
        track={"list": "E", "key": "id", "fields": {"id": "$.messageId", "e": "$.event"}}
    )
    row = map_event(tenant, {"type": "track", "messageId": "m", "event": "Signed Up"})
    assert isinstance(row, MappedRow)
    assert tenant.track is not None
    assert row.columns is tenant.track.columns
    assert row.values == ("m", "Signed Up")


def test_the_seed_track_formats_the_timestamp_in_utc_and_falls_back_for_the_channel() -> None:
    event = {
        "type": "track",
        "messageId": "m-2",
        "userId": "u-1",
        "event": "Order Completed",
        "timestamp": "2026-11-30T10:00:00.250+01:00",
        "channel": "server",
        "context": {"ip": "203.0.113.9"},
        "properties": {"plan_name": "Pro"},
    }
    row = map_event(make_tenant(), event)
    assert isinstance(row, MappedRow)
    values = dict(zip(row.columns, row.values, strict=True))
    assert values == {
        "event_id": "m-2",
        "customer_id": "u-1",
        "event_type": "Order Completed",
        "event_timestamp": "2026-11-30T09:00:00.250Z",
        "channel": "server",
        "ip_address": "203.0.113.9",
        "plan_name": "Pro",
    }


def test_an_identify_without_a_key_value_is_an_error_naming_the_missing_source() -> None:
    event = {"type": "identify", "messageId": "m", "traits": {"email": "a@example.com"}}
    with pytest.raises(RowError) as info:
        map_event(make_tenant(), event)
    assert (info.value.column, info.value.source) == ("customer_id", "$.userId")
    assert info.value.reason == "no key value: $.userId is missing"
    assert "a@example.com" not in str(info.value)


def test_the_fallback_is_used_when_the_key_path_is_missing_null_or_empty() -> None:
    tenant = make_tenant(
        identify={
            "list": "C",
            "fields": {
                "customer_id": {"path": "$.userId", "fallback": "$.traits.email", "lower": True}
            },
        }
    )
    for user_id in ({}, {"userId": None}, {"userId": ""}):
        event = {"type": "identify", "messageId": "m", **user_id, "traits": {"email": "A@B.io"}}
        row = map_event(tenant, event)
        assert isinstance(row, MappedRow)
        assert row.values == ("a@b.io",)
    with pytest.raises(RowError) as info:
        map_event(tenant, {"type": "identify", "messageId": "m", "userId": None})
    assert info.value.reason == "no key value: none of $.userId, $.traits.email has one"


def test_an_event_without_message_id_is_an_error() -> None:
    with pytest.raises(RowError, match="no messageId"):
        map_event(make_tenant(), {"type": "identify", "userId": "u"})


def test_types_without_a_mapping_are_skipped_with_a_reason() -> None:
    tenant = make_tenant(identify=None)
    assert map_event(tenant, {"type": "page", "messageId": "m"}) == Skipped(
        "type page is not loaded"
    )
    skipped = map_event(tenant, IDENTIFY)
    assert isinstance(skipped, Skipped)
    assert "identify is not loaded" in skipped.reason
    assert isinstance(map_event(tenant, {"messageId": "m"}), Skipped)


def test_track_events_is_an_allow_list() -> None:
    tenant = make_tenant(track={"list": "E", "events": ["Order Completed"]})
    base = {"type": "track", "messageId": "m", "userId": "u"}
    assert isinstance(map_event(tenant, {**base, "event": "Order Completed"}), MappedRow)
    assert map_event(tenant, {**base, "event": "Page Viewed"}) == Skipped(
        "event 'Page Viewed' is not in track.events"
    )


@pytest.mark.parametrize("name", sorted(SELLIGENT_EMAIL_EVENTS))
def test_this_librarys_own_email_events_are_not_loaded_back(name: str) -> None:
    event = {
        "type": "track",
        "messageId": "m",
        "userId": "u",
        "event": name,
        "context": {"integration": {"name": "selligent", "version": "1"}},
    }
    assert map_event(make_tenant(), event) == Skipped("a Selligent Email event (loop)")
    # the same event from another integration, or for a tenant that asks, is loaded
    other = {**event, "context": {"integration": {"name": "other"}}}
    assert isinstance(map_event(make_tenant(), other), MappedRow)
    asking = make_tenant(load_back_selligent_events=True)
    assert isinstance(map_event(asking, event), MappedRow)


def test_own_email_events_renamed_by_the_source_are_not_loaded_back() -> None:
    # The source's EventNaming lets a tenant rename the six events ("Mail Delivered"):
    # they carry the integration all the same, and were once loaded back into Selligent.
    event = {
        "type": "track",
        "messageId": "m",
        "userId": "u",
        "event": "Mail Delivered",
        "context": {"integration": {"name": "selligent", "version": "1"}},
    }
    assert map_event(make_tenant(), event) == Skipped("a Selligent Email event (loop)")
    asking = make_tenant(load_back_selligent_events=True)
    assert isinstance(map_event(asking, event), MappedRow)


def test_the_loop_guard_knows_every_profiles_event_names() -> None:
    names = {name for profile in PROFILES.values() for name in profile.values()}
    assert names <= SELLIGENT_EMAIL_EVENTS
    assert {"Email Delivered", "Email Marked as Spam", "Unsubscribed"} <= names


def test_a_value_the_format_cannot_read_is_an_error_naming_the_column() -> None:
    tenant = make_tenant(
        identify={
            "list": "C",
            "fields": {"customer_id": "$.userId", "born": {"path": "$.traits.b", "format": "date"}},
        }
    )
    event = {"type": "identify", "messageId": "m", "userId": "u", "traits": {"b": "soon"}}
    with pytest.raises(RowError) as info:
        map_event(tenant, event)
    assert info.value.column == "born"
    assert info.value.reason == "not an ISO-8601 date: a string of 4 characters"
    assert str(info.value) == (
        'column born <- { path = "$.traits.b", format = "date" }: '
        "not an ISO-8601 date: a string of 4 characters"
    )


# -- sources --------------------------------------------------------------------------------


def test_values_become_the_text_selligent_stores() -> None:
    assert to_text("x") == "x"
    assert to_text(None) == ""
    assert (to_text(True), to_text(False)) == ("true", "false")
    assert (to_text(42), to_text(3.0), to_text(2.5)) == ("42", "3", "2.5")
    assert to_text({"a": [1, "b"]}) == '{"a":[1,"b"]}'


def test_floats_are_written_in_plain_decimal_never_in_exponent_form() -> None:
    # repr wrote 5e-07 and 1e+16: text a Numeric or Float column may not read.
    assert to_text(5e-07) == "0.0000005"
    assert to_text(1e16) == "10000000000000000"
    assert to_text(-1.5e20) == "-150000000000000000000"
    assert to_text(1e23) == "100000000000000000000000"  # the shortest digits, not int(1e23)
    assert to_text(0.1) == "0.1"
    assert to_text(-0.0) == "0"


def test_explicit_null_is_kept_as_empty_and_missing_is_left_out() -> None:
    assert resolve("$.traits.x", {"traits": {"x": None}}) == ""
    assert resolve("$.traits.x", {"traits": {}}) is None
    assert resolve("$.traits.x.y", {"traits": {"x": "not an object"}}) is None


def test_paths_reach_into_arrays() -> None:
    event = {"properties": {"items": [{"sku": "A"}, {"sku": "B"}]}}
    assert resolve("$.properties.items[1].sku", event) == "B"
    assert resolve("$.properties.items[5].sku", event) is None
    assert resolve("$.properties.items[0]", event) == '{"sku":"A"}'


def test_templates_join_and_trim_and_resolve_to_nothing_when_all_parts_are_missing() -> None:
    spec = {"template": "{{traits.firstName}} {{ traits.lastName }}"}
    assert resolve(spec, {"traits": {"firstName": "Ann", "lastName": "Lee"}}) == "Ann Lee"
    assert resolve(spec, {"traits": {"lastName": "Lee"}}) == "Lee"
    assert resolve(spec, {"traits": {}}) is None


@pytest.mark.parametrize(
    ("text", "cut"),
    [
        ("a\U0001f600b\U0001f600", "a\U0001f600"),  # 1 + 2 units; the b would be a 4th
        ("\U0001f600\U0001f600", "\U0001f600"),  # a pair is never split
        ("ab\U0001f600", "ab"),
        ("abc", "abc"),
        ("\u00e9\u00e9\u00e9\u00e9", "\u00e9\u00e9\u00e9"),  # one unit each
    ],
)
def test_max_length_counts_utf16_units_as_selligent_does(text: str, cut: str) -> None:
    """Selligent (.NET on SQL Server) counts a text's length in UTF-16 units, where an
    emoji is 2: a value cut to max_length code points could still be over the column,
    and its row was refused (MaxStringLengthExceeded)."""
    assert resolve({"path": "$.e", "max_length": 3}, {"e": text}) == cut


def test_literals_formats_lower_and_max_length() -> None:
    assert resolve({"literal": "web"}, {}) == "web"
    assert resolve({"literal": 7}, {}) == "7"
    assert resolve({"path": "$.e", "lower": True, "max_length": 3}, {"e": "ABCDE"}) == "abc"
    assert resolve({"path": "$.d", "format": "date"}, {"d": "2026-11-30T23:30:00-02:00"}) == (
        "2026-12-01"
    )
    assert resolve({"path": "$.d", "format": "date"}, {"d": "1990-05-01"}) == "1990-05-01"
    assert resolve({"path": "$.d", "format": "datetime"}, {"d": "1990-05-01"}) == (
        "1990-05-01T00:00:00.000Z"
    )
    assert resolve({"path": "$.n", "format": "number"}, {"n": " 12 "}) == "12"
    assert resolve({"path": "$.n", "format": "number"}, {"n": 1.5}) == "1.5"
    assert resolve({"path": "$.n", "format": "number"}, {"n": "+1.50"}) == "1.5"
    # Text a float would round keeps its digits (it was written 1234567890123456.8).
    assert resolve({"path": "$.n", "format": "number"}, {"n": "1234567890123456.78"}) == (
        "1234567890123456.78"
    )
    assert resolve({"path": "$.n", "format": "number"}, {"n": "0.1234567890123456789"}) == (
        "0.1234567890123456789"
    )
    assert resolve({"path": "$.b", "format": "boolean"}, {"b": "Yes"}) == "true"
    assert resolve({"path": "$.j", "format": "json"}, {"j": "x"}) == '"x"'


@pytest.mark.parametrize(
    ("spec", "value", "reason"),
    [
        (
            {"path": "$.v", "format": "datetime"},
            "2026-11-30T10:00:00",
            "a date-time without a UTC offset: a string of 19 characters",
        ),
        ({"path": "$.v", "format": "number"}, "12a", "not a number: a string of 3 characters"),
        (
            {"path": "$.v", "format": "number"},
            "1.00000000000000000001e-50",
            "a number of more than 64 digits in decimal",
        ),
        ({"path": "$.v", "format": "number"}, True, "not a number: a boolean"),
        ({"path": "$.v", "format": "number"}, [7, 8], "not a number: an array of 2 items"),
        ({"path": "$.v", "format": "boolean"}, "maybe", "not a boolean: a string of 5 characters"),
        ({"path": "$.v", "format": "boolean"}, 2.5, "not a boolean: a number"),
        ({"path": "$.v", "format": "date"}, 19900501, "not a date: a number"),
        ({"path": "$.v", "format": "date"}, {"y": 1990}, "not a date: an object of 1 key"),
        (
            {"path": "$.v", "format": "date"},
            "0001-01-01T00:00:00+01:00",
            "out of range once converted to UTC: a string of 25 characters",
        ),
        (
            {"path": "$.v", "format": "datetime"},
            "9999-12-31T23:59:59-01:00",
            "out of range once converted to UTC: a string of 25 characters",
        ),
    ],
)
def test_unreadable_values_raise_value_problem(spec: object, value: object, reason: str) -> None:
    from selligent_segment.destination import ValueProblem

    with pytest.raises(ValueProblem) as info:
        resolve(spec, {"v": value})
    assert info.value.reason == reason  # what the value is, never the value
    assert str(info.value) == reason


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ("traits.email", "is not a path"),
        ({"path": "$.a", "template": "{{b}}"}, "exactly one of"),
        ({"template": "no placeholder"}, "no {{placeholder}}"),
        ({"template": "{{a}} }}"}, "unbalanced"),
        ({"literal": "x", "fallback": "$.y"}, "fallback makes no sense"),
        ({"literal": ["x"]}, "literal must be"),
        ({"path": "$.a", "fallback": "b"}, "fallback 'b' is not a path"),
        ({"path": "$.a", "lower": "yes"}, "lower must be"),
        ({"path": "$.a", "max_length": True}, "max_length must be"),
        ({"path": "$.a", "colour": 1}, "unknown directive colour"),
        (42, "a source is a path string or a table"),
    ],
)
def test_invalid_sources_say_why(spec: object, reason: str) -> None:
    problems = compile_source(spec)
    assert isinstance(problems, list)
    assert any(reason in p for p in problems), problems


def test_paths_through_lists_and_non_objects_resolve_to_nothing() -> None:
    event = {"a": {"b": {"c": "deep"}}, "l": [{"x": [1, 2]}], "s": "text"}
    assert resolve("$.a.b.c", event) == "deep"
    assert resolve("$.a.b.c.d", event) is None
    assert resolve("$.a.x.c", event) is None
    assert resolve("$.s.b.c", event) is None
    assert resolve("$.a.b.c.d.e", {"a": {"b": {"c": {"d": {"e": 5}}}}}) == "5"
    assert resolve("$.a.b.c.d.e", {"a": {"b": "x"}}) is None
    assert resolve("$.a.b.c.d.e", {"a": {"b": {"c": {}}}}) is None
    assert resolve("$.l[0].x[1]", event) == "2"
    assert resolve("$.l[0].y[1]", event) is None
    assert resolve("$.s[0]", event) is None
    assert resolve("$.l[0].x[1].z", event) is None
    assert resolve("$", {"k": 1}) == '{"k":1}'
    assert resolve("$.s.b", event) is None
    assert resolve("$.a.b", event) == '{"c":"deep"}'
    assert resolve("$.a.q", event) is None
    assert resolve("$.n", {"n": 7}) == "7"
    assert resolve("$.n", {}) is None


def test_formats_keep_booleans_and_reject_what_they_cannot_read() -> None:
    assert resolve({"path": "$.b", "format": "boolean"}, {"b": False}) == "false"
    assert resolve({"path": "$.b", "format": "boolean"}, {"b": 0}) == "false"
    assert resolve({"path": "$.b", "format": "boolean"}, {"b": "NO"}) == "false"
    assert resolve({"path": "$.n", "format": "number"}, {"n": "1e3"}) == "1000"
    assert resolve({"path": "$.d", "format": "date"}, {"d": "2026-11-30T10:00:00"}) == (
        "2026-11-30"
    )
    assert resolve({"path": "$.d", "format": "date"}, {"d": None}) == ""
    from selligent_segment.destination import ValueProblem

    assert resolve({"path": "$.n", "format": "number"}, {"n": "-.5"}) == "-0.5"
    assert resolve({"path": "$.n", "format": "number"}, {"n": "5e-7"}) == "0.0000005"
    # float() reads these; a JSON number is none of them (Unicode digits, underscores).
    odd = ("Infinity", "\u0661\u0662", "1_000", "0x10", "1e", "--1", "\uff11")
    for value in ("inf", "nan", {"x": 1}, *odd):
        with pytest.raises(ValueProblem, match="not a number"):
            resolve({"path": "$.n", "format": "number"}, {"n": value})
    with pytest.raises(ValueProblem, match="not an ISO-8601 date"):
        resolve({"path": "$.d", "format": "date"}, {"d": "2026-13-45"})


def test_more_invalid_sources() -> None:
    for spec, reason in [
        ({"template": 5}, "template must be a string"),
        ({"template": "{{a b}}"}, "is not a path"),
        ({"path": 5}, "path must be a path string"),
        ({"path": "$.a", "format": "money"}, "format 'money' is not one of"),
    ]:
        problems = compile_source(spec)
        assert isinstance(problems, list)
        assert any(reason in p for p in problems), (spec, problems)
    source = compile_source({"path": "$.a", "fallback": ["$.b", "$.c"]})
    assert isinstance(source, Source)
    assert source.paths == ("$.a", "$.b", "$.c")
    assert source.resolve({"c": "third"}) == "third"
    assert source.resolve({"a": None}) == ""  # a null found, nothing better after it


def test_hostile_event_names_and_types_are_skipped_not_raised() -> None:
    tenant = make_tenant(track={"list": "E", "events": ["Order Completed"]})
    base = {"type": "track", "messageId": "m", "userId": "u"}
    assert map_event(tenant, {**base, "event": ["a", "list"]}) == Skipped(
        "event None is not in track.events"
    )
    unfiltered = map_event(make_tenant(), {**base, "event": {"an": "object"}})
    assert isinstance(unfiltered, MappedRow)  # loaded as any event; its name as JSON
    long_type = map_event(tenant, {"type": "x" * 500, "messageId": "m"})
    assert isinstance(long_type, Skipped)
    assert len(long_type.reason) < 120


def test_values_orjson_refuses_still_become_json() -> None:
    assert to_text([2**70, {"a": 1}]) == f'[{2**70},{{"a":1}}]'
    fused = compile_source({"path": "$.v", "format": "json"})
    assert isinstance(fused, Source)
    assert fused.resolve({"v": {"big": -(2**80)}}) == f'{{"big":{-(2**80)}}}'


def test_numeric_text_with_an_exponent_decimal_refuses_is_a_value_problem() -> None:
    """``"1e-99999999999999999999"`` matched the number pattern and float() read it as 0,
    then ``Decimal`` raised InvalidOperation, uncaught: the whole batch answered 500 on
    every retry (found by a review). It is a value its format cannot read."""
    from selligent_segment.destination import ValueProblem

    for text in ("1e-99999999999999999999", "-1.5E+99999999999999999999"):
        with pytest.raises(ValueProblem, match="not a number: a string of"):
            resolve({"path": "$.n", "format": "number"}, {"n": text})


def test_a_resolver_raising_unexpectedly_refuses_its_event_alone(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Any exception a resolver raised other than ValueProblem escaped map_event and made
    the receiver answer 500 for the whole batch (found by a review). It is now a RowError
    for that event, logged by its type only, never the value."""
    from selligent_segment.destination import _source

    def broken(value: Any) -> str:
        raise ArithmeticError(f"cannot read {value}")

    monkeypatch.setitem(_source._FORMATTERS, "number", broken)  # type: ignore[index]
    fields = {"customer_id": "$.userId", "total": {"path": "$.traits.n", "format": "number"}}
    tenant = make_tenant(identify={"list": "C", "fields": fields})
    event = {"type": "identify", "messageId": "m", "userId": "u", "traits": {"n": "secret-7"}}
    with pytest.raises(RowError) as caught:
        map_event(tenant, event)
    assert caught.value.column == "total"
    assert caught.value.reason == "an unexpected error reading the value (ArithmeticError)"
    assert "secret-7" not in caplog.text + str(caught.value)
    assert "ArithmeticError" in caplog.text


def test_tiny_or_huge_exponents_are_refused_without_expanding_them() -> None:
    """``"1e-999999999"`` was expanded to a billion zeros before the 64-digit check: 19 s
    of a blocked event loop and about 1 GB (found by a review). The digits are now counted
    from the exponent first; the limit is the same."""
    from selligent_segment.destination import ValueProblem

    for text in ("1e-999999999", "1e300", "5e-324", "1e-64", "1e64", "1" * 65 + ".5"):
        with pytest.raises(ValueProblem, match="more than 64 digits in decimal"):
            resolve({"path": "$.n", "format": "number"}, {"n": text})
    assert resolve({"path": "$.n", "format": "number"}, {"n": "1e-63"}) == "0." + "0" * 62 + "1"
    assert resolve({"path": "$.n", "format": "number"}, {"n": "1e63"}) == "1" + "0" * 63
    assert resolve({"path": "$.n", "format": "number"}, {"n": "-1.5e-62"}) == (
        "-0." + "0" * 61 + "15"
    )
    # what is written counts, not the text: zeros that say nothing are no digits
    assert resolve({"path": "$.n", "format": "number"}, {"n": "0e999999999"}) == "0"
    assert resolve({"path": "$.n", "format": "number"}, {"n": "1." + "0" * 100}) == "1"


def test_integer_text_is_capped_at_64_digits_and_normalised() -> None:
    """Integer text under ``format = "number"`` skipped the 64-digit limit and kept its
    leading zeros and ``-0`` (found by a review): it is now held to the same limit and
    written as the integer it is."""
    from selligent_segment.destination import ValueProblem

    number = {"path": "$.n", "format": "number"}
    assert resolve(number, {"n": "007"}) == "7"
    assert resolve(number, {"n": "-0"}) == "0"
    assert resolve(number, {"n": "-000"}) == "0"
    assert resolve(number, {"n": "+12"}) == "12"
    assert resolve(number, {"n": "0" * 100_000 + "42"}) == "42"
    assert resolve(number, {"n": "-" + "9" * 64}) == "-" + "9" * 64
    for text in ("1" + "0" * 64, "1" * 5000):
        with pytest.raises(ValueProblem, match="more than 64 digits in decimal"):
            resolve(number, {"n": text})
