"""Tracking tokens (inputs/tracking/_token.py): sealed, opened, and refused when anything
in them was changed, their key is unknown, or they are expired."""

from __future__ import annotations

import base64
from typing import Any

import attrs
import orjson
import pytest

from selligent_segment import ConfigurationError
from selligent_segment.inputs.tracking import Token, TokenRefused, TrackingKeys
from selligent_segment.inputs.tracking._token import _mac, seal, signature, unseal

K1 = b"k1-secret-" + b"1" * 32
K2 = b"k2-secret-" + b"2" * 32
KEYS = TrackingKeys({"k1": K1, "k2": K2}, "k1")
SENT = 1_790_000_000
TOKEN = Token(
    kind="click",
    sent_at=SENT,
    tenant="acme",
    user_id="u-1",
    email="ada@example.com",
    email_id="em-42",
    campaign_id="c-7",
    link_url="https://example.com/offer",
    link_id="l-1",
    list_id="weekly",
)


def _open(text: str, keys: TrackingKeys = KEYS, now: float = SENT + 60) -> Token:
    return unseal(text, keys, now=now, max_age=86_400)


def _payload(text: str) -> list[Any]:
    body = text.split(".")[1]
    values: list[Any] = orjson.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    return values


def _with_payload(text: str, values: list[Any]) -> str:
    key_id, _, mac = text.split(".")
    body = base64.urlsafe_b64encode(orjson.dumps(values)).rstrip(b"=").decode()
    return f"{key_id}.{body}.{mac}"


def test_a_sealed_token_opens_to_the_same_fields() -> None:
    text = seal(TOKEN, KEYS)
    assert _open(text) == TOKEN
    assert set(text) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")
    assert signature(text) == text.split(".")[2]


def test_absent_fields_stay_absent() -> None:
    token = Token(kind="open", sent_at=SENT, email="ada@example.com")
    assert _open(seal(token, KEYS)) == token


@pytest.mark.parametrize("index", range(10))
def test_changing_any_sealed_field_is_refused(index: int) -> None:
    text = seal(TOKEN, KEYS)
    values = _payload(text)
    assert len(values) == 10  # kind, sent_at and the eight fields
    changed = list(values)
    changed[index] = "u" if index == 0 else (SENT - 1 if index == 1 else f"{values[index]}x")
    with pytest.raises(TokenRefused):
        _open(_with_payload(text, changed))
    # The same payload, signed, is accepted: it is the MAC that refuses it.
    key_id, body, _ = _with_payload(text, changed).split(".")
    mac = base64.urlsafe_b64encode(_mac(K1, f"{key_id}.{body}")).rstrip(b"=").decode()
    assert _open(f"{key_id}.{body}.{mac}") != TOKEN


def test_a_changed_mac_or_key_id_is_refused() -> None:
    text = seal(TOKEN, KEYS)
    key_id, body, mac = text.split(".")
    flipped = ("A" if mac[0] != "A" else "B") + mac[1:]
    for bad in (f"{key_id}.{body}.{flipped}", f"k2.{body}.{mac}", f"{key_id}.{body}.{mac[:-2]}"):
        with pytest.raises(TokenRefused):
            _open(bad)


@pytest.mark.parametrize(
    "text",
    ["", "k1", "k1.abc", "k1.a.b.c", "zz.abc.def", "k1.!!!.abc", "k1.é.abc", "k1..", "." * 3],
)
def test_text_that_is_not_a_token_is_refused_with_one_message(text: str) -> None:
    with pytest.raises(TokenRefused) as caught:
        _open(text)
    assert str(caught.value) == "invalid or expired tracking link"


def test_a_signed_payload_of_the_wrong_shape_is_refused_not_a_crash() -> None:
    for values in ([], ["c"], ["x", SENT], ["c", "soon"], ["c", SENT, 5], {"a": 1}, ["c", 1.5]):
        body = base64.urlsafe_b64encode(orjson.dumps(values)).rstrip(b"=").decode()
        mac = base64.urlsafe_b64encode(_mac(K1, f"k1.{body}")).rstrip(b"=").decode()
        with pytest.raises(TokenRefused):
            _open(f"k1.{body}.{mac}")


def test_expired_and_future_tokens_are_refused() -> None:
    text = seal(TOKEN, KEYS)
    assert _open(text, now=SENT + 86_400) == TOKEN
    with pytest.raises(TokenRefused):
        _open(text, now=SENT + 86_401)
    with pytest.raises(TokenRefused):
        _open(text, now=SENT - 301)
    assert unseal(text, KEYS, now=SENT + 10**9, max_age=None) == TOKEN


def test_rotation_accepts_old_keys_until_they_are_dropped() -> None:
    old = seal(TOKEN, KEYS)
    rotated = TrackingKeys({"k1": K1, "k2": K2}, "k2")
    new = seal(TOKEN, rotated)
    assert new.startswith("k2.")
    assert _open(old, rotated) == TOKEN
    assert _open(new, KEYS) == TOKEN
    with pytest.raises(TokenRefused):
        _open(old, TrackingKeys({"k2": K2}, "k2"))


def test_a_key_of_another_id_does_not_verify() -> None:
    # The same secret under another id: the id is part of what is signed.
    text = seal(TOKEN, TrackingKeys({"a": K1}, "a"))
    with pytest.raises(TokenRefused):
        _open("b" + text[1:], TrackingKeys({"b": K1}, "b"))


@pytest.mark.parametrize(
    ("keys", "signing", "setting"),
    [
        ({}, "k1", "keys"),
        ({"k1": b"short"}, "k1", "keys['k1']"),
        ({"k 1": K1}, "k 1", "keys"),
        ({"k1": 5}, "k1", "keys['k1']"),
        ({"k1": K1}, "k2", "signing"),
    ],
)
def test_invalid_keys_are_refused_naming_the_setting(
    keys: dict[str, Any], signing: str, setting: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        TrackingKeys(keys, signing)
    assert caught.value.setting == setting
    assert "secret" not in str(caught.value)


def test_a_secret_given_where_a_key_id_goes_is_not_shown() -> None:
    """Found by a review: a secret passed as ``signing`` (or a mapping the wrong way round,
    secret to id) was written whole into the ConfigurationError, and so into startup
    crash logs and error trackers."""
    secret = "9f" * 32
    key_id_shaped = "7c6ee922f3031528a7f42fa3ddba48a7"  # secrets.token_hex(16): 32 characters
    for make in (
        lambda: TrackingKeys({"k1": K1}, secret),
        lambda: TrackingKeys({secret: "k1" * 16}, "k1"),
        lambda: TrackingKeys({key_id_shaped: "k1"}, "k1"),  # found by a second review
        lambda: TrackingKeys({"k1": K1}, "\u00e9" * 16),  # 32 bytes
    ):
        with pytest.raises(ConfigurationError) as caught:
            make()
        text = str(caught.value)
        assert secret[:12] not in text
        assert key_id_shaped[:12] not in text
        assert "\u00e9" * 4 not in text


def test_secrets_are_never_shown() -> None:
    assert "secret" not in repr(KEYS)
    assert "k1" in repr(KEYS)
    assert "secret" not in repr(attrs.evolve(KEYS, signing="k2"))
