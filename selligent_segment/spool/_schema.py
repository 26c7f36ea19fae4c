"""The durable spool's SQLite file: where it lives, its schema, opening and migrating it.

The file is SQLite in WAL mode, created with mode 0600 (missing parent directories and
the journal directory 0700), marked with an application id and a schema version
(``PRAGMA application_id`` / ``user_version``). It never holds write keys. A file this
library did not create, a corrupt file, or one written by a newer version raises
:class:`~selligent_segment.SpoolError` and is left exactly as it was; so does a file this
process may not write, saying so (not "corrupt"): see :func:`unwritable`. Statements
that belong together run in a :func:`transaction` (writes) or a :func:`snapshot` (reads).
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import threading
import urllib.parse
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from selligent_segment._errors import ConfigurationError, SpoolError, shown

__all__ = [
    "APPLICATION_ID",
    "SCHEMA_VERSION",
    "default_spool_path",
    "disk_full",
    "has_table",
    "journal_dir",
    "open_db",
    "snapshot",
    "spool_error",
    "spool_path",
    "transaction",
    "unwritable",
]

#: ``PRAGMA application_id`` of a spool file: "SSgS".
APPLICATION_ID = 0x53536753
SCHEMA_VERSION = 2
_SQLITE_MAGIC = b"SQLite format 3\x00"
#: Seconds a statement waits for another connection's lock before it fails.
BUSY_TIMEOUT = 30.0
#: The same while this process's writes are failing: a file locked for long then costs a
#: quarter of a second per attempt, not 30 s, while delivery goes on from memory.
BUSY_TIMEOUT_WHILE_FAILING = 0.25

_CHECKPOINT_PAGES = 10_000
# Primary result codes of SQLite errors (``sqlite3.Error.sqlite_errorcode & 0xFF``).
_SQLITE_PERM, _SQLITE_READONLY, _SQLITE_CANTOPEN = 3, 8, 14
_SQLITE_IOERR, _SQLITE_CORRUPT, _SQLITE_FULL, _SQLITE_NOTADB = 10, 11, 13, 26
_WAL_LIMIT_BYTES = 64 * 1024 * 1024

# The current schema. A row of ``messages`` holds either a Segment message (``body`` is its
# JSON, ``message_id`` set) or, since version 2, the journal record it was accepted as
# (``message_id`` empty): records are encoded when they are leased for sending.
_SCHEMA = """
CREATE TABLE messages (
    id INTEGER PRIMARY KEY,
    tenant TEXT NOT NULL,
    message_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    body BLOB NOT NULL,
    accepted_at REAL NOT NULL,
    owner TEXT
);
CREATE INDEX messages_queue ON messages (tenant, id) WHERE owner IS NULL;
CREATE INDEX messages_owner ON messages (owner) WHERE owner IS NOT NULL;
CREATE TABLE journals (name TEXT PRIMARY KEY, offset INTEGER NOT NULL);
CREATE TABLE dead_letters (
    id INTEGER PRIMARY KEY,
    tenant TEXT NOT NULL,
    message_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    body BLOB NOT NULL,
    accepted_at REAL NOT NULL,
    failed_at REAL NOT NULL,
    reason TEXT NOT NULL,
    status INTEGER
);
CREATE INDEX dead_letters_tenant ON dead_letters (tenant, id);
CREATE TABLE paused (
    tenant TEXT PRIMARY KEY,
    reason TEXT NOT NULL,
    since REAL NOT NULL
);
"""

# Tables added without a version bump: an older version of the library ignores them (it
# never reads them), so processes of the previous and the next release can share a file
# during a rolling upgrade. Written here only: created with the schema in a new file, and
# where missing whenever an older file is opened to write. (Rows are decoded by whichever
# process leases them: the identify of a profile update is journaled with the type
# ``identify:<kind>`` (_record.journal_form), which the previous release refuses, keeping
# it as a dead letter, instead of sending it as a second track. Hence profile_updates is
# turned on once every process sharing the file runs this release.)
_ADDITIONS = {
    "last_errors": "CREATE TABLE last_errors "
    "(tenant TEXT PRIMARY KEY, text TEXT NOT NULL, at REAL NOT NULL, status INTEGER)",
}


def _to_v2(db: sqlite3.Connection) -> None:
    """Version 2 lets a row hold a journal record (``message_id`` empty). Every row of a
    version 1 file holds an encoded message, which version 2 reads as it is: no change.
    The version bump itself is what matters: version 1 code refuses the file from then
    on instead of sending journal records as if they were messages."""


#: MIGRATIONS[n] takes a file from schema version n to n + 1 (inside one transaction).
MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {1: _to_v2}


def default_spool_path() -> Path:
    """``$XDG_STATE_HOME/selligent-segment/spool.db`` (``~/.local/state/...`` by default)."""
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "state"
    )
    return Path(state) / "selligent-segment" / "spool.db"


#: A URL scheme (``postgresql://``...): two letters at least, so ``C:/x`` stays a path.
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]+)://")


def spool_path(spool: str | os.PathLike[str]) -> Path:
    """The file a ``spool=`` setting names: a path, or a ``sqlite:///`` URL.

    ``sqlite:///relative/path.db`` and ``sqlite:////absolute/path.db`` as in SQLAlchemy;
    a relative path is made absolute against the current directory, once.
    """
    text = os.fspath(spool)
    scheme = _SCHEME.match(text)
    if scheme is not None and scheme.group(1).lower() != "sqlite":
        raise ConfigurationError(
            "spool",
            f"a {shown(scheme.group(1), quote=False)}:// spool is not served by this version; "
            "give a file path or a sqlite:/// URL",
        )
    if text.startswith("sqlite:"):
        if not text.startswith("sqlite:///") or len(text) == len("sqlite:///"):
            raise ConfigurationError(
                "spool", "a sqlite URL is sqlite:///relative.db or sqlite:////absolute.db"
            )
        text = text[len("sqlite:///") :]
    if not text:
        raise ConfigurationError("spool", "an empty path")
    # Absolute now: a process that changes directory later (a daemon) still names the
    # same file, journals and owner file, and a forked child too.
    return Path(text).absolute()


def journal_dir(path: Path) -> Path:
    """The directory of a spool file's acceptance journals."""
    return path.with_name(path.name + ".journals")


def _wal_files(path: Path) -> tuple[Path, Path]:
    """The WAL file and the WAL index (``-shm``) next to ``path``."""
    return path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")


def _may_write(path: Path, *, directory: bool = False) -> bool:
    mode = os.W_OK | (os.X_OK if directory else 0)
    return os.access(path, mode, effective_ids=os.access in os.supports_effective_ids)


def unwritable(path: Path) -> str | None:
    """Why this process cannot write the spool file at ``path`` (the file, its directory,
    where SQLite makes its WAL and WAL index, its journal directory), or None.

    E.g. ``permission denied (read-only directory)``: a healthy file this process may only
    read, which must not be taken for a corrupt one.
    """
    directory = path.parent
    try:
        if os.statvfs(directory).f_flag & os.ST_RDONLY:
            return "read-only file system"
    except OSError:
        pass
    wal, shm = _wal_files(path)
    journals = journal_dir(path)
    checks = [
        (path, False, "read-only file"),
        (directory, True, "read-only directory"),
        (wal, False, f"read-only {wal.name}"),
        (shm, False, f"read-only {shm.name}"),
        (journals, True, f"read-only journal directory {journals}"),
    ]
    for where, is_dir, what in checks:
        if where.exists() and not _may_write(where, directory=is_dir):
            return f"permission denied ({what})"
    return None


def _code(exc: BaseException) -> int:
    """The primary result code of an SQLite error (0 for anything else)."""
    return int(getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF


def disk_full(exc: BaseException | None) -> bool:
    """True when ``exc`` (or an exception it was raised while handling) is SQLITE_FULL."""
    while exc is not None:
        if _code(exc) == _SQLITE_FULL:
            return True
        exc = exc.__context__
    return False


def spool_error(path: Path, exc: sqlite3.Error) -> SpoolError:
    """A SpoolError naming ``path`` that says what ``exc`` means: a corrupt file, a file
    this process may not write (and why), a full disk, or another error."""
    code = _code(exc)
    if code in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
        return SpoolError(f"{path}: the spool file is corrupt ({exc}); it was left untouched")
    if code == _SQLITE_FULL:
        return SpoolError(f"{path}: cannot write the spool file: the disk is full")
    if code in (_SQLITE_PERM, _SQLITE_READONLY, _SQLITE_CANTOPEN):
        why = unwritable(path)
        if why is not None:
            return SpoolError(f"{path}: cannot write the spool file: {why}")
        return SpoolError(f"{path}: cannot open the spool file ({exc})")
    if code == _SQLITE_IOERR:
        return SpoolError(f"{path}: I/O error on the spool file ({exc})")
    return SpoolError(f"{path}: the spool file cannot be used ({exc})")


def _make_dirs(directory: Path) -> None:
    """Create ``directory`` and its missing parents, each with mode 0700 whatever the
    umask (directories that exist are left as they are)."""
    missing: list[Path] = []
    while not directory.exists() and directory != directory.parent:
        missing.append(directory)
        directory = directory.parent
    for new in reversed(missing):
        try:
            os.mkdir(new, 0o700)
        except FileExistsError:
            continue
        os.chmod(new, 0o700)  # the umask may have taken bits away


@contextlib.contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (rolled back on any exception, that of a
    ``COMMIT`` that fails included)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        rollback(db)
        raise
    commit(db)


def commit(db: sqlite3.Connection) -> None:
    """``COMMIT``; one that fails (a deferred constraint, an I/O error) leaves no
    transaction open behind it: rolled back, then its error raised. Left open, it would
    hold the file's write lock from every other process, and fail this connection's
    next ``BEGIN``."""
    try:
        db.execute("COMMIT")
    except BaseException:
        rollback(db)
        raise


def rollback(db: sqlite3.Connection) -> None:
    """``ROLLBACK`` of the transaction ``db`` has open, if any: after an error, which is
    the one to raise. SQLite rolls some back by itself (a full disk, an I/O error), and a
    ``ROLLBACK`` then fails; its error would hide the first one."""
    if db.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            db.execute("ROLLBACK")


@contextlib.contextmanager
def snapshot(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """A read transaction: what is read inside is one consistent state of the file. A
    read that fails raises its own error (the transaction ended behind it), never that of
    the ``COMMIT`` which would follow."""
    db.execute("BEGIN")
    try:
        yield db
    except BaseException:
        rollback(db)
        raise
    commit(db)


class _SpoolConnection(sqlite3.Connection):
    """A connection to a spool file, known to :data:`_files` until it is closed."""

    file_id: tuple[int, int] | None = None

    def close(self) -> None:
        try:
            super().close()
        finally:
            _files.forget(self)


class _OpenFiles:
    """The spool files this process has SQLite connections to.

    POSIX locks belong to a process, and closing any descriptor of a file drops all of
    them; SQLite holds back the close of its own descriptors while the process has locks
    on the file, but a plain ``open()`` and ``close()`` would drop them, and the next
    process to close its connection would then take the file as its last user and delete
    the WAL this process still writes to. So a file this process has open is never opened
    by plain Python (:func:`_check_header`).

    A forked child inherits the connections but not their locks, while SQLite's copy of its
    bookkeeping says they are held: a connection the child opened beside them would lock
    nothing. So the child closes the inherited ones (which leaves the parent's locks
    alone) before it opens a spool file again (:meth:`close_inherited`): those idle at the
    fork, which are all of them unless a thread was opening one at that moment."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._pid = os.getpid()
        self._open: weakref.WeakSet[_SpoolConnection] = weakref.WeakSet()

    def connect(self, path: Path, database: str | Path, **options: Any) -> _SpoolConnection:
        """``sqlite3.connect(database)`` to the file ``path``, known here before it runs a
        statement (and so before it takes a lock)."""
        self.close_inherited()
        db = sqlite3.connect(database, factory=_SpoolConnection, **options)
        with contextlib.suppress(OSError):
            st = os.stat(path)
            db.file_id = (st.st_dev, st.st_ino)
        with self.lock:
            self._open.add(db)
        return db

    def forget(self, db: _SpoolConnection) -> None:
        with self.lock:
            self._open.discard(db)

    def holds(self, st: os.stat_result) -> bool:
        """True when this process has the file ``st`` describes open (call under
        :attr:`lock`)."""
        return any(db.file_id == (st.st_dev, st.st_ino) for db in self._open)

    def close_inherited(self) -> None:
        """In a forked child: close the connections inherited from the parent that were
        idle at the fork (:data:`_idle_at_fork`: their owner's lock held over it, so no
        thread was inside SQLite with them); closing one a thread was using would wait for
        ever on its SQLite mutex, held in the child's copy: any other is left open, never
        used. First called by the at-fork hooks, before the child has other threads."""
        if self._pid == os.getpid():
            return
        self.lock = threading.Lock()  # the parent's copy may have been held at the fork
        inherited, self._open = list(self._open), weakref.WeakSet()
        self._pid = os.getpid()
        idle = {id(db) for db in _idle_at_fork}
        _idle_at_fork.clear()
        for db in inherited:
            if id(db) in idle:
                with contextlib.suppress(sqlite3.Error):
                    sqlite3.Connection.close(db)
            else:  # kept from the garbage collector, whose close would wait the same way
                _left_open.append(db)


_files = _OpenFiles()
#: Connections a forked child inherited and did not close: referenced for ever.
_left_open: list[sqlite3.Connection] = []


def _check_header(path: Path) -> bool:
    """True when ``path`` holds data; SpoolError when that data is not SQLite. A file this
    process has open is SQLite, and is not read (see :class:`_OpenFiles`)."""
    _files.close_inherited()
    with _files.lock:
        try:
            if _files.holds(os.stat(path)):
                return True
            with open(path, "rb") as f:
                head = f.read(len(_SQLITE_MAGIC))
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise SpoolError(f"{path}: cannot read the spool file: {exc.strerror}") from None
    if not head:
        return False
    if head != _SQLITE_MAGIC:
        raise SpoolError(f"{path}: not a selligent-segment spool (not SQLite); left untouched")
    return True


def open_db(
    path: Path, *, fsync: bool = False, create: bool = True, read_only: bool = False
) -> sqlite3.Connection:
    """Open (creating when ``create``) and check a spool file; migrate an older schema.

    ``read_only`` opens an existing file for reading only, also where this process may
    not write (see :func:`unwritable`). Raises SpoolError for a foreign, corrupt or newer
    file, without modifying it, and, unless ``read_only``, for a file this process may not
    write, saying why.
    """
    exists = _check_header(path)
    if exists:
        _check_read_only(path)
    elif not create or read_only:
        raise SpoolError(f"{path}: no spool file there")
    if read_only:
        return _connect_read_only(path)
    why = unwritable(path)
    if why is not None:
        verb = "write" if exists else "create"
        raise SpoolError(f"{path}: cannot {verb} the spool file: {why}")
    try:
        if not exists:
            _make_dirs(path.parent)
            with contextlib.suppress(FileExistsError):
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
                os.fchmod(fd, 0o600)  # whatever the umask
                os.close(fd)
        _make_dirs(journal_dir(path))
    except OSError as exc:
        where = exc.filename or path
        raise SpoolError(f"{path}: cannot create the spool file: {exc.strerror}: {where}") from None
    try:
        db = _files.connect(
            path, path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False
        )
    except sqlite3.Error as exc:
        raise spool_error(path, exc) from None
    try:
        _check_and_migrate(db, path)
        db.execute("PRAGMA journal_mode = WAL")
        db.execute(f"PRAGMA synchronous = {'FULL' if fsync else 'NORMAL'}")
        # Checkpoint every ~40 MiB of WAL instead of 4 MiB: measured, an ingest of 4,096
        # records per commit then costs 3.8 µs a record instead of 6; the WAL file is cut
        # back to 64 MiB after a checkpoint.
        db.execute(f"PRAGMA wal_autocheckpoint = {_CHECKPOINT_PAGES}")
        db.execute(f"PRAGMA journal_size_limit = {_WAL_LIMIT_BYTES}")
    except sqlite3.Error as exc:
        db.close()
        raise spool_error(path, exc) from None
    except BaseException:
        db.close()
        raise
    return db


def _connect_read_only(path: Path) -> sqlite3.Connection:
    """A read-only connection to ``path``. Where the WAL index cannot be made (a read-only
    directory), the file is read as immutable, which is exact only when no WAL is left:
    with one, SpoolError says so instead of showing a stale state."""
    uri = "file:" + urllib.parse.quote(os.fspath(path.absolute())) + "?mode=ro"
    try:
        db = _files.connect(path, uri, uri=True, timeout=BUSY_TIMEOUT, check_same_thread=False)
    except sqlite3.Error as exc:
        raise spool_error(path, exc) from None
    try:
        db.execute("SELECT count(*) FROM sqlite_schema").fetchone()
        return db
    except sqlite3.Error as exc:
        db.close()
        if _code(exc) not in (_SQLITE_READONLY, _SQLITE_CANTOPEN):
            raise spool_error(path, exc) from None
        wal, _ = _wal_files(path)
        if wal.exists() and wal.stat().st_size:
            raise SpoolError(
                f"{path}: cannot read the spool file: {wal.name} holds changes not yet in the "
                f"file, and SQLite cannot make its index here ({unwritable(path) or exc}); "
                "run this as a user who may write the directory"
            ) from None
    try:
        return _files.connect(path, uri + "&immutable=1", uri=True, check_same_thread=False)
    except sqlite3.Error as exc:  # pragma: no cover - the read-only open got this far
        raise spool_error(path, exc) from None


def _check_read_only(path: Path) -> None:
    """Refuse a foreign, corrupt or newer file through a read-only connection: closing a
    read-write one would checkpoint another application's WAL into its file."""
    db = _connect_read_only(path)
    try:
        app_id, version = _identity(db)
        _refuse_foreign(db, path, app_id, version)
    except sqlite3.Error as exc:
        raise spool_error(path, exc) from None
    finally:
        db.close()


def _check_and_migrate(db: sqlite3.Connection, path: Path) -> None:
    app_id, version = _identity(db)
    if app_id == APPLICATION_ID and version == SCHEMA_VERSION:
        _add_missing_tables(db)
        return
    _refuse_foreign(db, path, app_id, version)
    with transaction(db):
        app_id, version = _identity(db)  # another process may have done it meanwhile
        _refuse_foreign(db, path, app_id, version)
        if app_id == 0:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            for sql in _ADDITIONS.values():
                db.execute(sql)
            db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            return
        while version < SCHEMA_VERSION:
            MIGRATIONS[version](db)
            version += 1
            db.execute(f"PRAGMA user_version = {version}")
    _add_missing_tables(db)


def has_table(db: sqlite3.Connection, name: str) -> bool:
    """True when the file has the table ``name`` (an addition may be missing from a file
    an older version made, when it is opened read-only)."""
    row = db.execute("SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?", (name,))
    return row.fetchone() is not None


def _add_missing_tables(db: sqlite3.Connection) -> None:
    missing = [sql for name, sql in _ADDITIONS.items() if not has_table(db, name)]
    if missing:
        with transaction(db):
            for sql in missing:
                with contextlib.suppress(sqlite3.OperationalError):  # another process did it
                    db.execute(sql)


def _identity(db: sqlite3.Connection) -> tuple[int, int]:
    app_id = db.execute("PRAGMA application_id").fetchone()[0]
    version = db.execute("PRAGMA user_version").fetchone()[0]
    return int(app_id), int(version)


def _refuse_foreign(db: sqlite3.Connection, path: Path, app_id: int, version: int) -> None:
    if app_id == 0:
        tables = db.execute("SELECT count(*) FROM sqlite_schema").fetchone()[0]
        if tables:
            raise SpoolError(
                f"{path}: an SQLite file of another application, not a selligent-segment "
                "spool; left untouched"
            )
        return
    if app_id != APPLICATION_ID:
        raise SpoolError(
            f"{path}: SQLite file of another application (application_id {app_id:#x}); "
            "left untouched"
        )
    if version > SCHEMA_VERSION:
        raise SpoolError(
            f"{path}: spool schema version {version} is newer than this version of "
            f"selligent-segment understands ({SCHEMA_VERSION}); upgrade the library"
        )
    if version < 1:
        raise SpoolError(f"{path}: spool has an invalid schema version {version}")


class ForkSafe:
    """Base of the objects that use an SQLite connection under ``self._lock``.

    Guarantee: around ``fork()`` every such lock is held, so no thread is inside an SQLite
    call and the child inherits no half-held SQLite lock (which would leave its own new
    connection "database is locked" for its whole life). A child closes the connections
    it inherited (:meth:`_abandon_db`) before it opens the file again: see
    :class:`_OpenFiles`.
    """

    _lock: threading.Lock

    def _guard_over_fork(self) -> None:
        _guarded.add(self)

    @staticmethod
    def _abandon_db(db: sqlite3.Connection) -> None:
        """In a forked child: let go of ``db``, inherited from the parent (it is closed with
        every other inherited connection; the parent's locks stay as they are)."""
        _files.close_inherited()


#: Seconds a fork waits for each owner's lock (a thread using its connection) to be free.
FORK_LOCK_WAIT = 60.0
_guarded: weakref.WeakSet[ForkSafe] = weakref.WeakSet()
_held_over_fork: list[threading.Lock] = []
#: The connections of the owners whose lock is held over a fork: idle, so a forked child
#: may close them (see :meth:`_OpenFiles.close_inherited`).
_idle_at_fork: list[sqlite3.Connection] = []


#: The owners whose lock a thread held past the wait at a fork: the child's copy of it is
#: held for ever, so a forked child gives each a new one.
_busy_at_fork: list[ForkSafe] = []


def _before_fork() -> None:
    for owner in list(_guarded):
        if owner._lock.acquire(timeout=FORK_LOCK_WAIT):
            _held_over_fork.append(owner._lock)
            db = getattr(owner, "_db", None)
            if isinstance(db, sqlite3.Connection):
                _idle_at_fork.append(db)
        else:
            _busy_at_fork.append(owner)


def _after_fork() -> None:
    while _held_over_fork:
        _held_over_fork.pop().release()


def _after_fork_in_parent() -> None:
    _idle_at_fork.clear()
    _busy_at_fork.clear()
    _after_fork()


def _after_fork_in_child() -> None:
    _after_fork()
    while _busy_at_fork:
        _busy_at_fork.pop()._lock = threading.Lock()
    _files.close_inherited()


os.register_at_fork(
    before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child
)
