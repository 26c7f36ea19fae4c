"""``selligent-segment ingest``: reports from an mbox, a Maildir and .eml files, and a
saved ESP webhook body, printed (--dry-run) or delivered to a LocalSegment; run as a
subprocess."""

from __future__ import annotations

import json
import mailbox
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from selligent_segment.testing import LocalSegment

ROOT = Path(__file__).resolve().parent.parent
CORPUS = Path(__file__).parent / "corpus" / "reports"
VERP = r"bounces\+(?P<token>[^@]+)@mail\.platform\.example"
JOIN = str(CORPUS / "join.json")


@pytest.fixture
def server() -> Iterator[LocalSegment]:
    with LocalSegment(write_keys=["key-acme", "key-globex"]) as segment:
        yield segment


@pytest.fixture
def keys_file(tmp_path: Path) -> str:
    path = tmp_path / "keys.json"
    path.write_text(json.dumps({"acme": "key-acme", "globex": "key-globex"}))
    return str(path)


def ingest(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "SEGMENT_WRITE_KEY"}
    return subprocess.run(
        [sys.executable, "-m", "selligent_segment", "ingest", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=ROOT,
    )


def mbox_of(path: Path, *names: str) -> str:
    box = mailbox.mbox(str(path))
    for name in names:
        box.add((CORPUS / f"{name}.eml").read_bytes())
    box.close()
    return str(path)


def test_dry_run_of_an_mbox_prints_the_messages_and_names_each_problem(tmp_path: Path) -> None:
    path = mbox_of(
        tmp_path / "bounces.mbox",
        "postfix-user-unknown",
        "postfix-delayed",
        "malformed-bad-fields",
        "qmail-no-mailbox",
    )
    result = ingest("dsn", path, "--dry-run", "--join", JOIN, "--verp", VERP)
    assert result.returncode == 1, result.stderr
    messages = [json.loads(line) for line in result.stdout.splitlines()]
    assert [m["event"] for m in messages] == ["Email Bounced"] * 4
    assert messages[0]["userId"] == "u-1001"
    assert messages[0]["properties"]["email_id"] == "em-42"
    assert messages[-1]["properties"]["bounce_confidence"] == "heuristic"
    assert result.stderr.splitlines() == [
        f"{path}:MESSAGE-3 recipient 1: Action: 'bounced': expected failed, delayed, "
        "delivered, relayed or expanded",
        f"{path}:MESSAGE-3 recipient 2: Final-Recipient: missing: no Final-Recipient or "
        "Original-Recipient address",
        "selligent-segment: read 4 messages from 1 input: 4 records, 2 problems",
    ]


@pytest.mark.slow  # half a second or more: a LocalSegment and a subprocess
def test_reports_are_delivered_to_the_tenant_the_join_finds_and_again_deduplicated(
    server: LocalSegment, tmp_path: Path, keys_file: str
) -> None:
    box = mailbox.Maildir(str(tmp_path / "fbl"))
    for name in ("arf-yahoo-abuse", "arf-redacted-aol", "arf-microsoft-jmrp", "arf-not-spam"):
        box.add((CORPUS / f"{name}.eml").read_bytes())
    box.close()
    args = ["arf", str(tmp_path / "fbl"), "--join", JOIN, "--verp", VERP]
    first = ingest(*args, "--write-keys", keys_file, "--endpoint", server.url)
    assert first.returncode == 0, first.stderr
    assert first.stderr.splitlines()[:2] == [
        "selligent-segment: read 4 messages from 1 input: 3 records, 0 problems",
        "selligent-segment: 3 events accepted, 3 delivered, 0 not delivered",
    ]
    acme, globex = server.events("key-acme"), server.events("key-globex")
    assert [e["userId"] for e in acme] == ["u-1012"]
    assert sorted(e["userId"] for e in globex) == ["u-77", "u-78"]
    assert {e["event"] for e in acme + globex} == {"Email Marked as Spam"}
    again = ingest(*args, "--write-keys", keys_file, "--endpoint", server.url)
    assert again.returncode == 0, again.stderr
    assert server.accepted_count == 3
    assert server.duplicates == 3


@pytest.mark.slow
def test_one_tenant_for_every_report_with_tenant(
    server: LocalSegment, tmp_path: Path, keys_file: str
) -> None:
    files = [str(CORPUS / f"{n}.eml") for n in ("exim-mailbox-full", "sendmail-host-unknown")]
    result = ingest(
        "dsn", *files, "--tenant", "acme", "--write-keys", keys_file, "--endpoint", server.url
    )
    assert result.returncode == 0, result.stderr
    events = server.events("key-acme")
    assert sorted(e["properties"]["smtp_status"] for e in events) == ["5.1.2", "5.2.2"]


@pytest.mark.slow
def test_a_saved_sendgrid_body_is_delivered_with_tenant(
    server: LocalSegment, tmp_path: Path, keys_file: str
) -> None:
    body = tmp_path / "sendgrid.json"
    body.write_text(
        json.dumps(
            [
                {
                    "email": "ada@example.com",
                    "event": "delivered",
                    "sg_event_id": "sg-1",
                    "timestamp": 1763600000,
                },
                {"event": "open", "sg_event_id": "sg-2", "timestamp": 1763600000},
            ]
        )
    )
    not_json = tmp_path / "broken.json"
    not_json.write_text("{")
    result = ingest(
        "sendgrid",
        str(body),
        str(not_json),
        "--tenant",
        "globex",
        "--write-keys",
        keys_file,
        "--endpoint",
        server.url,
    )
    assert result.returncode == 1, result.stderr
    (event,) = server.events("key-globex")
    assert event["event"] == "Email Delivered"
    lines = result.stderr.splitlines()
    assert lines[0].startswith(f"{body}:event-2: email: ")
    assert lines[1].startswith(f"{not_json}: ")
    assert lines[2] == (
        "selligent-segment: read 2 webhook bodies from 2 inputs: 1 records, 2 problems"
    )


def test_events_that_are_none_of_the_six_are_skipped_not_problems(
    server: LocalSegment, tmp_path: Path, keys_file: str
) -> None:
    """Every SendGrid body holds ``processed`` events: counted as problems, each printed,
    they made a normal body exit 1 ("something could not be read"); a DSN delay notice,
    read and making no record just the same, exits 0."""
    body = tmp_path / "sendgrid.json"
    delivered = {"email": "a@example.com", "event": "delivered", "sg_event_id": "sg-1"}
    processed = {"email": "a@example.com", "event": "processed", "sg_event_id": "sg-0"}
    stamp = {"timestamp": 1763600000}
    body.write_text(json.dumps([{**processed, **stamp}, {**delivered, **stamp}]))
    result = ingest(
        "sendgrid", str(body), "--tenant", "globex", "--json",
        "--write-keys", keys_file, "--endpoint", server.url,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "processed" not in result.stderr
    summary = json.loads(result.stdout)
    assert (summary["records"], summary["skipped"], summary["problems"]) == (1, 1, 0)


@pytest.mark.slow
def test_usage_errors_exit_2_before_anything_is_sent(tmp_path: Path) -> None:
    good = str(CORPUS / "postfix-user-unknown.eml")
    (tmp_path / "plain").mkdir()
    (tmp_path / "bad.json").write_text("[1]")
    cases = {
        (good, str(tmp_path / "missing.mbox")): "missing.mbox: path: cannot read",
        (good, str(tmp_path / "plain")): "not a Maildir (no cur/ and new/)",
        (good, "--join", str(tmp_path / "bad.json")): "--join",
        (good, "--verp", "bounces+("): "--verp: not a regular expression",
    }
    for args, expected in cases.items():
        result = ingest("dsn", *args, "--dry-run")
        assert result.returncode == 2, result.stderr
        assert result.stdout == ""
        assert expected in result.stderr
        assert result.stderr.startswith("selligent-segment: ingest: ")


@pytest.mark.slow
def test_json_summary_counts_messages_records_and_problems(
    server: LocalSegment, tmp_path: Path, keys_file: str
) -> None:
    path = mbox_of(tmp_path / "bounces.mbox", "postfix-user-unknown", "malformed-bad-fields")
    result = ingest(
        "dsn", path, str(CORPUS / "exim-mailbox-full.eml"), "--tenant", "acme",
        "--json", "--write-keys", keys_file, "--endpoint", server.url,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    summary = json.loads(result.stdout)
    assert {k: summary[k] for k in ("messages", "records", "problems", "inputs")} == {
        "messages": 3,
        "records": 4,
        "problems": 2,
        "inputs": 2,
    }
    assert (summary["accepted"], summary["delivered"], summary["not_delivered"]) == (4, 4, 0)
    assert summary["exit_status"] == 1
    assert not {"read", "valid", "invalid"} & set(summary)  # send's counts, not ingest's


def _run_in_process(*argv: str) -> int:
    """``ingest`` run in this process (no logging set-up, no signal handler)."""
    from selligent_segment.cli._ingest import INGEST
    from selligent_segment.cli._main import COMMANDS, _parser

    args = _parser(COMMANDS).parse_args(["ingest", *argv])
    return int(INGEST.run(args))


def test_a_report_record_is_encoded_once_not_again_by_the_command(
    server: LocalSegment,
    tmp_path: Path,
    keys_file: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from selligent_segment.cli import _send

    calls = []
    real = _send.encode
    monkeypatch.setattr(_send, "encode", lambda *a, **k: calls.append(1) or real(*a, **k))
    files = [str(CORPUS / f"{n}.eml") for n in ("exim-mailbox-full", "sendmail-host-unknown")]
    status = _run_in_process(
        "dsn", *files, "--tenant", "acme", "--write-keys", keys_file,
        "--endpoint", server.url, "--spool", "memory",
    )  # fmt: skip
    assert status == 0, capsys.readouterr().err
    assert server.accepted_count == 2
    assert calls == []  # small records: only the emitter's encoder encodes them


def test_an_oversized_webhook_record_is_refused_with_its_location(
    server: LocalSegment, tmp_path: Path, keys_file: str, capsys: pytest.CaptureFixture[str]
) -> None:
    body = tmp_path / "sendgrid.json"
    event = {"email": "ada@example.com", "event": "delivered", "timestamp": 1763600000}
    escaped = "\x01" * 8000  # 6 bytes each in the message: over Segment's 32 KB
    big = {**event, "event": "bounce", "type": "bounce", "reason": escaped, "sg_event_id": "2"}
    body.write_text(json.dumps([{**event, "sg_event_id": "sg-1"}, big]))
    status = _run_in_process(
        "sendgrid", str(body), "--tenant", "acme", "--write-keys", keys_file,
        "--endpoint", server.url, "--spool", "memory",
    )  # fmt: skip
    err = capsys.readouterr().err
    assert status == 1, err
    assert server.accepted_count == 1
    assert f"{body}:event-2: record: the track message is " in err, err  # named by its item


def _private_imports(source: str) -> list[str]:
    """Names starting with '_' that ``source`` imports from another cli module."""
    import ast

    return [
        alias.name
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.ImportFrom)
        and (node.module or "").startswith("selligent_segment.cli.")
        for alias in node.names
        if alias.name.startswith("_")
    ]


def test_ingest_uses_only_what_send_makes_public() -> None:
    from selligent_segment.cli import _send

    source = (ROOT / "selligent_segment" / "cli" / "_ingest.py").read_text()
    assert _private_imports(source) == []
    assert {"SendRunner", "Sink", "SURELY_SMALL"} <= set(_send.__all__)


def test_a_webhook_event_holding_a_list_is_one_problem_not_a_crash(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    body = tmp_path / "postmark.json"
    delivery = {
        "RecordType": "Delivery",
        "MessageID": "pm-1",
        "Recipient": "ada@example.com",
        "DeliveredAt": "2026-11-20T09:15:00Z",
    }
    bounce = {**delivery, "RecordType": "Bounce", "Email": "bob@example.com", "Type": ["x"]}
    body.write_text(json.dumps([delivery, bounce]))
    status = _run_in_process("postmark", str(body), "--dry-run", "--tenant", "acme")
    out, err = capsys.readouterr()
    assert status == 1, err
    assert [json.loads(line)["event"] for line in out.splitlines()] == ["Email Delivered"]
    assert f"{body}:event-2: Type: not text: ['x']" in err.splitlines()


def test_a_body_no_rule_foresaw_is_that_files_problem_and_the_next_files_are_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # An adapter that raises something else than its input error on one body (a shape no
    # rule foresaw) once ended ingest with a traceback, the files after it never read.
    from selligent_segment.cli import _ingest

    real = _ingest.PARSERS["postmark"]

    def parse(body: bytes, where: str) -> Any:
        if b"boom" in body:
            raise RecursionError("maximum recursion depth exceeded")
        return real(body, where)

    monkeypatch.setattr(_ingest, "_esp_parser", lambda kind: parse)
    delivery = {
        "RecordType": "Delivery",
        "MessageID": "pm-1",
        "Recipient": "ada@example.com",
        "DeliveredAt": "2026-11-20T09:15:00Z",
    }
    bad, good = tmp_path / "bad.json", tmp_path / "good.json"
    bad.write_text(json.dumps({**delivery, "Tag": "boom"}))
    good.write_text(json.dumps(delivery))
    status = _run_in_process("postmark", str(bad), str(good), "--dry-run", "--tenant", "acme")
    out, err = capsys.readouterr()
    assert status == 1, err
    assert [json.loads(line)["event"] for line in out.splitlines()] == ["Email Delivered"]
    assert f"{bad}: body: cannot be read (RecursionError)" in err.splitlines()


@pytest.mark.parametrize("quiet", [[], ["-q"]])
def test_a_bounce_detector_failing_is_one_problem_line_without_a_traceback(
    tmp_path: Path, quiet: list[str]
) -> None:
    """flufl.bounce logs a traceback for a message one of its detectors fails on; without
    a handler Python printed it to stderr, even with -q (only errors promised)."""
    path = tmp_path / "plain.eml"
    path.write_bytes(b"To: a@example.com\nSubject: hi\n\nhello\n")
    result = ingest("dsn", str(path), "--dry-run", "--tenant", "acme", *quiet)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "Exception in detector" not in result.stderr
    assert f"{path}: report: the bounce detectors failed on it" in result.stderr
