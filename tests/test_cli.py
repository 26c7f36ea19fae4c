"""Tests of ``selligent-segment send --dry-run``, run as a user would, in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson

from selligent_segment import CallbackRecord, EventNaming, encode

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "callbacks.jsonl"


def run(*args: str, stdin: bytes = b"", cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "selligent_segment", *args],
        input=stdin.decode(),
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=60,
        check=False,
    )


def dry_run(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[str]:
    return run("send", "--dry-run", *args, stdin=stdin)


def run_all(*arg_lists: list[str]) -> list[subprocess.CompletedProcess[str]]:
    """Run several independent invocations at once (no stdin), to keep the suite fast."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "selligent_segment", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        for args in arg_lists
    ]
    results = []
    for args, proc in zip(arg_lists, procs, strict=True):
        out, err = proc.communicate(timeout=60)
        results.append(subprocess.CompletedProcess(args, proc.returncode, out, err))
    return results


def jsonl(*records: Any) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records)


def write(tmp_path: Path, name: str, content: str) -> str:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    return str(path)


def expected_body(data: dict[str, Any], profile: str = "selligent") -> str:
    record = CallbackRecord.from_dict(data)
    naming = EventNaming(profile=profile)
    return encode(record, tenant=record.tenant or "", naming=naming).body.decode()


R1 = {"type": "delivered", "tenant": "acme", "user_id": "u-1", "event_id": "e1",
      "timestamp": "2026-11-20T09:15:00+01:00", "email_id": "em-1"}  # fmt: skip
R2 = {"type": "open", "tenant": "acme", "email": "Grace@Example.org", "event_id": "e2",
      "timestamp": "2026-11-20T09:20:00Z", "ip": "203.0.113.9"}  # fmt: skip
R3 = {"type": "unsubscribed", "tenant": "globex", "email": "linus@example.net",
      "event_id": "e3", "timestamp": "2026-11-20T10:00:00Z", "list_id": "weekly"}  # fmt: skip


def test_valid_file_prints_one_line_per_record_in_order(tmp_path: Path) -> None:
    path = write(tmp_path, "ok.jsonl", jsonl(R1, R2, R3))
    result = dry_run(path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines == [expected_body(R1), expected_body(R2), expected_body(R3)]
    messages = [json.loads(line) for line in lines]
    assert [m["event"] for m in messages] == [
        "Email Delivered",
        "Email Opened",
        "Email Unsubscribed",
    ]
    assert all(
        line == orjson.dumps(m).decode() for line, m in zip(lines, messages, strict=True)
    )  # compact
    assert messages[1]["anonymousId"] == "grace@example.org"
    assert messages[1]["context"]["ip"] == "203.0.113.9"


def test_invalid_lines_are_reported_and_skipped(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "mixed.jsonl",
        jsonl(
            R1,
            '{"type": "opened", "email": ',
            {"type": "opened", "email": "a@b.co", "colour": "red"},
            "[1, 2, 3]",
            {"type": "bounced", "email": "a@b.co", "bounce_type": "maybe"},
            R2,
            {"type": "opened", "email": "a@b.co", "link_url": "https://x.example"},
            '"just a string"',
            R3,
        ),
    )
    result = dry_run(path)
    assert result.returncode == 1
    assert result.stdout.splitlines() == [expected_body(R1), expected_body(R2), expected_body(R3)]
    errors = result.stderr.splitlines()
    assert len(errors) == 6
    assert errors[0].startswith(f"{path}:2: line: invalid JSON (")
    assert errors[1:] == [
        f"{path}:3: colour: unknown field",
        f"{path}:4: record: expected a JSON object, got list",
        f"{path}:5: bounce_type: expected 'hard' or 'soft', got 'maybe'",
        f"{path}:7: link_url: applies only to link_clicked events, not opened",
        f"{path}:8: record: expected a JSON object, got str",
    ]


def test_only_invalid_lines_still_exit_1_with_empty_stdout(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.jsonl", jsonl("not json", {"type": "opened"}))
    result = dry_run(path)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines()[1] == (
        f"{path}:2: email: a record needs an email or a user_id (neither was given)"
    )


def test_oversized_message_is_an_invalid_line(tmp_path: Path) -> None:
    big = {"type": "opened", "user_id": "u", "properties": {"blob": "x" * 40_000}}
    path = write(tmp_path, "big.jsonl", jsonl(big, R1))
    result = dry_run(path)
    assert result.returncode == 1
    assert result.stdout.splitlines() == [expected_body(R1)]
    (error,) = result.stderr.splitlines()
    assert error.startswith(f"{path}:1: record: the track message is ")
    assert "bytes, over Segment's 32 KB limit" in error


def test_out_of_range_timestamp_does_not_crash_the_run(tmp_path: Path) -> None:
    bad = {"type": "opened", "user_id": "u", "timestamp": "0001-01-01T00:00:00+01:00"}
    path = write(tmp_path, "ovf.jsonl", jsonl(bad, R1))
    result = dry_run(path)
    assert result.stdout.splitlines() == [expected_body(R1)]
    (error,) = result.stderr.splitlines()
    assert error.startswith(f"{path}:1: timestamp: ")
    assert result.returncode == 1


def test_blank_lines_are_skipped_but_counted_and_crlf_is_fine(tmp_path: Path) -> None:
    content = "\n" + jsonl(R1) + "   \n\t\n" + jsonl({"type": "nope", "user_id": "u"}) + jsonl(R2)
    path = tmp_path / "blank.jsonl"
    path.write_bytes(content.replace("\n", "\r\n").encode())
    result = dry_run(str(path))
    assert result.returncode == 1
    assert result.stdout.splitlines() == [expected_body(R1), expected_body(R2)]
    assert result.stderr.splitlines() == [
        f"{path}:5: type: unknown event type 'nope' (expected one of delivered, opened, "
        "link_clicked, unsubscribed, bounced, marked_as_spam)"
    ]


def test_stdin_with_dash() -> None:
    result = dry_run("-", stdin=jsonl(R1, R2).encode())
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [expected_body(R1), expected_body(R2)]


def test_stdin_errors_name_stdin() -> None:
    result = dry_run("-", stdin=jsonl(R1, {"type": "opened", "email": "x"}).encode())
    assert result.returncode == 1
    assert result.stdout.splitlines() == [expected_body(R1)]
    assert result.stderr.splitlines() == ["<stdin>:2: email: not a plausible email address"]


def test_several_files_in_order(tmp_path: Path) -> None:
    first = write(tmp_path, "a.jsonl", jsonl(R3))
    empty = write(tmp_path, "empty.jsonl", "")
    second = write(tmp_path, "b.jsonl", jsonl(R1, "{}"))
    result = dry_run(first, empty, "-", second, stdin=jsonl(R2).encode())
    assert result.returncode == 1
    assert result.stdout.splitlines() == [expected_body(R3), expected_body(R2), expected_body(R1)]
    assert result.stderr.splitlines() == [f"{second}:2: type: missing"]


def test_unreadable_inputs_exit_2(tmp_path: Path) -> None:
    good = write(tmp_path, "good.jsonl", jsonl(R1))
    missing = str(tmp_path / "nope.jsonl")
    alone, after_good, directory = run_all(
        ["send", "--dry-run", missing],
        ["send", "--dry-run", good, missing],
        ["send", "--dry-run", str(tmp_path)],
    )
    assert alone.returncode == 2
    assert alone.stdout == ""
    assert alone.stderr.startswith(f"{missing}: cannot read: ")
    assert "No such file" in alone.stderr
    assert after_good.returncode == 2
    assert after_good.stderr.startswith(f"{missing}: cannot read: ")
    assert directory.returncode == 2
    assert directory.stderr.startswith(f"{tmp_path}: cannot read: ")


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    path = write(tmp_path, "ok.jsonl", jsonl(R1))
    results = run_all(
        [],
        ["send"],
        ["send", "--dry-run"],
        ["send", "--dry-run", "--profile", "mailchimp", path],
        ["send", path],
    )
    for result in results:
        assert result.returncode == 2, result.args
        assert result.stdout == ""
    for result in results[:4]:
        assert "usage:" in result.stderr
    assert "--write-key" in results[4].stderr  # sending needs a key


def test_help_mentions_exit_statuses_and_version() -> None:
    from selligent_segment import __version__

    top, send, version = run_all(["--help"], ["send", "--help"], ["--version"])
    for result in (top, send):
        assert result.returncode == 0
        assert "exit status" in result.stdout
        for status in ("0", "1", "2"):
            lines = result.stdout.splitlines()
            assert any(line.strip().startswith(status + " ") for line in lines)
        assert "FILE:LINE" in result.stdout
    for word in ("--dry-run", "'-'", "--profile", "segment-spec"):
        assert word in send.stdout
    assert version.returncode == 0
    assert version.stdout.strip() == f"selligent-segment {__version__}"


def test_profile_segment_spec(tmp_path: Path) -> None:
    path = write(tmp_path, "ok.jsonl", jsonl(R1, R3))
    result = dry_run("--profile", "segment-spec", path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines == [expected_body(R1, "segment-spec"), expected_body(R3, "segment-spec")]
    assert [json.loads(line)["event"] for line in lines] == ["Email Delivered", "Unsubscribed"]


def test_records_use_their_own_tenant_for_the_message_id(tmp_path: Path) -> None:
    globex = {**R1, "tenant": "globex"}
    path = write(tmp_path, "tenants.jsonl", jsonl(R1, globex))
    a, b = (json.loads(line) for line in dry_run(path).stdout.splitlines())
    assert a["messageId"] != b["messageId"]
    assert {k: v for k, v in a.items() if k != "messageId"} == {
        k: v for k, v in b.items() if k != "messageId"
    }


def test_the_example_file() -> None:
    result = dry_run("examples/callbacks.jsonl")
    assert result.returncode == 0
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert len(lines) == 6
    events = [json.loads(line)["event"] for line in lines]
    assert events == [
        "Email Delivered",
        "Email Opened",
        "Email Link Clicked",
        "Email Unsubscribed",
        "Email Bounced",
        "Email Marked as Spam",
    ]
    records = [json.loads(raw) for raw in EXAMPLES.read_text().splitlines()]
    assert lines == [expected_body(data) for data in records]
    assert json.loads(lines[0])["messageId"] == "cafcf1bd-3d7e-5f56-8380-be6c7da31bb0"


def test_the_example_file_with_a_bad_line() -> None:
    result = dry_run("examples/mixed-callbacks.jsonl")
    assert result.returncode == 1
    assert len(result.stdout.splitlines()) == 6
    assert result.stderr == (
        "examples/mixed-callbacks.jsonl:7: email: not a plausible email address\n"
    )
