"""Tests of event naming: profiles, global overrides, per-tenant overrides, validation."""

from __future__ import annotations

from typing import Any

import attrs
import pytest

from selligent_segment import PROFILES, ConfigurationError, EventKind, EventNaming

SELLIGENT = {
    EventKind.DELIVERED: "Email Delivered",
    EventKind.OPENED: "Email Opened",
    EventKind.LINK_CLICKED: "Email Link Clicked",
    EventKind.UNSUBSCRIBED: "Email Unsubscribed",
    EventKind.BOUNCED: "Email Bounced",
    EventKind.MARKED_AS_SPAM: "Email Marked as Spam",
}
SPEC = {**SELLIGENT, EventKind.UNSUBSCRIBED: "Unsubscribed"}


def test_the_two_profiles() -> None:
    assert set(PROFILES) == {"selligent", "segment-spec"}
    assert dict(PROFILES["selligent"]) == SELLIGENT
    assert dict(PROFILES["segment-spec"]) == SPEC


def test_profiles_are_read_only() -> None:
    with pytest.raises(TypeError):
        PROFILES["mine"] = {}  # type: ignore[index]
    with pytest.raises(TypeError):
        PROFILES["selligent"][EventKind.OPENED] = "Opened"  # type: ignore[index]


@pytest.mark.parametrize("kind", list(EventKind))
def test_default_profile_is_selligent(kind: EventKind) -> None:
    naming = EventNaming()
    assert naming.profile == "selligent"
    assert naming.name(kind) == SELLIGENT[kind]
    assert naming.name(kind, "any-tenant") == SELLIGENT[kind]


@pytest.mark.parametrize("kind", list(EventKind))
def test_segment_spec_profile(kind: EventKind) -> None:
    assert EventNaming(profile="segment-spec").name(kind) == SPEC[kind]


def test_only_the_unsubscribe_differs_between_profiles() -> None:
    differ = [k for k in EventKind if SELLIGENT[k] != SPEC[k]]
    assert differ == [EventKind.UNSUBSCRIBED]


def test_global_overrides_replace_profile_names() -> None:
    naming = EventNaming(overrides={EventKind.OPENED: "Opened It", "bounce": " Bounced "})
    assert naming.name(EventKind.OPENED) == "Opened It"
    assert naming.name(EventKind.BOUNCED) == "Bounced"  # alias key, trimmed name
    assert naming.name(EventKind.DELIVERED) == "Email Delivered"
    assert naming.name(EventKind.OPENED, "acme") == "Opened It"


def test_overrides_apply_on_top_of_any_profile() -> None:
    naming = EventNaming(profile="segment-spec", overrides={"delivered": "Delivered"})
    assert naming.name(EventKind.DELIVERED) == "Delivered"
    assert naming.name(EventKind.UNSUBSCRIBED) == "Unsubscribed"


def test_tenant_overrides_win_for_their_tenant_only() -> None:
    naming = EventNaming(
        overrides={"opened": "Global Open"},
        tenant_overrides={
            "acme": {"open": "Acme Open", "unsubscribed": "Acme Unsub"},
            "globex": {"spam": "Globex Spam"},
        },
    )
    assert naming.name(EventKind.OPENED, "acme") == "Acme Open"
    assert naming.name(EventKind.UNSUBSCRIBED, "acme") == "Acme Unsub"
    assert naming.name(EventKind.DELIVERED, "acme") == "Email Delivered"
    assert naming.name(EventKind.OPENED, "globex") == "Global Open"
    assert naming.name(EventKind.MARKED_AS_SPAM, "globex") == "Globex Spam"
    assert naming.name(EventKind.MARKED_AS_SPAM, "acme") == "Email Marked as Spam"
    assert naming.name(EventKind.OPENED, "initech") == "Global Open"
    assert naming.name(EventKind.OPENED) == "Global Open"
    assert naming.name(EventKind.UNSUBSCRIBED) == "Email Unsubscribed"


def test_tenant_names_are_exact() -> None:
    naming = EventNaming(tenant_overrides={"acme": {"opened": "Acme Open"}})
    assert naming.name(EventKind.OPENED, "ACME") == "Email Opened"
    assert naming.name(EventKind.OPENED, "") == "Email Opened"


def test_overrides_are_normalised_and_read_only() -> None:
    source: dict[Any, str] = {"click": "Clicked"}
    naming = EventNaming(overrides=source)
    assert dict(naming.overrides) == {EventKind.LINK_CLICKED: "Clicked"}
    source["click"] = "Changed"
    assert naming.name(EventKind.LINK_CLICKED) == "Clicked"
    with pytest.raises(TypeError):
        naming.overrides[EventKind.OPENED] = "x"  # type: ignore[index]


def test_naming_is_frozen() -> None:
    naming = EventNaming()
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        naming.profile = "segment-spec"  # type: ignore[misc]


def test_equal_settings_compare_equal() -> None:
    assert EventNaming(overrides={"open": "O"}) == EventNaming(overrides={EventKind.OPENED: "O"})
    assert EventNaming() != EventNaming(profile="segment-spec")


@pytest.mark.parametrize(
    ("kwargs", "setting", "reason_part"),
    [
        ({"profile": "mailchimp"}, "profile", "unknown profile 'mailchimp'"),
        ({"profile": "Segment-Spec"}, "profile", "unknown profile"),
        ({"overrides": ["opened"]}, "overrides", "expected a mapping, got list"),
        ({"overrides": {"sent": "Email Sent"}}, "overrides['sent']", "unknown event type 'sent'"),
        ({"overrides": {"opened": "  "}}, "overrides['opened']", "non-blank text"),
        ({"overrides": {"opened": 3}}, "overrides['opened']", "non-blank text"),
        ({"overrides": {3: "x"}}, "overrides[3]", "expected a string, got int"),
        ({"tenant_overrides": ["acme"]}, "tenant_overrides", "expected a mapping"),
        ({"tenant_overrides": {"acme": "x"}}, "tenant_overrides['acme']", "expected a mapping"),
        (
            {"tenant_overrides": {"acme": {"sent": "S"}}},
            "tenant_overrides['acme']['sent']",
            "unknown event type",
        ),
        (
            {"tenant_overrides": {"acme": {"bounced": ""}}},
            "tenant_overrides['acme']['bounced']",
            "non-blank text",
        ),
    ],
)
def test_invalid_settings_raise_configuration_error_naming_the_setting(
    kwargs: dict[str, Any], setting: str, reason_part: str
) -> None:
    with pytest.raises(ConfigurationError) as info:
        EventNaming(**kwargs)
    assert info.value.setting == setting
    assert reason_part in info.value.reason
    assert str(info.value) == f"{setting}: {info.value.reason}"
    assert isinstance(info.value, ValueError)


def test_unhashable_profile_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError) as info:
        EventNaming(profile=["selligent"])  # type: ignore[arg-type]
    assert info.value.setting == "profile"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"overrides": {"\x1b[2J\u202e": "x"}},
        {"overrides": {"o" * 100_000: "x"}},
        {"tenant_overrides": {"\x1b[2J" + "t" * 100_000: {"sent": "S"}}},
        {"profile": "\x1b]0;title\x07" + "p" * 100_000},
    ],
    ids=["hostile-kind", "long-kind", "long-tenant", "long-profile"],
)
def test_settings_echoed_in_errors_are_escaped_and_short(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError) as info:
        EventNaming(**kwargs)
    text = str(info.value)
    assert not any(char in text for char in "\x1b\x07\u202e")
    assert len(text) < 600
