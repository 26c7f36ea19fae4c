"""``selligent-segment destination check``: exit statuses, every problem, sample events."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from selligent_segment.cli import main

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = str(ROOT / "examples" / "destination.toml")
SECRETS = {
    "ACME_SELLIGENT_API_KEY": "acme:secret-one",
    "ACME_SEGMENT_SHARED_SECRET": "shared-one",
    "GLOBEX_SELLIGENT_API_KEY": "globex:secret-two",
    "GLOBEX_SEGMENT_SHARED_SECRET": "shared-two",
}


@pytest.fixture
def secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)


@pytest.mark.usefixtures("secrets")
def test_the_example_is_valid_and_its_samples_are_listed_without_values(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["destination", "check", "--config", EXAMPLE]) == 0
    captured = capsys.readouterr()
    assert "tenant acme, sample built-in identify: identify -> list CONTACTS: customer_id" in (
        captured.out
    )
    assert "tenant globex, sample built-in track: track -> list GLOBEX_EVENTS" in captured.out
    assert "example.com" not in captured.out + captured.err  # no values unless asked
    assert "valid (2 tenant(s), 2 sample(s) each)" in captured.err
    for value in SECRETS.values():
        assert value not in captured.out + captured.err


def test_unset_secrets_are_problems_unless_skipped(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in SECRETS:
        monkeypatch.delenv(name, raising=False)
    assert main(["destination", "check", "--config", EXAMPLE]) == 1
    err = capsys.readouterr().err
    assert f"{EXAMPLE}: tenant acme: api_key_env: the environment variable" in err
    assert err.count("is not set") == 4
    assert main(["destination", "check", "--config", EXAMPLE, "--skip-secrets"]) == 0


def test_every_problem_is_reported_and_the_status_is_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(
        """
[tenants.one]
selligent_url = "https://one.slgnt.eu"
organization = "one"
api_key_env = "ONE_KEY"
[tenants.one.identify]
list = "C"
fields = { customer_id = "$.userId", born = { path = "$.traits.b", format = "decade" } }

[tenants.two]
selligent_url = "ftp://two"
organization = "two"
api_key_env = "TWO_KEY"
[tenants.two.track]
list = "E"
key = "missing_column"
"""
    )
    assert main(["destination", "check", "--config", str(config), "--skip-secrets"]) == 1
    lines = capsys.readouterr().err.splitlines()
    assert f"{config}: tenant one, table identify, column born: format 'decade'" in lines[0]
    # The URL itself is not echoed (it could hold credentials), only what is wrong.
    assert lines[1].startswith(f"{config}: tenant two: selligent_url must be an https:// URL")
    assert lines[2] == (
        f"{config}: tenant two, table track, column missing_column: "
        "a key column must be one of the fields"
    )
    assert lines[-1] == f"selligent-segment: 3 problem(s) in {config}"


@pytest.mark.usefixtures("secrets")
def test_own_samples_that_cannot_be_mapped_are_problems_naming_the_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = tmp_path / "events.jsonl"
    anonymous = {"type": "identify", "messageId": "m1", "anonymousId": "a1", "traits": {}}
    batch = [{"type": "page", "messageId": "m2"}, {"type": "track", "messageId": "m3"}]
    events.write_bytes(
        orjson.dumps(anonymous) + b"\n\n" + orjson.dumps(batch) + b"\n{oops\n" + b"[1]\n"
    )
    status = main(["destination", "check", "--config", EXAMPLE, "--events", str(events), "--json"])
    assert status == 1
    captured = capsys.readouterr()
    report = orjson.loads(captured.out)
    assert report["valid"] is False
    assert (
        f"{EXAMPLE}: tenant acme, table identify, column customer_id: sample {events}:1: "
        "$.userId: no key value: $.userId is missing"
    ) in captured.err.splitlines()
    # globex falls back to the email, which this anonymous identify lacks too
    assert f"tenant globex, table identify, column customer_id: sample {events}:1: " in captured.err
    assert f"{events}:4: invalid JSON" in captured.err
    assert f"{events}:5: not a JSON object" in captured.err
    skipped = [s for s in report["samples"] if "skipped" in s]
    assert {s["skipped"] for s in skipped} >= {
        "type page is not loaded",
        "event None is not in track.events",
    }


@pytest.mark.usefixtures("secrets")
def test_check_reads_an_events_file_as_the_receiver_and_replay_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A lone surrogate escape (as ``JSON.stringify`` writes a cut emoji) is read by the
    receiver and by ``replay``; ``check --events`` refused it as invalid JSON."""
    events = tmp_path / "events.jsonl"
    events.write_bytes(
        b'{"type":"identify","messageId":"m1","userId":"u1","traits":{"firstName":"Ann \\ud83d"}}\n'
    )
    status = main(["destination", "check", "--config", EXAMPLE, "--events", str(events)])
    assert "invalid JSON" not in capsys.readouterr().err
    assert status == 0


def test_an_unreadable_config_or_events_file_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["destination", "check", "--config", str(tmp_path / "none.toml")]) == 2
    assert "cannot read the file" in capsys.readouterr().err
    status = main(
        [
            "destination",
            "check",
            "--config",
            EXAMPLE,
            "--skip-secrets",
            "--events",
            str(tmp_path / "none.jsonl"),
        ]
    )
    assert status == 2
    assert "--events" in capsys.readouterr().err


def test_the_group_requires_a_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["destination"])
    assert info.value.code == 2
    assert "required: COMMAND" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["destination", "--help"])
    assert info.value.code == 0
    assert "validate a destination config file" in capsys.readouterr().out


@pytest.mark.usefixtures("secrets")
def test_tenant_restricts_the_samples_to_the_named_tenants(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["destination", "check", "--config", EXAMPLE, "--tenant", "globex"]) == 0
    out = capsys.readouterr().out
    assert "tenant globex, sample built-in identify" in out
    assert "tenant acme" not in out
    assert main(["destination", "check", "--config", EXAMPLE, "--tenant", "initech"]) == 2
    assert "no tenant initech" in capsys.readouterr().err
