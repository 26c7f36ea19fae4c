"""``selligent-segment send`` delivering to a LocalSegment, run as a subprocess."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _signals import default_sigint, press_ctrl_c

from selligent_segment.testing import LocalSegment

ROOT = Path(__file__).resolve().parent.parent
SEND = [sys.executable, "-m", "selligent_segment", "send"]


@pytest.fixture
def server() -> Iterator[LocalSegment]:
    with LocalSegment(write_keys=["key-acme", "key-globex"]) as segment:
        yield segment


def clean_env(env: dict[str, str] | None = None) -> dict[str, str]:
    full_env = {k: v for k, v in os.environ.items() if k != "SEGMENT_WRITE_KEY"}
    full_env.update(env or {})
    return full_env


def run(
    *args: str, env: dict[str, str] | None = None, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "selligent_segment", "send", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(env),
        cwd=ROOT,
    )


def write(path: Path, *records: dict[str, object] | str) -> str:
    lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def rec(i: int, tenant: str) -> dict[str, object]:
    return {"type": "opened", "tenant": tenant, "email": f"u{i}@example.com", "event_id": str(i)}


@pytest.fixture
def keys_file(tmp_path: Path) -> str:
    path = tmp_path / "keys.json"
    path.write_text(json.dumps({"acme": "key-acme", "globex": "key-globex"}))
    return str(path)


def test_every_valid_record_is_delivered_to_its_tenant(
    server: LocalSegment, tmp_path: Path, keys_file: str
) -> None:
    data = write(tmp_path / "in.jsonl", rec(1, "acme"), rec(2, "globex"), rec(3, "acme"))
    result = run(data, "--write-keys", keys_file, "--endpoint", server.url)
    assert result.returncode == 0, result.stderr
    assert len(server.events("key-acme")) == 2
    assert len(server.events("key-globex")) == 1
    assert result.stderr.splitlines() == [
        "selligent-segment: read 3 records from 1 input: 3 valid, 0 invalid",
        "selligent-segment: 3 events accepted, 3 delivered, 0 not delivered",
        "  tenant  accepted  delivered  not delivered",
        "  acme           2          2              0",
        "  globex         1          1              0",
    ]


def test_write_key_from_the_environment(server: LocalSegment, tmp_path: Path) -> None:
    data = write(tmp_path / "in.jsonl", {"type": "delivered", "email": "a@example.com"})
    result = run(data, "--endpoint", server.url, env={"SEGMENT_WRITE_KEY": "key-acme"})
    assert result.returncode == 0, result.stderr
    assert server.accepted_count == 1
    assert "key-acme" not in result.stderr


def test_write_keys_given_beside_a_write_key_in_the_environment_are_used(
    server: LocalSegment, tmp_path: Path, keys_file: str
) -> None:
    """``SEGMENT_WRITE_KEY`` is ``--write-key``'s default: it made an explicit
    ``--write-keys`` a usage error ("give one of ...")."""
    data = write(tmp_path / "in.jsonl", rec(1, "acme"))
    result = run(
        data, "--endpoint", server.url, "--write-keys", keys_file, env={"SEGMENT_WRITE_KEY": "k"}
    )
    assert result.returncode == 0, result.stderr
    assert server.accepted_count == 1


def test_invalid_lines_are_reported_and_the_rest_delivered(
    server: LocalSegment, tmp_path: Path, keys_file: str
) -> None:
    data = write(tmp_path / "in.jsonl", rec(1, "acme"), "{not json", rec(2, "initech"))
    result = run(data, "--write-keys", keys_file, "--endpoint", server.url)
    assert result.returncode == 1
    assert f"{data}:2: line: invalid JSON" in result.stderr
    assert f"{data}:3: tenant: no write key configured for 'initech'" in result.stderr
    assert "read 3 records from 1 input: 1 valid, 2 invalid" in result.stderr
    assert server.accepted_count == 1


@pytest.mark.slow  # half a second or more: the second step of .ci/run
def test_a_refused_key_names_the_tenant_never_the_key(tmp_path: Path) -> None:
    with LocalSegment(write_keys=["key-globex"]) as server:
        keys = tmp_path / "keys.json"
        keys.write_text(json.dumps({"acme": "key-acme-revoked", "globex": "key-globex"}))
        data = write(tmp_path / "in.jsonl", rec(1, "acme"), "{}", rec(2, "globex"))
        result = run(data, "--write-keys", str(keys), "--endpoint", server.url)
        assert result.returncode == 3  # not delivered wins over invalid (1)
        assert "tenant 'acme'" in result.stderr
        assert "paused" in result.stderr
        assert "key-acme-revoked" not in result.stderr + result.stdout
        assert "  acme           1          0              1" in result.stderr.splitlines()
        assert server.events("key-globex")


@pytest.mark.slow
def test_usage_errors_exit_2(server: LocalSegment, tmp_path: Path, keys_file: str) -> None:
    data = write(tmp_path / "in.jsonl", rec(1, "acme"))
    no_key = run(data, "--endpoint", server.url)
    assert no_key.returncode == 2
    assert "--write-key" in no_key.stderr
    bad_keys = tmp_path / "bad.json"
    bad_keys.write_text("[1, 2]")
    assert run(data, "--write-keys", str(bad_keys), "--endpoint", server.url).returncode == 2
    insecure = run(data, "--write-keys", keys_file, "--endpoint", "http://example.com")
    assert insecure.returncode == 2
    assert "endpoint" in insecure.stderr
    missing = run(data, str(tmp_path / "nope.jsonl"), "--write-keys", keys_file)
    assert missing.returncode == 2
    assert "nope.jsonl: cannot read" in missing.stderr
    assert server.request_count == 0  # nothing is sent when an input cannot be read


@pytest.mark.slow  # half a second or more: the second step of .ci/run
def test_csv_is_delivered_like_the_dry_run_says(
    server: LocalSegment, tmp_path: Path, keys_file: str
) -> None:
    csv_file = ROOT / "examples" / "callbacks.csv"
    dry = run("--dry-run", str(csv_file))
    expected = [json.loads(line) for line in dry.stdout.splitlines()]
    result = run(str(csv_file), "--write-keys", keys_file, "--endpoint", server.url)
    assert result.returncode == 0, result.stderr
    by_id = {e["messageId"]: e for e in server.accepted}
    assert set(by_id) == {e["messageId"] for e in expected}
    for message in expected:
        sent = by_id[message["messageId"]]
        assert {k: sent[k] for k in message} == message
    assert [e["messageId"] for e in server.events("key-globex")] == [
        e["messageId"] for e in expected[3:]
    ]


def test_csv_from_stdin(server: LocalSegment, keys_file: str) -> None:
    rows = "type,tenant,email,event_id\nopen,acme,a@example.com,1\nopen,globex,b@example.com,2\n"
    result = run(
        "--format", "csv", "-", "--write-keys", keys_file, "--endpoint", server.url, stdin=rows
    )
    assert result.returncode == 0, result.stderr
    assert len(server.events("key-acme")) == 1
    assert len(server.events("key-globex")) == 1


def test_sending_the_same_file_again_is_deduplicated_by_message_id(
    server: LocalSegment, tmp_path: Path, keys_file: str
) -> None:
    data = write(tmp_path / "in.jsonl", rec(1, "acme"), rec(2, "globex"), rec(3, "acme"))
    first = run(data, "--write-keys", keys_file, "--endpoint", server.url)
    again = run(data, "--write-keys", keys_file, "--endpoint", server.url)
    assert first.returncode == again.returncode == 0
    assert server.accepted_count == 3
    assert server.duplicates == 3
    assert len(server.message_ids()) == 3


def test_rejects_while_delivering(server: LocalSegment, tmp_path: Path, keys_file: str) -> None:
    data = write(
        tmp_path / "in.jsonl",
        rec(1, "acme"),
        rec(2, "initech"),
        {"type": "open", "tenant": "acme", "email": "nope"},
        rec(3, "globex"),
    )
    rejects = tmp_path / "rejects.jsonl"
    result = run(
        data, "--write-keys", keys_file, "--endpoint", server.url, "--rejects", str(rejects)
    )
    assert result.returncode == 1
    assert server.accepted_count == 2
    lines = Path(data).read_text().splitlines()
    assert rejects.read_text().splitlines() == [lines[1], lines[2]]
    assert Path(f"{rejects}.reasons").read_text().splitlines() == [
        f"{rejects}:1: tenant: no write key configured for 'initech' (from {data}:2)",
        f"{rejects}:2: email: not a plausible email address (from {data}:3)",
    ]


def test_an_oversized_record_is_refused_with_its_line(
    server: LocalSegment, tmp_path: Path, keys_file: str
) -> None:
    big = {**rec(2, "acme"), "properties": {"blob": "x" * 40_000}}
    data = write(tmp_path / "in.jsonl", rec(1, "acme"), big, rec(3, "globex"))
    result = run(data, "--write-keys", keys_file, "--endpoint", server.url)
    assert result.returncode == 1
    assert f"{data}:2: record: the track message is " in result.stderr
    assert server.accepted_count == 2


@pytest.mark.slow
def test_undelivered_at_the_timeout_exits_3(tmp_path: Path, keys_file: str) -> None:
    with LocalSegment() as server:
        server.outage(503)
        data = write(tmp_path / "in.jsonl", rec(1, "acme"), rec(2, "globex"))
        result = run(
            data,
            "--write-keys",
            keys_file,
            "--endpoint",
            server.url,
            "--timeout",
            "1",
            "--spool",
            "memory",
        )
    assert result.returncode == 3
    assert "2 events accepted, 0 delivered, 2 not delivered" in result.stderr
    assert "tenant 'acme': 1 not delivered; 1 unsent_at_close; last error: HTTP 503" in (
        result.stderr
    )
    assert "tenant 'globex': 1 not delivered; 1 unsent_at_close; last error: HTTP 503" in (
        result.stderr
    )


@pytest.mark.slow
def test_undelivered_events_stay_in_the_spool_and_flush_delivers_them(
    tmp_path: Path, keys_file: str
) -> None:
    spool = tmp_path / "spool.db"
    data = write(tmp_path / "in.jsonl", rec(1, "acme"), rec(2, "globex"))
    with LocalSegment() as server:
        server.outage(503)
        result = run(
            data,
            "--write-keys",
            keys_file,
            "--endpoint",
            server.url,
            "--timeout",
            "1",
            "--spool",
            str(spool),
        )
        assert result.returncode == 3
        assert "2 not delivered" in result.stderr
        assert "2 events stay in the spool" in result.stderr
        server.end_outage()
        flushed = subprocess.run(
            [
                sys.executable,
                "-m",
                "selligent_segment",
                "flush",
                "--spool",
                str(spool),
                "--write-keys",
                keys_file,
                "--endpoint",
                server.url,
            ],
            capture_output=True,
            text=True,
            env=clean_env(),
            timeout=60,
        )
        assert flushed.returncode == 0, flushed.stderr
        assert server.accepted_count == 2


def _send_in_background(
    data: str, keys_file: str, endpoint: str, *extra: str, **options: Any
) -> subprocess.Popen[str]:
    """``send DATA`` (and ``extra`` options) to ``endpoint`` in a child process, its stdout
    and stderr piped, its stdin empty unless ``options`` say otherwise."""
    options.setdefault("stdin", subprocess.DEVNULL)
    return subprocess.Popen(
        [*SEND, data, "--write-keys", keys_file, "--endpoint", endpoint, *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
        cwd=ROOT,
        **options,
    )


def test_interrupted_run_exits_130_and_says_how_to_resume(
    server: LocalSegment, keys_file: str
) -> None:
    proc = _send_in_background(
        "-", keys_file, server.url, stdin=subprocess.PIPE, preexec_fn=default_sigint
    )
    try:
        assert proc.stdin is not None
        proc.stdin.write(json.dumps(rec(1, "acme")) + "\n")
        proc.stdin.flush()
        assert server.wait_for(1, timeout=30)  # read and delivered; now it waits for more
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130
    assert "interrupted while reading" in err
    assert "1 events accepted, 1 delivered, 0 not delivered" in err
    assert "re-run the same command to resume" in err


def test_sigterm_stops_send_like_ctrl_c_with_its_summary_and_exits_143(
    tmp_path: Path, keys_file: str
) -> None:
    """A deploy's SIGTERM while send waits for an endpoint in an outage: the summary still
    says what was accepted and delivered, how to resume, and the status is 143."""
    data = write(tmp_path / "in.jsonl", rec(1, "acme"))
    with LocalSegment(write_keys=["key-acme", "key-globex"]) as server:
        server.outage(503)
        proc = _send_in_background(data, keys_file, server.url)
        try:
            assert server.wait_for_arrivals(1, timeout=30)  # read; now it retries
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=60)
        finally:
            proc.kill()
    assert proc.returncode == 143, err
    assert "interrupted while delivering" in err
    assert "1 events accepted, 0 delivered, 1 not delivered" in err
    assert "re-run the same command to resume" in err
    assert "Traceback" not in err


def test_the_json_summary_of_a_run_stopped_by_sigterm_says_143(
    tmp_path: Path, keys_file: str
) -> None:
    """Found by a review: SIGTERM is handled as Ctrl-C, and the ``--json`` summary said
    ``"exit_status": 130`` while the process exited 143: a script reading the summary saw
    another status than ``$?``."""
    data = write(tmp_path / "in.jsonl", rec(1, "acme"))
    with LocalSegment(write_keys=["key-acme", "key-globex"]) as server:
        server.outage(503)
        proc = _send_in_background(data, keys_file, server.url, "--json")
        try:
            assert server.wait_for_arrivals(1, timeout=30)  # read; now it retries
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=60)
        finally:
            proc.kill()
    assert proc.returncode == 143, err
    summary = json.loads(out)
    assert summary["interrupted"] is True
    assert summary["exit_status"] == 143


def test_a_second_ctrl_c_while_send_shuts_down_still_gives_the_summary(
    tmp_path: Path, keys_file: str
) -> None:
    """People press Ctrl-C twice: the second one, arriving while the emitter closed (up
    to a second), raised out of the close and printed a traceback, with no summary and
    no resume hint (exit -2, not 130)."""
    data = write(tmp_path / "in.jsonl", rec(1, "acme"))
    with LocalSegment(write_keys=["key-acme", "key-globex"]) as server:
        server.outage(503)
        proc = _send_in_background(data, keys_file, server.url, preexec_fn=default_sigint)
        try:
            assert server.wait_for_arrivals(1, timeout=30)  # read; now it retries
            err = press_ctrl_c(proc, again_on="interrupted while delivering")
        finally:
            proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert "1 events accepted, 0 delivered, 1 not delivered" in err
    assert "re-run the same command to resume" in err


@pytest.mark.slow
def test_progress_on_a_terminal_while_sending(tmp_path: Path, keys_file: str) -> None:
    with LocalSegment() as server:
        server.outage(503)
        data = write(tmp_path / "in.jsonl", rec(1, "acme"))
        master, slave = os.openpty()
        proc = subprocess.Popen(
            [*SEND, data, "--write-keys", keys_file, "--endpoint", server.url, "--timeout", "1"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=slave,
            env=clean_env(),
            cwd=ROOT,
        )
        os.close(slave)
        chunks = []
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        os.close(master)
        assert proc.wait(timeout=60) == 3
    terminal = b"".join(chunks)
    assert b"reading [" in terminal
    assert b"sending [" in terminal
    assert b"0/1 delivered" in terminal
    assert b"1 events accepted, 0 delivered, 1 not delivered" in terminal


# -- what a run counts, says and prints (issue 15) -------------------------------------------


def closed_port() -> str:
    """A loopback URL nothing listens on (the port was just free)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


def test_a_resumed_run_counts_its_own_events_and_exits_0(
    server: LocalSegment, tmp_path: Path
) -> None:
    """The documented resume: a run that could not deliver exits 3 and leaves its events
    in the spool; the next run (new records) delivers those too, says so on a line of its
    own, and its summary and exit status are about its own events. It said "6 events
    accepted, 12 delivered, -6 not delivered" and exited 3."""
    spool = str(tmp_path / "spool.db")
    first = write(tmp_path / "first.jsonl", *(rec(i, "acme") for i in range(6)))
    second = write(tmp_path / "second.jsonl", *(rec(i, "acme") for i in range(6, 12)))
    failed = run(
        first,
        "--endpoint",
        closed_port(),
        "--timeout",
        "0",
        "--spool",
        spool,
        env={"SEGMENT_WRITE_KEY": "key-acme"},
    )
    assert failed.returncode == 3, failed.stderr
    resumed = run(
        second, "--endpoint", server.url, "--spool", spool, env={"SEGMENT_WRITE_KEY": "key-acme"}
    )
    assert resumed.returncode == 0, resumed.stderr
    assert len(server.events("key-acme")) == 12
    assert "6 events accepted, 6 delivered, 0 not delivered" in resumed.stderr
    assert "also delivered 6 events earlier runs left in the spool" in resumed.stderr
    assert "-6" not in resumed.stderr


@pytest.mark.slow
def test_an_unreachable_endpoint_is_named_while_it_waits_and_in_the_summary(
    tmp_path: Path,
) -> None:
    """It was silent for minutes, then "6 not delivered" with no reason."""
    data = write(tmp_path / "in.jsonl", rec(1, "acme"))
    result = run(
        data,
        "--endpoint",
        closed_port(),
        "--timeout",
        "1",
        "--spool",
        "memory",
        env={"SEGMENT_WRITE_KEY": "key-acme"},
    )
    assert result.returncode == 3
    lines = result.stderr.splitlines()
    waiting = [line for line in lines if "not delivered yet, retrying" in line]
    assert len(waiting) == 1, result.stderr  # said once, not every retry
    assert waiting[0].startswith("selligent-segment: warning: tenant 'acme': ")
    assert "Connection refused" in waiting[0]
    summary = [line for line in lines if line.startswith("selligent-segment: tenant 'acme': ")]
    assert len(summary) == 1
    assert "last error: " in summary[0]
    assert "Connection refused" in summary[0]
    assert "key-acme" not in result.stderr


def test_send_json_is_one_object_on_stdout(server: LocalSegment, tmp_path: Path) -> None:
    data = write(tmp_path / "in.jsonl", rec(1, "acme"), rec(2, "acme"), "{not json")
    result = run(
        data,
        "--endpoint",
        server.url,
        "--spool",
        "memory",
        "--json",
        env={"SEGMENT_WRITE_KEY": "key-acme"},
    )
    assert result.returncode == 1, result.stderr
    summary = json.loads(result.stdout)
    assert {k: summary[k] for k in ("read", "valid", "invalid", "inputs")} == {
        "read": 3,
        "valid": 2,
        "invalid": 1,
        "inputs": 1,
    }
    assert (summary["accepted"], summary["delivered"], summary["not_delivered"]) == (2, 2, 0)
    assert summary["earlier"] == {"delivered": 0, "left": 0}
    assert summary["tenants"]["acme"]["delivered"] == 2
    assert summary["exit_status"] == 1
    assert summary["interrupted"] is False
    assert "events accepted" not in result.stderr  # the text summary is not printed too
    assert "in.jsonl:3: " in result.stderr  # the invalid record still is


def test_send_json_with_dry_run_is_a_usage_error(tmp_path: Path) -> None:
    data = write(tmp_path / "in.jsonl", rec(1, "acme"))
    result = run(data, "--dry-run", "--json")
    assert result.returncode == 2
    assert "--json" in result.stderr
    assert result.stdout == ""


class _Silent:
    """A loopback HTTP endpoint that reads each request and never answers (until closed):
    a request sent there stays in flight, its events leased."""

    def __init__(self) -> None:
        import socket
        import threading

        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.received = threading.Event()
        self.held: list[socket.socket] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.held.append(conn)
            if conn.recv(65536):
                self.received.set()

    def close(self) -> None:
        self.listener.close()
        for conn in self.held:
            conn.close()
        self.thread.join(5)


@pytest.mark.slow
def test_another_process_events_in_flight_do_not_count_against_this_run(
    server: LocalSegment, tmp_path: Path
) -> None:
    """A spool file shared with a live process: its 3 events, accepted before this run,
    are leased and in flight (to an endpoint that does not answer) while this run
    delivers its 10. This run exits 0; it said '3 not delivered' and exited 3."""
    from selligent_segment import BatchPolicy, Emitter

    spool = str(tmp_path / "spool.db")
    silent = _Silent()
    other = Emitter(
        "key-acme", endpoint=silent.url, spool=spool, handle_sigterm=False,
        batch=BatchPolicy(linger=0.0), timeout=60,
    )  # fmt: skip
    try:
        other.emit_many([rec(i, "acme") for i in range(100, 103)])
        assert silent.received.wait(10)  # the other process's 3 events are leased
        data = write(tmp_path / "in.jsonl", *(rec(i, "acme") for i in range(10)))
        result = run(
            data, "--json", "--endpoint", server.url, "--spool", spool, "--timeout", "1",
            env={"SEGMENT_WRITE_KEY": "key-acme"},  # it waits for the other's events too
        )  # fmt: skip
    finally:
        other.close(0)
        silent.close()
    assert len(server.events("key-acme")) == 10
    summary = json.loads(result.stdout)
    assert result.returncode == 0, result.stderr
    assert (summary["accepted"], summary["delivered"], summary["not_delivered"]) == (10, 10, 0)
    assert summary["earlier"] == {"delivered": 0, "left": 3}
