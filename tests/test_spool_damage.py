"""A spool file or its journals damaged, foreign or unwritable: nothing lost silently, a
clear error naming the file and the reason, nothing hung.

Real SQLite files in tmp_path, real processes killed with SIGKILL, LocalSegment on
loopback, the command line run as a user would.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from selligent_segment import BatchPolicy, Emitter, RetryPolicy, SpoolError, SpoolFile, message_id
from selligent_segment.spool._journal import FRAME_OVERHEAD, journals_of, read_frames
from selligent_segment.spool._schema import APPLICATION_ID, SCHEMA_VERSION, journal_dir
from selligent_segment.spool._sqlite import SqliteSpool
from selligent_segment.testing import LocalSegment

TESTS = Path(__file__).resolve().parent
FAST_RETRY = RetryPolicy(initial_backoff=0.02, max_backoff=0.2, max_attempts=1_000_000)

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="needs SIGKILL and flock"
)

sys.path.insert(0, str(TESTS))
import _crash_worker as worker  # noqa: E402


def _journal_in_a_killed_process(spool: Path, cfg: dict[str, Any], n: int) -> str:
    """Journal records 0..n-1 of ``cfg`` (one ``accept`` each, as ``emit`` does) in a
    child that is then killed with SIGKILL before any reaches the database; the owner."""
    script = (
        "import os, orjson, sys\n"
        "from pathlib import Path\n"
        "sys.path.insert(0, sys.argv[2])\n"
        "import _crash_worker as w\n"
        "from selligent_segment.spool._sqlite import SqliteSpool\n"
        f"cfg = {cfg!r}\n"
        "spool = SqliteSpool(Path(sys.argv[1]), max_bytes=1 << 20, decoder=None)\n"
        f"for i in range({n}):\n"
        "    spool.accept([orjson.dumps((w.tenant_of(cfg, i), None, w.record(cfg, i)))])\n"
        "print(spool.owner, flush=True)\n"
        "os.kill(os.getpid(), 9)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, str(spool), str(TESTS)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    return proc.stdout.strip()


def _emitter(server: LocalSegment, spool: Path, cfg: dict[str, Any]) -> Emitter:
    return Emitter(
        write_keys=worker.write_keys(cfg),
        endpoint=server.url,
        spool=spool,
        retry=FAST_RETRY,
        batch=BatchPolicy(linger=0.0),
        max_requests_per_second=0,
    )


# -- item: a damaged byte in a dead process's journal ----------------------------------------


@pytest.mark.fault_injection
def test_damaged_journal_bytes_cost_only_their_record_and_are_kept_and_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = tmp_path / "spool.db"
    cfg = {"prefix": "d", "tenants": 3}
    n = 1_000
    owner = _journal_in_a_killed_process(spool, cfg, n)
    journals = spool.with_name("spool.db.journals")
    (name,) = journals_of(journals, owner)
    path = journals / name
    ends = [end for end, _ in read_frames(path, 0)]
    assert len(ends) == n
    # One byte in the middle of the journal flips: the record whose frame holds it is lost.
    middle = path.stat().st_size // 2
    hit = next(i for i, end in enumerate(ends) if end > middle)
    start = ends[hit - 1]
    data = bytearray(path.read_bytes())
    data[middle] ^= 0x20
    path.write_bytes(bytes(data))

    caplog.set_level(logging.ERROR, logger="selligent_segment")
    with LocalSegment() as server:
        em = _emitter(server, spool, cfg)
        assert em.flush(60)
        assert em.close(10)
        expected = {message_id(worker.record(cfg, i)) for i in range(n) if i != hit}
        assert server.message_ids() == expected
    with SpoolFile(spool) as sf:
        (letter,) = sf.dead_letters()
    assert letter.reason == (f"unreadable: damaged journal bytes at {start}..{ends[hit]} in {path}")
    assert letter.body == bytes(data[start : ends[hit]])
    assert not letter.requeueable
    assert ends[hit] - start > FRAME_OVERHEAD
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    damage = [m for m in errors if "damaged journal bytes" in m]
    assert len(damage) == 1, errors
    assert f"{start}..{ends[hit]}" in damage[0]
    assert str(path) in damage[0]
    assert "@example.com" not in " ".join(errors)  # no personal data in the log
    assert not path.exists()  # replayed, kept as a dead letter, deleted
    with contextlib.closing(sqlite3.connect(spool)) as db:
        assert db.execute("SELECT count(*) FROM messages").fetchone()[0] == 0


# -- helpers for the spool files below -----------------------------------------------------------


def _cli(
    *args: str, prefix: tuple[str, ...] = (), stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``selligent-segment ARGS`` in a child (``prefix``: a wrapper of the interpreter)."""
    env = {k: v for k, v in os.environ.items() if k != "SEGMENT_WRITE_KEY"}
    return subprocess.run(
        [sys.executable, *prefix, "-m", "selligent_segment", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        cwd=TESTS.parent,
        timeout=120,
        check=False,
    )


def _filled(spool: Path, n: int = 300) -> None:
    """A real spool file holding ``n`` queued events of three tenants and one dead letter
    (accepted while nothing could deliver them: the endpoint is a closed port)."""
    down = LocalSegment().start()
    url = down.url
    down.stop()
    cfg = {"prefix": "f", "tenants": 3}
    em = Emitter(
        write_keys=worker.write_keys(cfg),
        endpoint=url,
        spool=spool,
        retry=RetryPolicy(initial_backoff=30.0, max_backoff=60.0),
    )
    assert em.emit_many(worker.record(cfg, i) for i in range(n)).accepted == n
    em.close(0.2)
    with contextlib.closing(sqlite3.connect(spool)) as db:
        db.execute(
            "INSERT INTO dead_letters (tenant, message_id, kind, body, accepted_at, failed_at, "
            "reason, status) VALUES ('t0', 'mid-1', 'delivered', X'7B7D', 1, 2, 'rejected: x', 400)"
        )
        db.commit()
        assert db.execute("SELECT count(*) FROM messages").fetchone()[0] == n


def _pages(spool: Path, name: str) -> list[int]:
    """The page numbers of table or index ``name`` (SQLite's dbstat table)."""
    with contextlib.closing(sqlite3.connect(spool)) as db:
        try:
            rows = db.execute(
                "SELECT pageno FROM dbstat WHERE name = ? ORDER BY pageno", (name,)
            ).fetchall()
        except sqlite3.OperationalError:
            pytest.skip("this SQLite has no dbstat table to find a table's pages")
        (page_size,) = db.execute("PRAGMA page_size").fetchone()
    assert page_size == 4096
    return [p for (p,) in rows]


def _damage(spool: Path, page: int) -> bytes:
    """Overwrite page ``page`` (1-based) of ``spool`` with noise; the file's new bytes."""
    data = bytearray(spool.read_bytes())
    start = (page - 1) * 4096
    data[start : start + 4096] = bytes((i * 131 + 7) % 256 for i in range(4096))
    spool.write_bytes(bytes(data))
    return bytes(data)


def _damaged_spool(tmp_path: Path, name: str = "messages") -> tuple[Path, bytes]:
    """A real spool with rows, one page of ``name`` in the middle overwritten."""
    spool = tmp_path / "spool.db"
    _filled(spool, 2_000)
    pages = _pages(spool, name)
    return spool, _damage(spool, pages[len(pages) // 2])


# -- item: a damaged page in the spool file --------------------------------------------------


@pytest.mark.slow
@pytest.mark.fault_injection
def test_a_damaged_page_is_a_spool_error_naming_the_file_not_a_raw_sqlite_error(
    tmp_path: Path,
) -> None:
    spool, _ = _damaged_spool(tmp_path)
    down = LocalSegment().start()
    url = down.url
    down.stop()
    em = Emitter(
        write_keys=worker.write_keys({"tenants": 3}),
        endpoint=url,
        spool=spool,
        retry=RetryPolicy(initial_backoff=30.0, max_backoff=60.0),
    )
    try:
        with pytest.raises(SpoolError, match="corrupt") as info:
            em.stats()
        assert str(spool) in str(info.value)
        assert not em.flush(2)  # not delivered, and it says so: it does not hang
    finally:
        em.close(0)


@pytest.mark.slow
@pytest.mark.fault_injection
def test_senders_on_a_damaged_file_say_so_once_without_tracebacks(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Senders leasing from a damaged page: one ERROR line naming the file and the
    damage (repeated at most every 10 s), never a traceback a second."""
    spool, _ = _damaged_spool(tmp_path)
    caplog.set_level(logging.ERROR, logger="selligent_segment")
    with LocalSegment() as server:
        em = Emitter(
            write_keys=worker.write_keys({"tenants": 3}),
            endpoint=server.url,
            spool=spool,
            retry=FAST_RETRY,
        )
        try:
            assert not em.flush(3)  # senders try again every second meanwhile
        finally:
            em.close(0)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not [r.getMessage() for r in errors if r.exc_info], "a traceback was logged"
    waits = [r.getMessage() for r in errors if "delivery waits" in r.getMessage()]
    assert len(waits) == 1, waits
    assert str(spool) in waits[0]
    assert "corrupt" in waits[0]


def test_upkeep_on_a_damaged_file_logs_one_error_line_without_a_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool, _ = _damaged_spool(tmp_path, "messages_queue")  # the index upkeep reads
    caplog.set_level(logging.ERROR, logger="selligent_segment")
    sq = SqliteSpool(spool, max_bytes=1 << 24, decoder=lambda payload: None)  # type: ignore[arg-type, return-value]
    try:
        for _ in range(5):  # the encoder thread runs upkeep every second or so
            assert sq.maintain(force=True) == []
    finally:
        sq.close()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    assert errors[0].exc_info is None
    assert str(spool) in errors[0].getMessage()
    assert "corrupt" in errors[0].getMessage()


@pytest.mark.slow
def test_flush_and_send_on_a_damaged_spool_say_so_in_one_line_and_exit_2(
    tmp_path: Path,
) -> None:
    spool, damaged = _damaged_spool(tmp_path)
    keys = tmp_path / "keys.json"
    keys.write_text('{"t0": "k0", "t1": "k1", "t2": "k2"}')
    with LocalSegment() as server:
        common = ("--spool", str(spool), "--write-keys", str(keys), "--endpoint", server.url)
        flush = _cli("flush", *common, "--timeout", "20")
        record = '{"type": "delivered", "tenant": "t0", "email": "a@example.com"}\n'
        send = _cli("send", *common, "--timeout", "20", "-", stdin=record)
        status = _cli("spool", "status", "--spool", str(spool))
        assert server.request_count == 0
    for done in (flush, send, status):
        assert done.returncode == 2, done.stderr
        (line,) = done.stderr.strip().splitlines()
        assert str(spool) in line
        assert "the spool file is corrupt" in line
    assert spool.read_bytes() == damaged  # left untouched


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("text", "not SQLite"),
        ("other application", "another application"),
        ("newer schema", "newer than this version"),
    ],
)
def test_send_to_a_foreign_or_newer_spool_file_says_so_in_one_line_and_exits_2(
    tmp_path: Path, kind: str, reason: str
) -> None:
    spool = tmp_path / "data.db"
    if kind == "text":
        spool.write_text("name,email\n")
    else:
        with contextlib.closing(sqlite3.connect(spool)) as db:
            if kind == "newer schema":
                db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
            db.execute("CREATE TABLE contacts (email TEXT)")
            db.commit()
    before = spool.read_bytes()
    record = '{"type": "delivered", "tenant": "acme", "email": "a@example.com"}\n'
    done = _cli(
        "send", "--spool", str(spool), "--write-key", "k", "--endpoint", "http://127.0.0.1:9",
        "-", stdin=record,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert str(spool) in line
    assert reason in line
    assert spool.read_bytes() == before


# -- item: parent directories of a new spool ---------------------------------------------------


def test_missing_parent_directories_of_a_new_spool_are_private_whatever_the_umask(
    tmp_path: Path,
) -> None:
    spool = tmp_path / "a" / "b" / "c" / "spool.db"
    before = stat.S_IMODE(tmp_path.stat().st_mode)
    old = os.umask(0)
    try:
        sq = SqliteSpool(spool, max_bytes=1 << 20, decoder=lambda payload: None)  # type: ignore[arg-type, return-value]
        sq.close()
    finally:
        os.umask(old)
    for made in (tmp_path / "a", tmp_path / "a" / "b", spool.parent, journal_dir(spool)):
        assert stat.S_IMODE(made.stat().st_mode) == 0o700, made
    assert stat.S_IMODE(spool.stat().st_mode) == 0o600
    assert stat.S_IMODE(tmp_path.stat().st_mode) == before  # an existing one is left alone


# -- item: a healthy spool this user may read but not write ---------------------------------------

# Tests run as root in CI, and root ignores permission bits. The child is therefore run as
# root without CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH (dropped from its bounding set
# before it execs the interpreter): it then obeys the permission bits exactly as the
# file's owner without those rights would. Running it as `nobody` instead is not possible
# here: the interpreter lives under /root (mode 0700) and pytest's tmp_path is private to
# root, so `nobody` can run neither. As another user the test needs no wrapper. Each test
# first proves the wrapper works (the child cannot create a file in the directory) and is
# skipped, saying why, when it does not.
_OBEY_PERMISSION_BITS = (
    "import ctypes, os, sys\n"
    "libc = ctypes.CDLL(None, use_errno=True)\n"
    "for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH\n"
    "    if libc.prctl(24, cap, 0, 0, 0):  # PR_CAPBSET_DROP\n"
    "        sys.exit('cannot drop capabilities: ' + os.strerror(ctypes.get_errno()))\n"
    "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])\n"
)


def _unprivileged(read_only: Path) -> tuple[str, ...]:
    """The interpreter arguments that make a child obey permission bits; skips the test
    when that cannot be arranged (the probe could open ``read_only`` for writing)."""
    prefix: tuple[str, ...] = ()
    if os.geteuid() == 0:
        prefix = ("-c", _OBEY_PERMISSION_BITS)
    probe = subprocess.run(
        [sys.executable, *prefix, "-c", "import sys; open(sys.argv[1], 'a')", str(read_only)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if probe.returncode == 0 or "PermissionError" not in probe.stderr:
        pytest.skip(f"cannot run a child that obeys permission bits: {probe.stderr.strip()}")
    return prefix


def _files(directory: Path) -> dict[str, bytes]:
    """The content of the files in ``directory``: SQLite's WAL index (``-shm``, rebuilt by
    any reader) and an empty WAL (a reader may make one) are not content."""
    return {
        p.name: p.read_bytes()
        for p in directory.iterdir()
        if p.is_file() and not p.name.endswith("-shm")
        and not (p.name.endswith("-wal") and p.stat().st_size == 0)
    }  # fmt: skip


_EMITTER_IN_A_CHILD = (
    "import sys\n"
    "from selligent_segment import Emitter, SpoolError\n"
    "try:\n"
    "    Emitter('k', endpoint='http://127.0.0.1:9', spool=sys.argv[1])\n"
    "except SpoolError as exc:\n"
    "    print(exc)\n"
)


@pytest.mark.slow
@pytest.mark.parametrize("read_only", ["directory", "file"])
def test_a_healthy_spool_this_user_may_not_write_is_called_not_writable_and_can_be_read(
    tmp_path: Path, read_only: str
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    spool = home / "spool.db"
    _filled(spool, 30)
    before = _files(home)
    keys = tmp_path / "keys.json"
    keys.write_text('{"t0": "k0", "t1": "k1", "t2": "k2"}')
    if read_only == "directory":
        home.chmod(0o555)
        why = "permission denied (read-only directory)"
    else:
        spool.chmod(0o400)
        why = "permission denied (read-only file)"
    try:
        prefix = _unprivileged(home / "new" if read_only == "directory" else spool)
        status = _cli("spool", "status", "--spool", str(spool), "--json", prefix=prefix)
        letters = _cli("dead-letters", "list", "--spool", str(spool), "--json", prefix=prefix)
        purge = _cli("dead-letters", "purge", "--all", "--spool", str(spool), prefix=prefix)
        common = (
            "--spool",
            str(spool),
            "--write-keys",
            str(keys),
            "--endpoint",
            "http://127.0.0.1:9",
        )
        flush = _cli("flush", *common, prefix=prefix)
        record = '{"type": "delivered", "tenant": "t0", "email": "a@example.com"}\n'
        send = _cli("send", *common, "-", stdin=record, prefix=prefix)
        emitter = subprocess.run(
            [sys.executable, *prefix, "-c", _EMITTER_IN_A_CHILD, str(spool)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        home.chmod(0o700)
        spool.chmod(0o600)
    # Reading works: the status and the dead letters are shown.
    assert status.returncode == 0, status.stderr
    shown = json.loads(status.stdout)
    assert (shown["queued"], shown["dead_letters"]) == (30, 1)
    assert letters.returncode == 0, letters.stderr
    assert [d["reason"] for d in json.loads(letters.stdout)] == ["rejected: x"]
    # Writing is refused with what is true: not "corrupt", one line, exit 2.
    expected = f"{spool}: cannot write the spool file: {why}"
    for done in (purge, flush, send):
        assert done.returncode == 2, done.stderr
        (line,) = done.stderr.strip().splitlines()
        assert expected in line
    assert emitter.returncode == 0, emitter.stderr
    assert emitter.stdout.strip() == expected
    everything = " ".join(d.stdout + d.stderr for d in (status, letters, purge, flush, send))
    assert "corrupt" not in everything + emitter.stdout
    assert _files(home) == before


@contextlib.contextmanager
def _read_only_mount(directory: Path) -> Iterator[None]:
    """``directory`` bind-mounted read-only over itself (EROFS for everyone, root too);
    skips the test when this process may not mount."""
    try:
        subprocess.run(["mount", "--bind", str(directory), str(directory)], check=True,
                       capture_output=True, timeout=60)  # fmt: skip
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"cannot bind-mount a directory here: {exc}")
    try:
        subprocess.run(
            ["mount", "-o", "remount,bind,ro", str(directory)],
            check=True,
            capture_output=True,
            timeout=60,
        )
        yield
    finally:
        subprocess.run(["umount", str(directory)], check=True, timeout=60)


def test_a_spool_on_a_read_only_file_system_can_be_read_and_says_why_it_cannot_be_written(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    spool = home / "spool.db"
    _filled(spool, 30)
    before = _files(home)
    with _read_only_mount(home):
        with SpoolFile(spool) as sf:
            assert sf.read_only == "read-only file system"
            assert sf.status().queued == 30
            assert [d.reason for d in sf.dead_letters()] == ["rejected: x"]
            with pytest.raises(SpoolError, match="cannot write the spool file: read-only file"):
                sf.purge(tenant="t0")
        with pytest.raises(SpoolError) as info:
            Emitter("k", endpoint="http://127.0.0.1:9", spool=spool)
        assert str(info.value) == f"{spool}: cannot write the spool file: read-only file system"
        assert _files(home) == before


def test_a_file_in_the_journal_directory_that_is_no_journal_is_left_and_reported_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = tmp_path / "spool.db"
    cfg = {"prefix": "g", "tenants": 1}
    owner = _journal_in_a_killed_process(spool, cfg, 5)  # a dead process to replay too
    foreign = journal_dir(spool) / "notes.1.journal"
    foreign.write_bytes(b"not a journal\n")
    caplog.set_level(logging.INFO, logger="selligent_segment")
    sq = SqliteSpool(spool, max_bytes=1 << 24, decoder=lambda payload: None)  # type: ignore[arg-type, return-value]
    try:
        assert sq.maintain(force=True) == ["t0"]  # the dead process's records, replayed
        for _ in range(5):  # every round finds the file again
            sq.maintain(force=True)
        assert sq.stats().messages == 5
    finally:
        sq.close()
    assert foreign.read_bytes() == b"not a journal\n"
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    assert errors[0].exc_info is None
    assert f"{foreign}: not a selligent-segment journal" in errors[0].getMessage()
    recovered = [r.getMessage() for r in caplog.records if "recovered" in r.getMessage()]
    assert len(recovered) == 1, recovered
    assert owner in recovered[0]
