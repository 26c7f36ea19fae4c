"""The operations commands on a PostgreSQL spool (``--spool postgresql://...``): ``spool
init`` and ``spool status``, ``dead-letters list|requeue|purge``, ``flush``; the same output
shapes as with a spool file, every host's rows, and the password never shown. A real
server (the ``postgres`` fixture), a LocalSegment on loopback, the command in-process
(``main``) and, once, as a subprocess."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from selligent_segment import Emitter
from selligent_segment._mapping import EncodedMessage
from selligent_segment._record import EventKind
from selligent_segment.cli._main import main
from selligent_segment.spool._postgres import PostgresSpool
from selligent_segment.spool._view import init_spool, open_view
from selligent_segment.testing import LocalSegment
from selligent_segment.testing._local_postgres import LocalPostgres

_schemas = itertools.count(1)
KEYS = {"acme": "key-acme", "globex": "key-globex"}


@pytest.fixture
def schema() -> str:
    return f"cli_pg_{next(_schemas)}"


@pytest.fixture
def url(postgres: LocalPostgres, schema: str) -> str:
    # trust authentication ignores the password: it is here to prove it is never shown
    secret = postgres.url.replace(f"{postgres.user}@", f"{postgres.user}:s3cret@")
    return f"{secret}?spool_schema={schema}"


@pytest.fixture
def spool(url: str) -> Iterator[PostgresSpool]:
    s = PostgresSpool(url, owner="other-host:1")
    yield s
    s.close()


def _message(tenant: str, i: int) -> EncodedMessage:
    body = json.dumps(
        {
            "type": "track",
            "event": "Email Bounced",
            "messageId": f"{tenant}-{i}",
            "anonymousId": f"r{i}@example.com",
            "timestamp": "2026-01-01T00:00:00Z",
            "properties": {},
        }
    ).encode()
    return EncodedMessage(tenant, f"{tenant}-{i}", EventKind.BOUNCED, body)


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_spool_init_creates_then_finds_nothing_to_do_and_refuses_a_newer_schema(
    capsys: pytest.CaptureFixture[str], url: str, postgres: LocalPostgres, schema: str
) -> None:
    status, out, err = _run(capsys, "spool", "init", "--spool", url)
    assert (status, err) == (0, "")
    assert f"created schema {schema} at version 2" in out
    assert ":***@" in out
    status, out, _ = _run(capsys, "spool", "init", "--spool", url)
    assert status == 0
    assert "nothing to do" in out
    with psycopg.connect(postgres.url, autocommit=True) as admin:
        admin.execute(f"UPDATE {schema}.meta SET version = 99")
    for argv in (["spool", "init"], ["spool", "status"], ["dead-letters", "list"]):
        status, out, err = _run(capsys, *argv, "--spool", url)
        assert status == 2
        assert "version 99 was written by a newer selligent-segment" in err
    assert "s3cret" not in out + err


def test_a_missing_schema_or_database_is_a_usage_error_that_names_it_without_the_password(
    capsys: pytest.CaptureFixture[str], url: str
) -> None:
    status, _, err = _run(capsys, "spool", "status", "--spool", url)
    assert status == 2
    assert "no selligent-segment spool in schema" in err
    assert "spool init --spool" in err
    assert "s3cret" not in err
    status, _, err = _run(
        capsys, "spool", "status", "--spool", "postgresql://u:s3cret@127.0.0.1:1/x"
    )
    assert status == 2
    assert "PostgreSQL spool postgresql://u:***@127.0.0.1:1/x" in err
    assert "s3cret" not in err
    status, _, err = _run(capsys, "flush", "--spool", url, "--write-key", "k")
    assert status == 2
    assert "no selligent-segment spool in schema" in err  # flush never creates a spool


def test_a_password_with_a_raw_question_mark_or_hash_never_shows_in_a_commands_output(
    capsys: pytest.CaptureFixture[str], postgres: LocalPostgres, schema: str
) -> None:
    """A password holding a raw ``?`` or ``#`` (libpq reads it whole) showed from there on
    (``S3cr#et9``) in a command's output and errors (found by a review)."""
    secret = postgres.url.replace(f"{postgres.user}@", f"{postgres.user}:Zq?S3cr#et9@")
    url = f"{secret}?spool_schema={schema}"
    status, out, err = _run(capsys, "spool", "init", "--spool", url)
    assert status == 0, err
    assert f"created schema {schema}" in out
    status, out, err = _run(capsys, "spool", "status", "--spool", url, "--json")
    assert status == 0, err
    assert ":***@" in json.loads(out)["path"]
    status, _, err2 = _run(
        capsys, "spool", "status", "--spool", "postgresql://u:Zq#S3cr?et9@127.0.0.1:1/x"
    )
    assert status == 2
    assert "postgresql://u:***@127.0.0.1:1/x" in err2
    for text in (out, err, err2):
        assert "S3cr" not in text
        assert "et9" not in text


@pytest.mark.slow  # a refused key pauses the tenant: the run waits for nothing more
def test_send_with_this_hosts_clock_ahead_still_reports_what_was_not_delivered(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    url: str,
    tmp_path: Path,
) -> None:
    """``send --spool postgresql://`` counted the run's events still queued by comparing
    the database's ``accepted_at`` with this host's ``time.time()`` at the start: with
    this host's clock ahead of the database's, none counted, and events refused for good
    were reported delivered, exit status 0 (found by a review). The run's start is now
    the database's clock."""
    init_spool(url)
    records = tmp_path / "in.jsonl"
    records.write_text(
        "".join(
            json.dumps({"type": "bounced", "tenant": "acme", "email": f"a{i}@example.com"}) + "\n"
            for i in range(3)
        )
    )
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps({"acme": "key-acme-revoked"}))
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 3600)  # this host an hour ahead
    with LocalSegment(write_keys=["key-globex"]) as segment:
        status, out, err = _run(
            capsys,
            "send",
            "--spool",
            url,
            "--write-keys",
            str(keys),
            "--endpoint",
            segment.url,
            "--json",
            str(records),
        )
    summary = json.loads(out)
    assert status == 3, (out, err)  # not delivered
    assert summary["exit_status"] == 3


def test_spool_status_shows_every_hosts_backlog_leases_dead_letters_and_pauses(
    capsys: pytest.CaptureFixture[str], url: str, spool: PostgresSpool
) -> None:
    spool.put_many([_message("acme", i) for i in range(5)] + [_message("globex", 0)])
    lease = spool.lease("acme", 2, 1 << 20)
    assert lease is not None
    spool.reject(lease, lease.messages[:1], "rejected: bad", 400)
    spool.mark_paused("globex", "unauthorized")
    status, out, err = _run(capsys, "spool", "status", "--spool", url, "--json")
    assert status == 0, err
    data = json.loads(out)
    assert data["engine"] == "postgresql"
    assert "s3cret" not in out
    assert data["path"].startswith("postgresql://")
    assert ":***@" in data["path"]
    assert data["queued"] == 5
    assert data["dead_letters"] == 1
    assert data["processes"] >= 1  # the spool above: "selligent-segment SCHEMA PID.TAG@HOST"
    assert data["file_bytes"] > 0
    tenants = {t["tenant"]: t for t in data["tenants"]}
    assert tenants["acme"]["queued"] == 4
    assert tenants["acme"]["leased"] == 1
    assert tenants["acme"]["dead_letters"] == 1
    assert tenants["acme"]["oldest_age"] >= 0
    assert tenants["globex"]["paused"] == "unauthorized"
    status, out, _ = _run(capsys, "spool", "status", "--spool", url)
    assert status == 0
    assert "bytes in the database's tables" in out
    assert "paused: unauthorized" in out
    assert "s3cret" not in out


def test_dead_letters_list_requeue_purge_on_the_shared_table(
    capsys: pytest.CaptureFixture[str], url: str, spool: PostgresSpool
) -> None:
    spool.put_many([_message("acme", i) for i in range(3)] + [_message("globex", 9)])
    for tenant, reason, status_code in (
        ("acme", "rejected: bad", 400),
        ("globex", "retries_exhausted", None),
    ):
        lease = spool.lease(tenant, 10, 1 << 20)
        assert lease is not None
        spool.reject(lease, lease.messages, reason, status_code)
    status, out, _ = _run(capsys, "dead-letters", "list", "--spool", url, "--json")
    assert status == 0
    letters = json.loads(out)
    assert [(d["tenant"], d["message_id"], d["status"]) for d in letters] == [
        ("acme", "acme-0", 400),
        ("acme", "acme-1", 400),
        ("acme", "acme-2", 400),
        ("globex", "globex-9", None),
    ]
    assert json.loads(letters[0]["body"])["messageId"] == "acme-0"
    assert letters[0]["failed_at"] >= letters[0]["accepted_at"] > 1.7e9
    status, out, err = _run(capsys, "dead-letters", "list", "--spool", url, "--reason", "retries")
    assert status == 0
    assert "globex" in out
    assert "acme" not in out
    assert "1 dead letters" in err
    first = letters[0]["id"]
    status, out, _ = _run(
        capsys, "dead-letters", "requeue", "--spool", url, "--tenant", "acme", "--json"
    )
    assert (status, json.loads(out)) == (0, {"requeued": 3})
    lease = spool.lease("acme", 10, 1 << 20)
    assert lease is not None
    assert [m.message_id for m in lease.messages] == ["acme-0", "acme-1", "acme-2"]
    spool.release(lease, lease.messages)
    status, _, err = _run(capsys, "dead-letters", "purge", "--spool", url)
    assert status == 2
    assert "needs --all" in err
    status, out, _ = _run(capsys, "dead-letters", "purge", "--spool", url, "--id", str(first))
    assert (status, out) == (0, "0 dead letters purged\n")  # requeued: no longer a letter
    status, out, _ = _run(capsys, "dead-letters", "purge", "--spool", url, "--all")
    assert (status, out) == (0, "1 dead letters purged\n")
    with open_view(url) as view:
        assert view.dead_letters() == []
        assert view.status().queued == 3


@pytest.mark.slow
def test_flush_delivers_every_hosts_rows_from_a_subprocess(
    url: str, spool: PostgresSpool, tmp_path: Path
) -> None:
    spool.put_many([_message("acme", i) for i in range(30)] + [_message("globex", 0)])
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps(KEYS))
    with LocalSegment(write_keys=KEYS.values()) as server:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "selligent_segment",
                "flush",
                "--spool",
                url,
                "--write-keys",
                str(keys),
                "--endpoint",
                server.url,
                "--timeout",
                "60",
            ],
            capture_output=True,
            text=True,
            env={k: v for k, v in os.environ.items() if k != "SEGMENT_WRITE_KEY"},
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        assert server.accepted_count == 31
    assert "delivered 31 events; 0 left in postgresql://" in done.stderr
    assert "s3cret" not in done.stderr + done.stdout
    with open_view(url) as view:
        assert view.status().queued == 0


def test_live_processes_are_the_emitters_and_relays_connected_to_this_schema(
    url: str, server: LocalSegment, postgres: LocalPostgres
) -> None:
    init_spool(url)
    with open_view(url) as view:
        assert view.status().processes == 0  # the view itself is not counted
        other = f"{postgres.url}?spool_schema=cli_pg_elsewhere"
        with (
            Emitter(write_keys=KEYS, endpoint=server.url, spool=other),
            Emitter(write_keys=KEYS, endpoint=server.url, spool=url),
        ):
            assert view.status().processes == 1  # this process, in this schema
        assert "s3cret" not in repr(view)


def test_spool_init_with_a_spool_file_creates_it_through_the_same_command(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "new" / "spool.db"
    status, out, _ = _run(capsys, "spool", "init", "--spool", str(path))
    assert (status, out) == (0, f"{path}: spool file created\n")
    status, out, _ = _run(capsys, "spool", "status", "--spool", str(path), "--json")
    assert status == 0
    assert json.loads(out)["engine"] == "file"
