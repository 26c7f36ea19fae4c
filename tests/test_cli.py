"""Tests of ``selligent-segment send --dry-run``, run as a user would, in a subprocess."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from selligent_segment import CallbackRecord, EventNaming, encode
from selligent_segment.cli._progress import Progress, human_bytes, render

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "callbacks.jsonl"


def run(
    *args: str, stdin: bytes | Path = b"", cwd: Path = ROOT
) -> subprocess.CompletedProcess[str]:
    """The CLI with ``args``; ``stdin`` its input, or a file it reads as its stdin."""
    if isinstance(stdin, Path):
        with stdin.open("rb") as stream:
            return subprocess.run(
                [sys.executable, "-m", "selligent_segment", *args],
                stdin=stream, capture_output=True, text=True, cwd=cwd, timeout=60, check=False,
            )  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", "selligent_segment", *args],
        input=stdin.decode(),
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=60,
        check=False,
    )


def dry_run(*args: str, stdin: bytes | Path = b"") -> subprocess.CompletedProcess[str]:
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


def summary_line(read: int, valid: int, invalid: int, inputs: int = 1) -> str:
    plural = "input" if inputs == 1 else "inputs"
    return (
        f"selligent-segment: read {read} records from {inputs} {plural}: "
        f"{valid} valid, {invalid} invalid"
    )


def errors_of(result: subprocess.CompletedProcess[str]) -> list[str]:
    """The FILE:LINE error lines of stderr (without the closing summary)."""
    return [line for line in result.stderr.splitlines() if not line.startswith("selligent-")]


def summary_of(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("selligent-")]


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
    assert result.stderr == summary_line(3, 3, 0) + "\n"
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
    errors = errors_of(result)
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
    assert errors_of(result)[1] == (
        f"{path}:2: email: a record needs an email or a user_id (neither was given)"
    )


def test_oversized_message_is_an_invalid_line(tmp_path: Path) -> None:
    big = {"type": "opened", "user_id": "u", "properties": {"blob": "x" * 40_000}}
    path = write(tmp_path, "big.jsonl", jsonl(big, R1))
    result = dry_run(path)
    assert result.returncode == 1
    assert result.stdout.splitlines() == [expected_body(R1)]
    (error,) = errors_of(result)
    assert error.startswith(f"{path}:1: record: the track message is ")
    assert "bytes, over Segment's 32 KB limit" in error


def test_out_of_range_timestamp_does_not_crash_the_run(tmp_path: Path) -> None:
    bad = {"type": "opened", "user_id": "u", "timestamp": "0001-01-01T00:00:00+01:00"}
    path = write(tmp_path, "ovf.jsonl", jsonl(bad, R1))
    result = dry_run(path)
    assert result.stdout.splitlines() == [expected_body(R1)]
    (error,) = errors_of(result)
    assert error.startswith(f"{path}:1: timestamp: ")
    assert result.returncode == 1


def test_blank_lines_are_skipped_but_counted_and_crlf_is_fine(tmp_path: Path) -> None:
    content = "\n" + jsonl(R1) + "   \n\t\n" + jsonl({"type": "nope", "user_id": "u"}) + jsonl(R2)
    path = tmp_path / "blank.jsonl"
    path.write_bytes(content.replace("\n", "\r\n").encode())
    result = dry_run(str(path))
    assert result.returncode == 1
    assert result.stdout.splitlines() == [expected_body(R1), expected_body(R2)]
    assert errors_of(result) == [
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
    assert errors_of(result) == ["<stdin>:2: email: not a plausible email address"]


def test_several_files_in_order(tmp_path: Path) -> None:
    first = write(tmp_path, "a.jsonl", jsonl(R3))
    empty = write(tmp_path, "empty.jsonl", "")
    second = write(tmp_path, "b.jsonl", jsonl(R1, "{}"))
    result = dry_run(first, empty, "-", second, stdin=jsonl(R2).encode())
    assert result.returncode == 1
    assert result.stdout.splitlines() == [expected_body(R3), expected_body(R2), expected_body(R1)]
    assert errors_of(result) == [f"{second}:2: type: missing"]
    assert summary_of(result) == [summary_line(4, 3, 1, inputs=4)]


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
    assert after_good.stdout == ""  # every input is opened before anything is printed
    assert after_good.stderr.startswith(f"{missing}: cannot read: ")
    assert directory.returncode == 2
    assert directory.stderr.startswith(f"{tmp_path}: cannot read: ")


@pytest.mark.slow  # half a second or more: the second step of .ci/run
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


@pytest.mark.slow  # half a second or more: the second step of .ci/run
def test_help_mentions_exit_statuses_and_version() -> None:
    from selligent_segment import __version__

    top, send, version = run_all(["--help"], ["send", "--help"], ["--version"])
    for result in (top, send):
        assert result.returncode == 0
        assert "exit status" in result.stdout
        for status in ("0", "1", "2", "3"):
            lines = result.stdout.splitlines()
            assert any(line.strip().startswith(status + " ") for line in lines)
        assert "FILE:LINE" in result.stdout
    for word in ("--dry-run", "'-'", "--profile", "segment-spec", "--format", "--rejects"):
        assert word in send.stdout
    flat = " ".join(send.stdout.split())
    assert "130 interrupted" in flat
    assert "re-running is safe" in flat
    assert "messageId" in flat
    assert "run the same command again to resume" in flat
    assert "the 'properties' cell holds a JSON object" in flat
    assert "FILE.reasons" in flat
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
    assert errors_of(result) == []
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
        + summary_line(7, 6, 1)
        + "\n"
    )


# -- CSV ---------------------------------------------------------------------------------


def csv_text(*rows: str) -> str:
    return "".join(row + "\n" for row in rows)


def test_csv_example_prints_the_same_messages_as_the_jsonl_example() -> None:
    as_csv, as_jsonl = run_all(
        ["send", "--dry-run", "examples/callbacks.csv"],
        ["send", "--dry-run", "examples/callbacks.jsonl"],
    )
    assert as_csv.returncode == 0, as_csv.stderr
    assert as_csv.stdout == as_jsonl.stdout
    assert len(as_csv.stdout.splitlines()) == 6
    assert errors_of(as_csv) == []


def test_csv_errors_name_file_line_and_field(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "in.csv",
        csv_text(
            "type,tenant,email,event_id,properties",
            "open,acme,a@example.com,e1,",
            'open,acme,a@example.com,e2,"{""colour"": ""red"",',
            ' ""size"": 3}"',
            "open,acme,a@example.com,e3,{oops}",
            "open,acme,not-an-address,e4,",
            "click,acme,a@example.com,e5",
        ),
    )
    result = dry_run(path)
    assert result.returncode == 1
    messages = [json.loads(line) for line in result.stdout.splitlines()]
    assert [m["properties"] for m in messages] == [{}, {"colour": "red", "size": 3}]
    found = errors_of(result)
    assert found[0].startswith(f"{path}:5: properties: invalid JSON (")
    assert found[1:] == [
        f"{path}:6: email: not a plausible email address",
        f"{path}:7: record: 4 cells, but the header has 5 columns",
    ]


def test_csv_header_problem_exits_2_before_any_output(tmp_path: Path) -> None:
    good = write(tmp_path, "good.csv", csv_text("type,user_id", "open,u1"))
    bad = write(tmp_path, "bad.csv", csv_text("type,user_id,colour", "open,u1,red"))
    result = dry_run(good, bad)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith(f"{bad}:1: colour: unknown column (record fields: ")


@pytest.mark.slow  # half a second or more: the second step of .ci/run
def test_format_option_and_stdin(tmp_path: Path) -> None:
    rows = csv_text(
        "type,tenant,user_id,event_id,timestamp", "open,acme,u1,e1,2026-11-20T10:00:00Z"
    )
    csv_stdin, jsonl_stdin, csv_named_jsonl, bad_format = (
        dry_run("--format", "csv", "-", stdin=rows.encode()),
        dry_run("-", stdin=rows.encode()),
        dry_run("--format", "csv", write(tmp_path, "rows.jsonl", rows)),
        dry_run("--format", "xml", "-"),
    )
    expected = expected_body(
        {"type": "open", "tenant": "acme", "user_id": "u1", "event_id": "e1",
         "timestamp": "2026-11-20T10:00:00Z"}
    )  # fmt: skip
    assert csv_stdin.returncode == 0, csv_stdin.stderr
    assert csv_stdin.stdout.splitlines() == [expected]
    assert csv_named_jsonl.stdout.splitlines() == [expected]
    assert jsonl_stdin.returncode == 1  # '-' is JSON Lines unless --format csv
    assert errors_of(jsonl_stdin)[0].startswith("<stdin>:1: line: invalid JSON")
    assert bad_format.returncode == 2
    assert "invalid choice: 'xml'" in bad_format.stderr


def test_csv_and_jsonl_inputs_in_one_run(tmp_path: Path) -> None:
    a = write(tmp_path, "a.csv", csv_text("type,user_id,event_id", "open,u1,e1"))
    b = write(tmp_path, "b.json", jsonl({"type": "open", "user_id": "u2", "event_id": "e2"}))
    result = dry_run(a, b)
    assert result.returncode == 0, result.stderr
    assert [json.loads(line)["userId"] for line in result.stdout.splitlines()] == ["u1", "u2"]


# -- rejects -----------------------------------------------------------------------------


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux)")
def test_a_rejects_file_that_cannot_be_written_stops_the_run_and_says_so(tmp_path: Path) -> None:
    """Found by a review: a write to ``--rejects`` failing (a full disk) was taken for an
    input that could not be read (``None: cannot read: …``), the summary still said the
    rejects were written, and closing the file raised a traceback and exit status 1, the
    status a script takes for "some records were invalid"."""
    source = tmp_path / "in.jsonl"
    source.write_text('{"type": "open", "email": "x"}\n' * 3 + jsonl(R1) * 3)
    result = dry_run(str(source), "--rejects", "/dev/full")
    assert result.returncode == 2
    assert "--rejects /dev/full: cannot write: No space left on device" in result.stderr
    assert "Traceback" not in result.stderr
    assert "cannot read" not in result.stderr
    assert "written to /dev/full" not in result.stderr


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux)")
def test_a_dry_run_whose_output_cannot_be_written_says_so(tmp_path: Path) -> None:
    """Found by a review: ``--dry-run > full-disk`` said ``None: cannot read: …``."""
    source = tmp_path / "in.jsonl"
    source.write_text(jsonl(R1) * 20_000)
    with open("/dev/full", "w") as full:
        result = subprocess.run(
            [sys.executable, "-m", "selligent_segment", "send", "--dry-run", str(source)],
            stdout=full, stderr=subprocess.PIPE, text=True, cwd=ROOT, timeout=60, check=False,
        )  # fmt: skip
    assert result.returncode == 2
    assert "stdout: cannot write: No space left on device" in result.stderr
    assert "cannot read" not in result.stderr
    assert "Traceback" not in result.stderr


def test_a_dry_run_with_write_keys_refuses_the_tenants_they_do_not_name(tmp_path: Path) -> None:
    """Found by a review: ``--dry-run`` ignored ``--write-keys``, so "check a file first"
    passed records the real run refused (a tenant without a key), and a keys file that
    does not exist passed too."""
    keys = tmp_path / "keys.json"
    keys.write_text('{"acme": "k1"}')
    source = write(
        tmp_path,
        "in.jsonl",
        jsonl({"type": "open", "tenant": "acme", "user_id": "u1"},
              {"type": "open", "tenant": "globex", "user_id": "u2"}),
    )  # fmt: skip
    result = dry_run(source, "--write-keys", str(keys))
    assert result.returncode == 1
    assert errors_of(result) == [f"{source}:2: tenant: no write key configured for 'globex'"]
    assert len(result.stdout.splitlines()) == 1
    missing = dry_run(source, "--write-keys", str(tmp_path / "none.json"))
    assert missing.returncode == 2
    assert "--write-keys" in missing.stderr


def test_rejects_jsonl_get_the_raw_lines_and_reasons_and_can_be_sent_again(
    tmp_path: Path,
) -> None:
    bad_email = '{"type": "open",  "email": "x", "event_id": "e9"}'
    raw = (
        jsonl(R1).encode()
        + b"{not json\r\n"
        + b"\n"
        + bad_email.encode()
        + b"\n"
        + jsonl(R2).encode()
        + b'{"type": "nope", "user_id": "u"}'  # last line, no line end
    )
    source = tmp_path / "in.jsonl"
    source.write_bytes(raw)
    rejects = tmp_path / "rejects.jsonl"
    result = dry_run(str(source), "--rejects", str(rejects))
    assert result.returncode == 1
    assert rejects.read_bytes() == (
        b"{not json\r\n" + bad_email.encode() + b"\n" + b'{"type": "nope", "user_id": "u"}\n'
    )
    reasons = Path(f"{rejects}.reasons").read_text().splitlines()
    assert reasons[0].startswith(f"{rejects}:1: line: invalid JSON (")
    assert reasons[0].endswith(f") (from {source}:2)")
    assert reasons[1:] == [
        f"{rejects}:2: email: not a plausible email address (from {source}:4)",
        f"{rejects}:3: type: unknown event type 'nope' (expected one of delivered, opened, "
        f"link_clicked, unsubscribed, bounced, marked_as_spam) (from {source}:6)",
    ]
    assert f"3 invalid records written to {rejects}, their reasons to {rejects}.reasons" in (
        result.stderr
    )
    # The user fixes the file and sends it again; the fixed records go through.
    rejects.write_text(
        jsonl(
            {"type": "open", "user_id": "u7"},
            {"type": "open", "email": "x@example.com", "event_id": "e9"},
            {"type": "opened", "user_id": "u"},
        )
    )
    again = dry_run(str(rejects), "--rejects", str(tmp_path / "rejects2.jsonl"))
    assert again.returncode == 0, again.stderr
    assert len(again.stdout.splitlines()) == 3
    assert (tmp_path / "rejects2.jsonl").read_bytes() == b""
    assert (tmp_path / "rejects2.jsonl.reasons").read_text() == ""


def test_rejects_csv_get_the_header_and_the_raw_rows(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_bytes(
        b"type,user_id,email_subject\r\n"
        b"open,u1,fine\r\n"
        b'nope,u2,"a subject\r\non two lines"\r\n'
        b"open,u3,ok\r\n"
        b"open,,no identity\r\n"
    )
    rejects = tmp_path / "rejects.csv"
    result = dry_run(str(source), "--rejects", str(rejects))
    assert result.returncode == 1
    assert rejects.read_bytes() == (
        b"type,user_id,email_subject\r\n"
        b'nope,u2,"a subject\r\non two lines"\r\n'
        b"open,,no identity\r\n"
    )
    reasons = Path(f"{rejects}.reasons").read_text().splitlines()
    assert reasons[0].startswith(f"{rejects}:2: type: unknown event type 'nope'")
    assert reasons[0].endswith(f"(from {source}:3)")
    assert reasons[1] == (
        f"{rejects}:4: email: a record needs an email or a user_id (neither was given) "
        f"(from {source}:6)"
    )
    # Line numbers in the reasons are those a new run over the rejects file reports.
    again = dry_run(str(rejects))
    assert [line.split(": ")[0] for line in errors_of(again)] == [f"{rejects}:2", f"{rejects}:4"]


@pytest.mark.slow  # half a second or more: the second step of .ci/run
def test_rejects_usage_errors(tmp_path: Path) -> None:
    a = write(tmp_path, "a.csv", csv_text("type,user_id", "open,u1"))
    b = write(tmp_path, "b.csv", csv_text("type,email", "open,a@example.com"))
    c = write(tmp_path, "c.jsonl", jsonl(R1))
    mixed, headers, same, unwritable = run_all(
        ["send", "--dry-run", a, c, "--rejects", str(tmp_path / "r")],
        ["send", "--dry-run", a, b, "--rejects", str(tmp_path / "r")],
        ["send", "--dry-run", c, "--rejects", c],
        ["send", "--dry-run", c, "--rejects", str(tmp_path / "no" / "such" / "dir")],
    )
    for result in (mixed, headers, same, unwritable):
        assert result.returncode == 2, result.args
        assert result.stdout == ""
    assert "mix JSON Lines and CSV" in mixed.stderr
    assert "different headers" in headers.stderr
    assert "is also an input" in same.stderr
    assert Path(c).read_text() == jsonl(R1)  # the input was not overwritten
    assert "cannot write" in unwritable.stderr
    # The same file as standard input (re-sending a fixed rejects file): it was emptied
    # before it was read, and the run said 0 records and exited 0.
    piped = dry_run("--rejects", c, "-", stdin=Path(c))
    assert piped.returncode == 2
    assert "is also an input" in piped.stderr
    assert Path(c).read_text() == jsonl(R1)


def test_quiet_keeps_only_the_errors(tmp_path: Path) -> None:
    path = write(tmp_path, "in.jsonl", jsonl(R1, "{}"))
    result = dry_run("--quiet", path)
    assert result.returncode == 1
    assert result.stderr == f"{path}:2: type: missing\n"


# -- progress ----------------------------------------------------------------------------


def run_on_a_terminal(
    args: list[str], tmp_path: Path, *, stdout_tty: bool = False
) -> tuple[int, bytes, bytes]:
    """Run with stderr (and optionally stdout) on a pseudo-terminal; return its output."""
    master, slave = os.openpty()
    out_path = tmp_path / "stdout"
    with out_path.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "selligent_segment", *args],
            stdin=subprocess.DEVNULL,
            stdout=slave if stdout_tty else out,
            stderr=slave,
            cwd=ROOT,
        )
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    status = proc.wait(timeout=60)
    return status, b"".join(chunks), out_path.read_bytes()


@pytest.mark.slow  # half a second or more: the second step of .ci/run
def test_a_progress_bar_only_on_a_terminal(tmp_path: Path) -> None:
    path = write(tmp_path, "in.jsonl", jsonl(*([R1, R2, R3] * 200), "{}"))
    status, terminal, stdout = run_on_a_terminal(["send", "--dry-run", path], tmp_path)
    assert status == 1
    assert len(stdout.splitlines()) == 600
    assert b"\r\x1b[Kreading [" in terminal
    assert b"records" in terminal
    assert b"%" in terminal
    # The bar is erased before the summary, which ends on a clean line.
    text = terminal.replace(b"\r\n", b"\n")
    assert text.endswith(summary_line(601, 600, 1).encode() + b"\n")
    assert f"{path}:601: type: missing".encode() in text

    piped = dry_run(path)
    assert "\r" not in piped.stderr
    assert "\x1b" not in piped.stderr
    quiet_status, quiet_terminal, _ = run_on_a_terminal(
        ["send", "--dry-run", "--quiet", path], tmp_path
    )
    assert quiet_status == 1
    assert quiet_terminal.replace(b"\r\n", b"\n") == f"{path}:601: type: missing\n".encode()


def test_no_progress_bar_when_the_dry_run_prints_to_the_terminal(tmp_path: Path) -> None:
    path = write(tmp_path, "in.jsonl", jsonl(R1))
    status, terminal, _ = run_on_a_terminal(["send", "--dry-run", path], tmp_path, stdout_tty=True)
    assert status == 0
    assert b"reading [" not in terminal
    assert b"\x1b[K" not in terminal
    assert expected_body(R1).encode() in terminal


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_draws_at_most_every_interval_and_erases_itself() -> None:
    now = [0.0]
    stream = FakeTerminal()
    bar = Progress(stream, interval=0.1, clock=lambda: now[0], width=60)
    assert bar.enabled
    assert bar.due()
    bar.show("reading", 50, 100, "5 records")
    assert stream.getvalue() == "\r\x1b[K" + render("reading", 50, 100, "5 records", 59)
    assert not bar.due()
    now[0] = 0.099
    assert not bar.due()
    now[0] = 0.1
    assert bar.due()
    bar.message("a.jsonl:3: type: missing")
    assert stream.getvalue().endswith("\r\x1b[Ka.jsonl:3: type: missing\n")
    bar.show("reading", 100, 100, "done")
    bar.close()
    assert stream.getvalue().endswith("\r\x1b[K")
    size = len(stream.getvalue())
    bar.close()  # nothing shown: nothing to erase
    assert len(stream.getvalue()) == size


def test_progress_is_silent_off_a_terminal_but_messages_still_print() -> None:
    stream = io.StringIO()
    bar = Progress(stream)
    assert not bar.enabled
    assert not bar.due()
    bar.show("reading", 1, 2, "x")
    bar.message("a.jsonl:1: type: missing")
    bar.close()
    assert stream.getvalue() == "a.jsonl:1: type: missing\n"


def test_render() -> None:
    assert render("reading", 0, 200, "d", 80) == "reading [------------------------]   0%  d"
    assert render("reading", 50, 200, "d", 80) == "reading [######------------------]  25%  d"
    assert render("reading", 300, 200, "d", 80) == "reading [########################] 100%  d"
    assert render("reading", 5, None, "5 records", 80) == "reading  5 records"
    assert render("reading", 5, 0, "5 records", 80) == "reading  5 records"
    assert render("reading", 1, 2, "x" * 100, 30) == render("reading", 1, 2, "x" * 100, 80)[:30]
    assert human_bytes(999) == "999 B"
    assert human_bytes(1536) == "1.5 KB"
    assert human_bytes(27_100_000) == "27.1 MB"
    assert human_bytes(3e12) == "3000.0 GB"


def test_a_byte_order_mark_is_not_copied_into_the_middle_of_the_rejects_file(
    tmp_path: Path,
) -> None:
    """The second input's first line kept its BOM in the rejects file: re-sending the
    fixed file then failed on that line ("BOM is not supported")."""
    bad = {"type": "delivered", "tenant": "acme", "email": "bad", "event_id": "x"}
    first = write(tmp_path, "a.jsonl", jsonl(bad))
    second = tmp_path / "b.jsonl"
    second.write_bytes(b"\xef\xbb\xbf" + jsonl({**bad, "event_id": "y"}).encode())
    rejects = tmp_path / "rejects.jsonl"
    result = dry_run("--rejects", str(rejects), first, str(second))
    assert result.returncode == 1
    assert b"\xef\xbb\xbf" not in rejects.read_bytes()
    again = dry_run(str(rejects))
    assert [line.split(": ")[1] for line in errors_of(again)] == ["email", "email"]
