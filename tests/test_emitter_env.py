"""Emitter.from_env and load_write_keys: the environment and the keys file become an
Emitter; every bad value is refused naming the variable (or the file) and never a key."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from selligent_segment import (
    ConfigurationError,
    Emitter,
    EventNaming,
    UnknownTenant,
    WriteKeysFileError,
    load_write_keys,
)
from selligent_segment._environment import VARIABLES
from selligent_segment.delivery._proxy import CA_VARIABLES, PROXY_VARIABLES
from selligent_segment.testing import LocalSegment

SECRET = "sk-very-secret-key"


def keys_file(tmp_path: Path, data: Any, name: str = "keys.json") -> str:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(path)


# -- load_write_keys --------------------------------------------------------------------------


def test_load_write_keys_returns_the_tenants_and_their_keys(tmp_path: Path) -> None:
    path = keys_file(tmp_path, {"acme": "key-acme", "globex": "key-globex"})
    assert load_write_keys(path) == {"acme": "key-acme", "globex": "key-globex"}
    assert load_write_keys(Path(path)) == {"acme": "key-acme", "globex": "key-globex"}


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("{not json", "invalid JSON ("),
        (f'{{"acme": {SECRET}}}', "invalid JSON (unexpected character"),  # an unquoted key
        ('["acme"]', 'expected a JSON object {"tenant": "key"}'),
        ('{"acme": 1}', 'expected a JSON object {"tenant": "key"}'),
        ("{}", "names no tenant (the object is empty)"),
        (f'{{"acme": " {SECRET} "}}', "tenant 'acme': a write key must be non-blank text"),
        (f'{{"acme": "{SECRET}", "globex": ""}}', "tenant 'globex': a write key must be"),
        (f'{{" ": "{SECRET}"}}', "tenant names must be non-blank text: ' '"),
        (f'{{"a\\u202eb": "{SECRET}"}}', "tenant names hold no control or format character"),
    ],
)
def test_load_write_keys_refuses_a_bad_file_naming_it_and_never_a_key(
    tmp_path: Path, content: str, reason: str
) -> None:
    path = keys_file(tmp_path, content)
    with pytest.raises(WriteKeysFileError) as refused:  # exported: callers can catch it
        load_write_keys(path)
    assert isinstance(refused.value, ConfigurationError)
    assert str(refused.value).startswith(f"{path}: {reason}")
    assert refused.value.path == path
    assert SECRET not in str(refused.value)


def test_load_write_keys_of_a_missing_file_says_it_cannot_read_it(tmp_path: Path) -> None:
    path = str(tmp_path / "nope.json")
    with pytest.raises(ConfigurationError, match=r"nope\.json: cannot read: No such file"):
        load_write_keys(path)


@pytest.mark.parametrize("value", [SECRET, f'{{"acme": "{SECRET}"}}', f"  {SECRET}  "])
def test_a_key_given_where_the_keys_file_goes_is_never_shown(value: str) -> None:
    """SELLIGENT_SEGMENT_WRITE_KEYS (or --write-keys) given a key, or the JSON itself, in
    place of a file's path (a mix-up with SEGMENT_WRITE_KEY): the error echoed the key."""
    with pytest.raises(ConfigurationError) as refused:
        Emitter.from_env({"SELLIGENT_SEGMENT_WRITE_KEYS": value})
    text = str(refused.value)
    assert SECRET not in text
    assert "names no file" in text
    assert text.startswith("SELLIGENT_SEGMENT_WRITE_KEYS: ")


# -- from_env ---------------------------------------------------------------------------------


def test_from_env_with_one_key_sends_every_record_with_it(local_segment: LocalSegment) -> None:
    env = {"SEGMENT_WRITE_KEY": "key-one", "SELLIGENT_SEGMENT_ENDPOINT": local_segment.url}
    with Emitter.from_env(env) as emitter:
        emitter.opened(email="ada@example.com", event_id="o-1")
        assert emitter.flush(timeout=10)
    assert [e["event"] for e in local_segment.events("key-one")] == ["Email Opened"]


def test_from_env_with_a_keys_file_sends_each_tenant_with_its_key(
    local_segment: LocalSegment, tmp_path: Path
) -> None:
    env = {
        "SELLIGENT_SEGMENT_WRITE_KEYS": keys_file(tmp_path, {"acme": "k-a", "globex": "k-g"}),
        "SELLIGENT_SEGMENT_ENDPOINT": local_segment.url,
    }
    with Emitter.from_env(env) as emitter:
        emitter.bounced(tenant="acme", email="ada@example.com", event_id="b-1")
        emitter.bounced(tenant="globex", email="ken@example.net", event_id="b-1")
        with pytest.raises(UnknownTenant):
            emitter.bounced(tenant="initech", email="ken@example.net", event_id="b-1")
        assert emitter.flush(timeout=10)
    assert len(local_segment.events("k-a")) == len(local_segment.events("k-g")) == 1


def test_from_env_reads_os_environ_by_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SEGMENT_WRITE_KEY", "key-one")
    monkeypatch.setenv("SELLIGENT_SEGMENT_REGION", "eu")
    monkeypatch.setenv("SELLIGENT_SEGMENT_THREADS", "3")
    monkeypatch.setenv("SELLIGENT_SEGMENT_TIMEOUT", "2.5")
    monkeypatch.setenv("SELLIGENT_SEGMENT_PROFILE", "segment-spec")
    monkeypatch.setenv("SELLIGENT_SEGMENT_SPOOL", str(tmp_path / "spool.db"))
    monkeypatch.delenv("SELLIGENT_SEGMENT_ENDPOINT", raising=False)
    monkeypatch.delenv("SELLIGENT_SEGMENT_WRITE_KEYS", raising=False)
    emitter = Emitter.from_env(handle_sigterm=False)
    try:
        config = emitter.config
        assert config.write_key == "key-one"
        assert (config.region, config.endpoint, config.threads, config.timeout) == (
            "eu",
            None,
            3,
            2.5,
        )
        assert config.naming == EventNaming(profile="segment-spec")
        assert config.spool == str(tmp_path / "spool.db")
        assert "events.eu1.segmentapis.com" in repr(emitter)
    finally:
        emitter.close(0)


def test_unset_and_empty_variables_keep_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    # The Emitter made directly reads this process's proxy and CA variables; from_env reads
    # the mapping's (none): the same defaults only where the process sets none either.
    for name in (*PROXY_VARIABLES, *CA_VARIABLES):
        monkeypatch.delenv(name, raising=False)
    env = {"SEGMENT_WRITE_KEY": "key-one", "SELLIGENT_SEGMENT_THREADS": "", "OTHER": "x"}
    emitter = Emitter.from_env(env, handle_sigterm=False)
    try:
        assert emitter.config == Emitter("key-one", handle_sigterm=False).config
    finally:
        emitter.close(0)


def test_keyword_overrides_win_over_the_environment(tmp_path: Path) -> None:
    env = {
        "SEGMENT_WRITE_KEY": "key-env",
        "SELLIGENT_SEGMENT_THREADS": "not a number",  # never read: overridden
        "SELLIGENT_SEGMENT_REGION": "eu",
    }
    emitter = Emitter.from_env(env, threads=4, write_keys={"acme": "key-acme"})
    try:
        assert emitter.config.threads == 4
        assert emitter.config.write_key is None  # write_keys= replaces both key variables
        assert emitter.config.region == "eu"
    finally:
        emitter.close(0)


@pytest.mark.parametrize(
    ("env", "variable", "reason"),
    [
        ({}, "SEGMENT_WRITE_KEY", "no write key: set SEGMENT_WRITE_KEY"),
        (
            {"SEGMENT_WRITE_KEY": SECRET, "SELLIGENT_SEGMENT_WRITE_KEYS": "keys.json"},
            "SEGMENT_WRITE_KEY",
            "and SELLIGENT_SEGMENT_WRITE_KEYS are both set",
        ),
        (
            {"SEGMENT_WRITE_KEY": f"{SECRET}\n"},
            "SEGMENT_WRITE_KEY",
            "a write key must be non-blank text without spaces or control characters",
        ),
        (
            {"SELLIGENT_SEGMENT_WRITE_KEYS": "/nonexistent/keys.json"},
            "SELLIGENT_SEGMENT_WRITE_KEYS",
            "/nonexistent/keys.json: cannot read",
        ),
        (
            {"SEGMENT_WRITE_KEY": SECRET, "SELLIGENT_SEGMENT_ENDPOINT": "ftp://x.test"},
            "SELLIGENT_SEGMENT_ENDPOINT",
            "must start with https:// or http://",
        ),
        (
            {"SEGMENT_WRITE_KEY": SECRET, "SELLIGENT_SEGMENT_REGION": "asia"},
            "SELLIGENT_SEGMENT_REGION",
            "must be 'us' or 'eu', got 'asia'",
        ),
        (
            {"SEGMENT_WRITE_KEY": SECRET, "SELLIGENT_SEGMENT_THREADS": "two"},
            "SELLIGENT_SEGMENT_THREADS",
            "must be an integer, got 'two'",
        ),
        (
            {"SEGMENT_WRITE_KEY": SECRET, "SELLIGENT_SEGMENT_THREADS": "0"},
            "SELLIGENT_SEGMENT_THREADS",
            "must be at least 1, got 0",
        ),
        (
            {"SEGMENT_WRITE_KEY": SECRET, "SELLIGENT_SEGMENT_TIMEOUT": "nan"},
            "SELLIGENT_SEGMENT_TIMEOUT",
            "must be finite",
        ),
        (
            {"SEGMENT_WRITE_KEY": SECRET, "SELLIGENT_SEGMENT_TIMEOUT": "soon"},
            "SELLIGENT_SEGMENT_TIMEOUT",
            "must be a number, got 'soon'",
        ),
        (
            {"SEGMENT_WRITE_KEY": SECRET, "SELLIGENT_SEGMENT_PROFILE": "fancy"},
            "SELLIGENT_SEGMENT_PROFILE",
            "unknown profile 'fancy'",
        ),
        (
            {"SEGMENT_WRITE_KEY": SECRET, "SELLIGENT_SEGMENT_SPOOL": "redis://db/x"},
            "SELLIGENT_SEGMENT_SPOOL",
            "",
        ),
    ],
)
def test_a_bad_variable_is_refused_naming_it_and_never_showing_the_key(
    env: dict[str, str], variable: str, reason: str
) -> None:
    with pytest.raises(ConfigurationError) as refused:
        Emitter.from_env(env)
    assert refused.value.setting == variable
    assert str(refused.value).startswith(f"{variable}: {reason}")
    assert SECRET not in str(refused.value)


def test_an_error_of_an_overridden_setting_names_the_setting() -> None:
    with pytest.raises(ConfigurationError) as refused:
        Emitter.from_env({"SEGMENT_WRITE_KEY": "k"}, threads=0)
    assert refused.value.setting == "threads"


def test_every_variable_is_in_the_documented_table() -> None:
    page = (Path(__file__).resolve().parent.parent / "docs" / "hooks.md").read_text()
    for variable in VARIABLES:
        assert f"| `{variable.name}` |" in page, variable.name
