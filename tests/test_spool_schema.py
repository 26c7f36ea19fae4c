"""The spool file's transactions (``spool/_schema.py``): a ``COMMIT`` that fails leaves no
transaction open, and a rollback after an error never hides that error; the same for a
read (:func:`snapshot`)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from _forks import wait_child

from selligent_segment._errors import SpoolError
from selligent_segment.spool import _schema, _sqlite
from selligent_segment.spool._file import SpoolFile
from selligent_segment.spool._schema import open_db, snapshot, transaction
from selligent_segment.spool._sqlite import SqliteSpool


def _db(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, timeout=0.2)
    db.execute("PRAGMA journal_mode = WAL")
    return db


def test_a_commit_that_fails_is_rolled_back_and_its_error_raised(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    db = _db(path)
    db.execute("PRAGMA foreign_keys = ON")
    db.execute("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
    db.execute(
        "CREATE TABLE child (p INTEGER REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED)"
    )
    with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"), transaction(db):
        db.execute("INSERT INTO child VALUES (42)")  # checked only at COMMIT
    assert not db.in_transaction
    other = _db(path)
    other.execute("BEGIN IMMEDIATE")  # the write lock is free for another process
    other.execute("ROLLBACK")
    with transaction(db):  # and this connection begins again
        db.execute("INSERT INTO parent VALUES (1)")
    assert db.execute("SELECT count(*) FROM child").fetchone() == (0,)
    other.close()
    db.close()


def test_an_error_that_ended_the_transaction_itself_is_the_one_raised(tmp_path: Path) -> None:
    """SQLite rolls some transactions back by itself; the ROLLBACK that follows then fails,
    and must not hide the error that counts."""
    db = _db(tmp_path / "s.db")

    def ended_then_failed() -> None:
        with transaction(db):
            db.execute("ROLLBACK")  # as SQLite does after some errors
            raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        ended_then_failed()
    assert not db.in_transaction
    db.close()


def test_a_read_whose_transaction_sqlite_ended_raises_the_reads_own_error(
    tmp_path: Path,
) -> None:
    """The ``COMMIT`` that ends a read must not hide the error that stopped it: here the
    read's transaction is gone (as after an I/O error), and that ``COMMIT`` would fail."""
    db = _db(tmp_path / "s.db")

    def ended_then_failed() -> None:
        with snapshot(db):
            db.execute("ROLLBACK")  # as SQLite does after some errors
            raise sqlite3.OperationalError("disk I/O error")

    with pytest.raises(sqlite3.OperationalError, match="disk I/O error"):
        ended_then_failed()
    assert not db.in_transaction
    db.close()


def test_a_read_that_fails_leaves_no_transaction_open(tmp_path: Path) -> None:
    db = _db(tmp_path / "s.db")
    with pytest.raises(sqlite3.OperationalError, match="no such table"), snapshot(db):
        db.execute("SELECT * FROM nowhere")
    assert not db.in_transaction
    with snapshot(db):  # and the next read begins
        assert db.execute("SELECT 1").fetchone() == (1,)
    assert not db.in_transaction
    db.close()


def _rows_seen_by_another_process(path: Path) -> int:
    """The journal offsets another process reads in the file; it closes its connection
    after, which, were it the only one with a lock, would checkpoint and delete the WAL."""
    code = (
        "import sqlite3, sys; db = sqlite3.connect(sys.argv[1]); "
        "print(db.execute('SELECT count(*) FROM journals').fetchone()[0]); db.close()"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True
    )
    return int(out.stdout)


def _mark(db: sqlite3.Connection, name: str) -> None:
    with transaction(db):
        db.execute("INSERT INTO journals (name, offset) VALUES (?, 1)", (name,))


def _child_writes_after_the_parent(path: Path, ready: int, go: int) -> None:
    """A forked child's part: open the file again (as a forked emitter does), say so on
    ``ready``, wait on ``go`` (the parent has closed its connection), write, and exit."""
    code = 1
    try:
        own = open_db(path)
        os.write(ready, b"r")
        os.read(go, 1)
        _mark(own, "child")
        code = 0
    finally:
        os._exit(code)


def test_a_second_open_in_the_same_process_keeps_the_first_connections_locks(
    tmp_path: Path,
) -> None:
    """POSIX locks belong to the process: closing any descriptor of the file drops them
    all. A second open of a spool file in a process that has it open (``health()``, a
    ``SpoolFile``, another emitter) must not, or the next process to close its connection
    takes the file as its last user and deletes the WAL the first connection still writes
    to: what it writes then is lost."""
    path = tmp_path / "spool.db"
    db = open_db(path)
    _mark(db, "before")
    open_db(path).close()  # what health() and SpoolFile do
    open_db(path, read_only=True).close()
    assert _rows_seen_by_another_process(path) == 1
    _mark(db, "after")
    assert _rows_seen_by_another_process(path) == 2
    db.close()
    assert _rows_seen_by_another_process(path) == 2


def test_a_forked_child_that_opens_the_file_again_holds_its_own_locks(tmp_path: Path) -> None:
    """A forked child inherits the parent's connection but not its locks; the file opened
    again in the child must lock it for real, so that the parent closing (its emitter, at
    exit) cannot delete the WAL the child still writes to. The parent's connection is a
    ``SpoolFile``'s, as the library's connections are: used under its lock only."""
    path = tmp_path / "spool.db"
    open_db(path).close()
    view = SpoolFile(path)
    with view._connection(write=True) as db:
        _mark(db, "parent")
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        _child_writes_after_the_parent(path, ready_w, go_r)
    try:
        assert os.read(ready_r, 1) == b"r"
        view.close()
    finally:
        os.write(go_w, b"g")
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert _rows_seen_by_another_process(path) == 2


def test_a_fork_while_a_thread_opens_the_file_leaves_that_connection_to_the_parent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A thread was inside SQLite with a connection it was opening (waiting for another
    process's write lock) when the main thread forked: the child closed that connection,
    and waited for ever on its SQLite mutex, held in the child's copy (a Popen with a
    preexec_fn hung its parent too). Only connections idle at the fork are closed."""
    monkeypatch.setattr(_schema, "BUSY_TIMEOUT", 3.0)
    path = tmp_path / "spool.db"
    path.touch()  # another process creating the spool at the same moment
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sqlite3, sys; db = sqlite3.connect(sys.argv[1], isolation_level=None); "
            "db.execute('BEGIN IMMEDIATE'); print('locked', flush=True); sys.stdin.read()",
            str(path),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert holder.stdout is not None
    assert holder.stdin is not None
    assert holder.stdout.readline() == b"locked\n"
    opened: list[object] = []
    opener = threading.Thread(target=lambda: opened.append(_try_open(path)))
    try:
        opener.start()
        deadline = time.monotonic() + 10
        while not _schema._files._open and time.monotonic() < deadline:
            time.sleep(0.001)  # polling for the connection to exist: nothing signals it
        pid = os.fork()
        if pid == 0:
            os._exit(0)  # the at-fork hooks have run
        assert wait_child(pid, 20) == 0, "the forked child hung in its at-fork hooks"
    finally:
        holder.stdin.close()
        holder.wait(30)
        opener.join(30)


def _try_open(path: Path) -> object:
    try:
        db = open_db(path)
    except SpoolError as exc:
        return exc
    db.close()
    return db


def test_a_child_forked_while_a_thread_holds_an_owners_lock_past_the_wait_can_use_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fork waits for each owner's lock (``FORK_LOCK_WAIT``), then goes on: the child's
    copy of a lock a thread still held was held for ever, and the child's first use of
    that ``SpoolFile`` (``health()``'s reader) hung."""
    monkeypatch.setattr(_schema, "FORK_LOCK_WAIT", 0.05)
    path = tmp_path / "spool.db"
    open_db(path).close()
    view = SpoolFile(path)
    taken, done = threading.Event(), threading.Event()

    def hold() -> None:
        with view._lock:
            taken.set()
            done.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert taken.wait(10)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                view.status()
                code = 0
            finally:
                os._exit(code)
        assert wait_child(pid, 20) == 0, "the child hung on its copy of the held lock"
    finally:
        done.set()
        holder.join(30)
        view.close()


#: Events set just before a fork's other hooks run (a hook registered later runs first).
_before_fork: list[threading.Event] = []
os.register_at_fork(before=lambda: [event.set() for event in _before_fork])


def test_a_child_forked_while_a_spool_is_being_built_holds_its_own_locks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fork while another thread built a ``SqliteSpool`` (its connection open, not yet
    guarded over forks) left that connection open in the child, whose own connection then
    locked nothing: the parent closing first deleted the WAL the child wrote to."""
    path = tmp_path / "spool.db"
    open_db(path).close()
    inside, forking = threading.Event(), threading.Event()
    real_journal = _sqlite.Journal

    def journal(*args: Any, **kwargs: Any) -> Any:
        inside.set()
        forking.wait(30)  # the fork has begun
        return real_journal(*args, **kwargs)

    monkeypatch.setattr(_sqlite, "Journal", journal)
    built: list[SqliteSpool] = []
    builder = threading.Thread(
        target=lambda: built.append(SqliteSpool(path, max_bytes=1 << 24, decoder=None))
    )
    builder.start()
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    try:
        assert inside.wait(10)
        _before_fork.append(forking)
        pid = os.fork()
        if pid == 0:
            _child_writes_after_the_parent(path, ready_w, go_r)
        _before_fork.clear()
        os.close(ready_w)
        os.close(go_r)
        builder.join(30)
        (spool,) = built
        assert os.read(ready_r, 1) == b"r"
        spool.close()
    finally:
        _before_fork.clear()
        forking.set()
        os.write(go_w, b"g")
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert _rows_seen_by_another_process(path) == 1
