"""Tests of how names and values are echoed in error messages: escaped and short."""

from __future__ import annotations

import logging

import pytest

from selligent_segment import ConfigurationError
from selligent_segment._errors import shown
from selligent_segment._validate import check_number
from selligent_segment.delivery._endpoint import resolve_endpoint
from selligent_segment.delivery._keys import WriteKeys

HOSTILE = "\x1b[2J\x1b]0;owned\x07\x00\x7f\u202e\u200b"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("colour", "'colour'"),
        ("it's", '"it\'s"'),
        ("\x1b[31m", "'\\x1b[31m'"),
        ("\u202eexe.txt", "'\\u202eexe.txt'"),
        ("a\x00b\x7f", "'a\\x00b\\x7f'"),
        ("zoë", "'zoë'"),
        (3, "3"),
        (None, "None"),
        (1.5, "1.5"),
        (b"\x1b", "b'\\x1b'"),
    ],
)
def test_shown_is_the_repr_with_unprintable_characters_escaped(
    value: object, expected: str
) -> None:
    assert shown(value) == expected


def test_shown_without_quotes_leaves_plain_names_alone_and_quotes_the_rest() -> None:
    assert shown("colour", quote=False) == "colour"
    assert shown("properties.meta[2]", quote=False) == "properties.meta[2]"
    assert shown("\x1b[31m", quote=False) == "'\\x1b[31m'"
    assert shown(7, quote=False) == "7"


def test_shown_caps_long_values_with_their_full_length() -> None:
    assert shown("n" * 100_000) == "'" + "n" * 100 + "'... (100,000 characters)"
    assert shown("n" * 100_000, quote=False) == "n" * 100 + "... (100,000 characters)"
    assert shown("\x1b" * 100_000, quote=False) == "'" + "\\x1b" * 100 + "'... (100,000 characters)"
    assert shown("n" * 100) == "'" + "n" * 100 + "'"
    assert shown(10**5000) == "<an integer of more than 100 digits>"  # repr would raise
    assert shown(list(range(100_000))).endswith(" characters)")


def test_shown_survives_a_broken_repr() -> None:
    class Broken:
        def __repr__(self) -> str:
            raise RuntimeError("no")

    assert shown(Broken()) == "<Broken>"


def test_shown_never_calls_a_str_subclass_repr() -> None:
    class Sneaky(str):
        def __repr__(self) -> str:
            return "\x1b[2J"

    assert shown(Sneaky("x")) == "'x'"


def no_hostile_text(text: str) -> bool:
    return not any(char in text for char in "\x1b\x07\x00\x7f\u202e\u200b")


@pytest.mark.parametrize("tenant", [HOSTILE, "ac\x1bme", "\u202e", "ok\x00"])
def test_write_keys_refuse_tenant_names_with_control_characters(tenant: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        WriteKeys(None, {tenant: "key-1", "fine": "key-2"})
    assert info.value.setting == "write_keys"
    assert "no control or format character" in info.value.reason
    assert no_hostile_text(str(info.value))


def test_write_key_errors_show_the_tenant_short_and_never_the_key() -> None:
    tenant = "t" * 100_000
    with pytest.raises(ConfigurationError) as info:
        WriteKeys(None, {tenant: " secret-key "})
    assert "(100,000 characters)" in str(info.value)
    assert "secret" not in str(info.value)
    assert len(str(info.value)) < 400


def test_resolver_failure_log_shows_the_tenant_escaped(caplog: pytest.LogCaptureFixture) -> None:
    def resolver(tenant: str) -> str:
        raise KeyError(tenant)

    keys = WriteKeys(None, resolver)
    with caplog.at_level(logging.ERROR, logger="selligent_segment"):
        assert keys.resolve("ac\x1bme") is None
    assert "'ac\\x1bme'" in caplog.text
    assert "\x1b" not in caplog.text


@pytest.mark.parametrize(
    ("endpoint", "region", "part"),
    [
        (None, HOSTILE, "must be 'us' or 'eu', got "),
        (None, "r" * 100_000, "(100,000 characters)"),
        ("http://" + "h" * 100_000 + ".example", "us", "(100,008 characters)"),
        ("https://host:" + "9" * 100_000, "us", "is not a valid URL ("),
    ],
    ids=["hostile-region", "long-region", "long-host", "long-port"],
)
def test_endpoint_errors_show_values_escaped_and_short(
    endpoint: str | None, region: str, part: str
) -> None:
    with pytest.raises(ConfigurationError) as info:
        resolve_endpoint(endpoint, region, False)
    assert part in str(info.value)
    assert no_hostile_text(str(info.value))
    assert len(str(info.value)) < 500


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (10**5000, "must be at most 10, got <an integer of more than 100 digits>"),
        (-(10**5000), "must be at least 0, got <an integer of more than 100 digits>"),
        (HOSTILE, "must be a number, got str"),
    ],
    ids=["huge", "huge-negative", "text"],
)
def test_numeric_settings_refuse_huge_integers_with_a_configuration_error(
    value: object, reason: str
) -> None:
    with pytest.raises(ConfigurationError) as info:
        check_number("batch_size", value, minimum=0, maximum=10)
    assert str(info.value) == f"batch_size: {reason}"


def test_retry_policy_errors_show_a_huge_integer_by_its_size() -> None:
    from selligent_segment import ConfigurationError, RetryPolicy

    with pytest.raises(ConfigurationError, match="max_attempts") as info:
        RetryPolicy(max_attempts=-(10**5000))
    assert "an integer of more than" in str(info.value)
    assert len(str(info.value)) < 200


def test_an_unknown_tenant_is_shown_escaped_and_short() -> None:
    from selligent_segment import UnknownTenant

    text = str(UnknownTenant("\x1b[31m" + "t" * 10_000))
    assert "\x1b" not in text
    assert "\\x1b" in text
    assert len(text) < 200


def test_dead_records_and_damaged_journal_bytes_never_show_their_bytes_in_a_repr() -> None:
    from selligent_segment.spool._journal import Damaged
    from selligent_segment.spool._statements import DeadMessage

    body = b'{"email": "ada@example.com"}'
    assert "ada@example.com" not in repr(DeadMessage("t", "m", "opened", body, "too_large"))
    assert "ada@example.com" not in repr(Damaged(5, 40, body))


@pytest.mark.parametrize(
    "key", ["SEC RET", "sec\tret", "secret\x00", "sec\u200bret", "sec\u00a0ret"], ids=repr
)
def test_a_write_key_with_a_space_or_control_character_inside_is_refused(key: str) -> None:
    """A pasted key with a space or an invisible character inside would be refused by
    Segment on every request (401); it is refused on construction, never shown."""
    for make in (lambda: WriteKeys(key, None), lambda: WriteKeys(None, {"acme": key})):
        with pytest.raises(ConfigurationError) as info:
            make()
        assert "without spaces or control characters" in info.value.reason
        assert "sec" not in str(info.value).lower()
    keys = WriteKeys(None, {"acme": "fine"})
    with pytest.raises(ConfigurationError):
        keys.set("acme", key)
