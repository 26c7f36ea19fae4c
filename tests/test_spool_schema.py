"""The spool file's transactions (``spool/_schema.py``): a ``COMMIT`` that fails leaves no
transaction open, and a rollback after an error never hides that error; the same for a
read (:func:`snapshot`)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from selligent_segment.spool._schema import snapshot, transaction


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
