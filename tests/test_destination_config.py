"""The destination's config file: loading, every problem at once, secrets only from the env."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from _destination import EXAMPLE
from _destination import tenant_table as tenant

from selligent_segment import ConfigurationError
from selligent_segment.destination import (
    SEED_FIELDS,
    SEED_KEYS,
    ConfigProblem,
    DestinationConfigError,
    load_config,
    parse_config,
)

ENV = {
    "ACME_SELLIGENT_API_KEY": "acme-key:acme-secret-value",
    "ACME_SEGMENT_SHARED_SECRET": "acme-shared-secret-value",
    "GLOBEX_SELLIGENT_API_KEY": "globex-key:globex-secret-value",
    "GLOBEX_SEGMENT_SHARED_SECRET": "globex-shared-secret-value",
}


def problems_of(data: dict[str, Any], env: dict[str, str] | None = None) -> list[ConfigProblem]:
    with pytest.raises(DestinationConfigError) as info:
        parse_config(data, {"KEY": "k:s"} if env is None else env)
    return list(info.value.problems)


def test_the_example_loads_with_both_tenants_and_their_mappings() -> None:
    config = load_config(EXAMPLE, ENV)
    assert list(config.tenants) == ["acme", "globex"]
    acme, globex = config.tenants["acme"], config.tenants["globex"]
    assert acme.identify is not None
    assert acme.identify.list == "CONTACTS"
    assert acme.identify.columns == tuple(SEED_FIELDS["identify"])
    assert acme.identify.key == SEED_KEYS["identify"]
    assert globex.track is not None
    assert globex.track.key == ("event_id",)
    assert globex.track.events == frozenset(
        {"Order Completed", "Subscription Started", "Subscription Cancelled"}
    )
    assert globex.organization == "globex-marketing"
    assert acme.load_back_selligent_events is False
    assert acme.whole_body_signature is False


def test_whole_body_signature_is_read_when_a_secret_is_named() -> None:
    data = {"tenants": {"acme": tenant(whole_body_signature=True, shared_secret_env="SECRET")}}
    config = parse_config(data, {"KEY": "k:s", "SECRET": "x"})
    assert config.tenants["acme"].whole_body_signature is True


def test_secrets_come_from_the_named_variables_and_are_never_shown() -> None:
    config = load_config(EXAMPLE, ENV)
    acme = config.tenants["acme"]
    assert acme.api_key() == "acme-key:acme-secret-value"
    assert acme.shared_secret() == b"acme-shared-secret-value"
    text = repr(config) + str(acme) + repr(acme.identify)
    for secret in ENV.values():
        assert secret not in text
        assert secret.split(":")[-1] not in text


def test_a_secret_in_the_file_is_refused_and_not_echoed() -> None:
    problems = problems_of({"tenants": {"acme": tenant(api_key_env="key:very-secret")}})
    assert [(p.tenant, p.table, p.column) for p in problems] == [("acme", None, None)]
    assert "must name an environment variable" in problems[0].reason
    assert "very-secret" not in str(problems[0])


def test_missing_or_malformed_secret_variables_are_problems_naming_the_variable() -> None:
    data = {"tenants": {"acme": tenant(shared_secret_env="SECRET")}}
    problems = problems_of(data, {"KEY": "no-colon-here"})
    reasons = [p.reason for p in problems]
    assert reasons == [
        "api_key_env: the environment variable KEY does not hold key:secret",
        "shared_secret_env: the environment variable SECRET is not set",
    ]
    assert "no-colon-here" not in "\n".join(reasons)
    # without require_secrets the same file loads, and asking for the key says why not
    config = parse_config(data, {"KEY": "no-colon-here"}, require_secrets=False)
    with pytest.raises(ConfigurationError, match="KEY: does not hold key:secret") as info:
        config.tenants["acme"].api_key()
    assert "no-colon-here" not in str(info.value)


def test_every_problem_of_the_file_is_reported_at_once_with_tenant_table_column() -> None:
    data = {
        "extra": 1,
        "tenants": {
            "good": tenant(),
            "bad": tenant(
                selligent_url="http://example.com",
                organization=None,
                colour="blue",
                identify={
                    "list": "CONTACTS",
                    "key": "id",
                    "fields": {
                        "email": {"path": "traits.email"},
                        "name": {"template": "{{traits.firstName"},
                        "age": {"path": "$.traits.age", "format": "years"},
                        "both": {"path": "$.a", "literal": "x"},
                    },
                },
                track={"list": "EVENTS", "events": []},
            ),
        },
    }
    problems = problems_of(data)
    where = [(p.tenant, p.table, p.column) for p in problems]
    assert (None, None, None) in where  # the unknown top-level key
    assert ("bad", None, None) in where
    assert ("bad", "identify", "email") in where
    assert ("bad", "identify", "name") in where
    assert ("bad", "identify", "age") in where
    assert ("bad", "identify", "both") in where
    assert ("bad", "identify", "id") in where  # the key column is not a field
    assert ("bad", "track", None) in where
    assert not any(p.tenant == "good" for p in problems)
    text = str(DestinationConfigError("f.toml", tuple(problems)))
    lines = text.splitlines()
    assert len(lines) == len(problems)
    assert all(line.startswith("f.toml: ") for line in lines)
    assert "f.toml: tenant bad, table identify, column age: format 'years' is not one of" in text
    assert "https://" in text
    assert "colour" in text


def test_a_file_that_is_not_utf8_is_one_problem_naming_the_byte(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes("# Soci\u00e9t\u00e9\n".encode("latin-1"))
    with pytest.raises(DestinationConfigError, match="not UTF-8, as TOML must be: byte 0xe9 at 6"):
        load_config(path)


def test_an_unreadable_file_and_invalid_toml_are_one_problem_each(tmp_path: Path) -> None:
    with pytest.raises(DestinationConfigError, match="cannot read the file"):
        load_config(tmp_path / "missing.toml", {})
    broken = tmp_path / "broken.toml"
    broken.write_text("[tenants.acme\n")
    with pytest.raises(DestinationConfigError, match="invalid TOML") as info:
        load_config(broken, {})
    assert len(info.value.problems) == 1


def test_a_tenant_must_map_something_and_a_file_must_have_tenants() -> None:
    problems = problems_of({"tenants": {"acme": tenant(identify=None, track=None)}})
    assert [p.reason for p in problems] == [
        "maps nothing: add [tenants.NAME.identify] and/or [tenants.NAME.track]"
    ]
    assert problems_of({})[0].reason == "no tenant: add a [tenants.NAME] table"


def test_events_is_only_for_track_and_http_only_for_loopback() -> None:
    problems = problems_of({"tenants": {"acme": tenant(identify={"list": "C", "events": ["X"]})}})
    assert [(p.table, p.reason.split(" (")[0]) for p in problems] == [
        ("identify", "unknown key events")
    ]
    config = parse_config(
        {"tenants": {"acme": tenant(selligent_url="http://127.0.0.1:8080/")}}, {"KEY": "k:s"}
    )
    assert config.tenants["acme"].selligent_url == "http://127.0.0.1:8080"


def test_an_explicit_key_and_fields_replace_the_seed() -> None:
    config = parse_config(
        {
            "tenants": {
                "acme": tenant(
                    identify={
                        "list": "C",
                        "key": ["email", "brand"],
                        "fields": {"email": "$.traits.email", "brand": {"literal": "acme"}},
                    }
                )
            }
        },
        {"KEY": "k:s"},
    )
    mapping = config.tenants["acme"].identify
    assert mapping is not None
    assert mapping.key == ("email", "brand")
    assert mapping.columns == ("email", "brand")


def test_a_key_naming_a_column_twice_is_a_problem() -> None:
    problems = problems_of(
        {
            "tenants": {
                "acme": tenant(
                    identify={"list": "C", "key": ["a", "a"], "fields": {"a": "$.userId"}}
                )
            }
        }
    )
    assert [p.reason for p in problems] == ["key names a column twice"]


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"selligent_url": None}, "selligent_url is required"),
        ({"selligent_url": "https://x.slgnt.eu/?a=1"}, "must have no query or fragment"),
        ({"selligent_url": "https://x.slgnt.eu#f"}, "must have no query or fragment"),
        (
            {"selligent_url": "https://x.slgnt.eu/Portal/Api/organizations/acme/"},
            "must be the instance's base URL: the library adds /Portal/Api/... itself",
        ),
        ({"selligent_url": "https://u@x.slgnt.eu"}, "must have no credentials"),
        ({"selligent_url": "https://x.slgnt.eu:99999"}, "not a URL"),
        ({"selligent_url": "acme.slgnt.eu"}, "must be an https:// URL"),
        ({"organization": "a/b"}, "organization is required"),
        ({"api_key_env": None}, "api_key_env is required"),
        ({"shared_secret_env": 5}, "shared_secret_env must name an environment variable"),
        ({"load_back_selligent_events": "yes"}, "load_back_selligent_events must be true"),
        ({"whole_body_signature": 1}, "whole_body_signature must be true or false"),
        (
            {"whole_body_signature": True, "shared_secret_env": None},
            "whole_body_signature needs shared_secret_env",
        ),
        ({"identify": "CONTACTS"}, "must be a table"),
        ({"identify": {"fields": {"customer_id": "$.userId"}}}, "list is required"),
        ({"identify": {"list": "C", "fields": {}}}, "fields must be a table"),
        ({"identify": {"list": "C", "key": []}}, "key must be a column name or a list"),
        ({"track": {"list": "E", "events": ["ok", 3]}}, "events must be a non-empty list"),
    ],
)
def test_each_tenant_setting_is_checked(overrides: dict[str, Any], reason: str) -> None:
    problems = problems_of({"tenants": {"acme": tenant(**overrides)}})
    assert any(reason in p.reason for p in problems), problems
    assert all(p.tenant == "acme" for p in problems)


@pytest.mark.parametrize(
    ("url", "shown", "reason"),
    [
        (
            "https://svc:Sup3rS3cret@acme.slgnt.eu/x?token=Sup3rS3cret#Sup3rS3cret",
            "'https://acme.slgnt.eu'",
            "must have no credentials (user:password@; the API key goes in api_key_env)",
        ),
        ("https://acme.slgnt.eu/?token=Sup3rS3cret", "'https://acme.slgnt.eu'", "query"),
        ("https://svc:Sup3rS3cret/", "'https://svc'", "its port is not a number"),
        ("https://svc:Sup3rS3cret@[::1", None, "its host part cannot be read"),
        ("svc:Sup3rS3cret@acme.slgnt.eu", None, "must be an https:// URL"),
        ("https:///svc:Sup3rS3cret@acme.slgnt.eu", None, "must be an https:// URL"),
    ],
)
def test_a_url_with_credentials_is_refused_without_echoing_them(
    url: str, shown: str | None, reason: str
) -> None:
    with pytest.raises(DestinationConfigError) as info:
        parse_config({"tenants": {"acme": tenant(selligent_url=url)}}, {"KEY": "k:s"})
    text = str(info.value)
    assert "Sup3rS3cret" not in text
    assert "svc:" not in text
    assert text.startswith("<config>: tenant acme: selligent_url ")
    assert reason in text
    if shown is None:
        assert text.startswith("<config>: tenant acme: selligent_url must be") or (
            text.startswith("<config>: tenant acme: selligent_url is not a URL")
        )
    else:
        assert text.startswith(f"<config>: tenant acme: selligent_url {shown}: ")


def test_a_literal_its_format_cannot_read_is_a_problem_of_the_file() -> None:
    fields = {
        "customer_id": "$.userId",
        "opt_in": {"literal": "maybe", "format": "boolean"},
        "score": {"literal": True, "format": "number"},
        "since": {"literal": "2026-01-01T00:00:00", "format": "datetime"},
        "ok_flag": {"literal": "Yes", "format": "boolean", "max_length": 3},
        "ok_day": {"literal": "2026-11-30T23:30:00-02:00", "format": "date"},
        "cleared": {"literal": "", "format": "number"},
    }
    problems = problems_of({"tenants": {"acme": tenant(identify={"list": "C", "fields": fields})}})
    assert [(p.tenant, p.table, p.column, p.reason) for p in problems] == [
        (
            "acme",
            "identify",
            "opt_in",
            "format 'boolean' cannot read the literal 'maybe' "
            "(not a boolean: a string of 5 characters)",
        ),
        (
            "acme",
            "identify",
            "score",
            "format 'number' cannot read the literal True (not a number: a boolean)",
        ),
        (
            "acme",
            "identify",
            "since",
            "format 'datetime' cannot read the literal '2026-01-01T00:00:00' "
            "(a date-time without a UTC offset: a string of 19 characters)",
        ),
    ]
    for column in ("opt_in", "score", "since"):
        del fields[column]
    config = parse_config(
        {"tenants": {"acme": tenant(identify={"list": "C", "fields": fields})}}, {"KEY": "k:s"}
    )
    identify = config.tenants["acme"].identify
    assert identify is not None
    assert [f.source.resolve({}) for f in identify.fields[1:]] == ["tru", "2026-12-01", ""]


def test_a_tenant_that_is_not_a_table_and_a_bad_name_are_problems() -> None:
    problems = problems_of({"tenants": {"acme": "x", "-bad": tenant()}})
    assert [(p.tenant, p.reason.split(":")[0]) for p in problems] == [
        ("acme", "must be a table"),
        ("-bad", "a tenant name is 1 to 64 letters, digits, '_', '.', '-', starting alphanumeric"),
    ]


def test_secret_accessors_name_the_variable_when_it_is_unset_or_broken() -> None:
    env = {"KEY": "k:s\nX-Evil: 1", "SECRET": ""}
    config = parse_config(
        {"tenants": {"acme": tenant(shared_secret_env="SECRET")}}, env, require_secrets=False
    )
    acme = config.tenants["acme"]
    with pytest.raises(ConfigurationError, match="SECRET: is not set"):
        acme.shared_secret()
    with pytest.raises(ConfigurationError, match="KEY: holds a line break") as info:
        acme.api_key()
    assert "Evil" not in str(info.value)
    euro = parse_config(
        {"tenants": {"acme": tenant()}}, {"KEY": "k:s3cr\u20acT"}, require_secrets=False
    )
    with pytest.raises(ConfigurationError, match="KEY: holds a character an HTTP header") as info:
        euro.tenants["acme"].api_key()  # http.client raised at every send, showing a piece
    assert "s3cr" not in str(info.value)
    without = parse_config({"tenants": {"acme": tenant()}}, {"KEY": "k:s"})
    assert without.tenants["acme"].shared_secret() is None
    assert without.tenants["acme"].mapping("identify") is without.tenants["acme"].identify
    assert without.tenants["acme"].mapping("page") is None


def test_secrets_are_read_when_asked_not_copied_at_load() -> None:
    env = {"KEY": "old:one"}
    acme = parse_config({"tenants": {"acme": tenant()}}, env).tenants["acme"]
    env["KEY"] = "new:two"
    assert acme.api_key() == "new:two"


def test_the_shared_secret_variable_may_hold_several_secrets_for_a_rotation() -> None:
    """One secret per tenant: rotating it in Segment refused (401, final for Segment)
    every event signed with the new one until a restart with the new value (found by a
    review). The variable may hold several, comma-separated, each accepted."""
    env = {"KEY": "k:s", "SECRET": "old-secret-000000,new-secret-000000", "NONE": ""}
    config = parse_config(
        {"tenants": {"acme": tenant(shared_secret_env="SECRET")}}, env, require_secrets=True
    )
    acme = config.tenants["acme"]
    assert acme.shared_secrets() == (b"old-secret-000000", b"new-secret-000000")
    assert acme.shared_secret() == b"old-secret-000000"
    assert "secret" not in repr(acme).replace("shared_secret_env", "")
    empty = parse_config(
        {"tenants": {"acme": tenant(shared_secret_env="NONE")}}, env, require_secrets=False
    ).tenants["acme"]
    with pytest.raises(ConfigurationError, match="NONE: is not set") as info:
        empty.shared_secrets()
    assert "," not in str(info.value)
    data = {"tenants": {"acme": tenant(shared_secret_env="NONE")}}
    reasons = [p.reason for p in problems_of(data, env)]
    assert reasons == ["shared_secret_env: the environment variable NONE is not set"]


def test_a_secret_holding_a_comma_stays_one_secret_unless_every_piece_is_long() -> None:
    """Found by a second review: splitting every value on commas broke a secret holding a
    comma (401 on every request after the upgrade) and let a piece of it, however short,
    sign requests on its own."""
    from selligent_segment.destination._config import _split_secrets

    assert _split_secrets("Zx81kq,Pw") == ["Zx81kq,Pw"]
    assert _split_secrets("  sekrit  ") == ["  sekrit  "]
    assert _split_secrets("a" * 16 + ",,") == ["a" * 16 + ",,"]
    assert _split_secrets("a" * 16 + "," + "b" * 16) == ["a" * 16, "b" * 16]
    assert _split_secrets("") == []
