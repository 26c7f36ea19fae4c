"""The acceptance journal: the durable spool's commit point for ``emit``.

Each process appends the records it accepts to a journal file of its own, one framed
record per event, with a single ``write(2)`` before ``emit`` returns. The data is then in
the kernel's page cache, so it survives ``kill -9`` of the process at any instant (not a
power cut unless ``fsync`` is on). A background thread moves the records, as they are,
into the SQLite database in group commits and records, in the same transaction, how far
it got; a record becomes a Segment message only when it is leased for sending.

A process is an *owner*: it holds an exclusive ``flock`` on ``<owner>.owner`` for its
whole life. Journals are ``<owner>.<n>.journal``; a new one starts when the current one
grows past :data:`ROTATE_BYTES`, and a finished one is deleted once it is fully ingested.
When an owner's lock file can be locked by someone else, the owner is dead: whoever takes
the lock replays its journals from the recorded offsets and releases its leases.

A frame is ``<length u32><crc32 u32><payload>``. A torn tail (the process died mid-write,
before ``emit`` returned) ends the replay of that journal quietly. Damaged bytes anywhere
else are skipped up to the next valid frame (one whose crc32 matches) and reported as
:class:`Damaged`, so that one bad byte costs the record it hit and no other.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import math
import os
import re
import secrets
import struct
import threading
import time
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

from selligent_segment._errors import SpoolError, SpoolFull
from selligent_segment._shortcuts import compiled_twins

__all__ = [
    "FRAME_OVERHEAD",
    "HOLD_GIL_MAX_BYTES",
    "HOLD_OFF",
    "LOCAL_FILE_SYSTEMS",
    "ROTATE_BYTES",
    "SLOW_WRITE",
    "STALE_TEMPORARY",
    "Damaged",
    "Journal",
    "Mark",
    "claim_dead_owners",
    "frame",
    "journals_of",
    "live_owners",
    "local_file_system",
    "read_frames",
    "unframe",
]

MAGIC = b"SSJ1\n"
_HEADER = struct.Struct("<II")
#: Bytes a frame adds to its payload.
FRAME_OVERHEAD = _HEADER.size
ROTATE_BYTES = 16 * 1024 * 1024

#: (journal name, end offset): how far into which journal an accepted record reaches.
Mark = tuple[str, int]
#: Seconds after which an unlocked temporary file of :func:`_create_locked` is a leftover.
#: Its creator renames it within microseconds of making it, holding its lock meanwhile.
STALE_TEMPORARY = 60.0


def _lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        raise
    return True


def _lock_existing(path: Path) -> int | None:
    """Open ``path`` and lock it: the descriptor, or None when the file is gone or someone
    holds its lock (a live owner, a creator about to rename it)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    if _lock(fd):
        return fd
    os.close(fd)
    return None


def live_owners(directory: Path) -> int:
    """How many owners of ``directory`` are alive: those whose ``.owner`` file some process
    holds locked. A file left by a process killed with SIGKILL (until another process
    claims it) does not count. The probe takes a shared lock for an instant."""
    live = 0
    for path in directory.glob("*.owner"):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:  # gone meanwhile, or unreadable: not known to be alive
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                live += 1
        finally:
            os.close(fd)
    return live


def _create_locked(directory: Path, final_name: str, header: bytes) -> int:
    """Create ``final_name`` already locked: made under a temporary name, locked, renamed,
    so nobody can ever see it unlocked and take it for a dead owner's."""
    tmp = directory / f".{final_name}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o600)
    try:
        if not _lock(fd):  # pragma: no cover - a fresh private file
            raise SpoolError(f"{tmp}: cannot lock a file just created")
        if header:
            os.write(fd, header)
        os.rename(tmp, directory / final_name)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return fd


def frame(payload: bytes) -> bytes:
    """One journal frame: length, crc32, payload."""
    return _HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def unframe(data: bytes) -> Iterator[memoryview]:
    """The payloads of ``data``, a run of whole :func:`frame` results made in this process
    (views into ``data``, no copies; not checked: see :func:`read_frames` for files)."""
    view = memoryview(data)
    unpack = _HEADER.unpack_from
    pos, end = 0, len(data)
    while pos < end:
        length = unpack(data, pos)[0]
        start = pos + _HEADER.size
        pos = start + length
        yield view[start:pos]


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


#: ``os.write`` that keeps the GIL and says whether it slept
#: (``_compiled.write_holding_gil``), or None where the compiled twins are not built or
#: are turned off.
_write_holding_gil = getattr(compiled_twins(), "write_holding_gil", None)
#: A write that keeps the GIL and sleeps, or takes longer than this (seconds), stalls every
#: thread of the process: the journal then lets go of the GIL for its writes for
#: :data:`HOLD_OFF` seconds.
SLOW_WRITE = 0.01
HOLD_OFF = 60.0
#: The largest write that keeps the GIL (bytes): an ``emit`` writes a few hundred, an
#: ``emit_many`` chunk up to megabytes, whose copy alone would hold every thread.
HOLD_GIL_MAX_BYTES = 64 * 1024
_monotonic = time.monotonic  # the clock of SLOW_WRITE and HOLD_OFF (tests replace it)
#: File systems on which a journal write may keep the GIL: local ones, whose page-cache
#: writes do not wait on a network (NFS, SMB, FUSE and the rest are left out).
LOCAL_FILE_SYSTEMS = frozenset(
    {"ext2", "ext3", "ext4", "xfs", "btrfs", "tmpfs", "overlay", "zfs", "f2fs", "bcachefs"}
)
_MOUNTINFO = "/proc/self/mountinfo"  # where local_file_system reads (tests replace it)


def local_file_system(directory: Path) -> bool:
    """Whether ``directory`` is on one of :data:`LOCAL_FILE_SYSTEMS`, by the mount that
    holds it in ``/proc/self/mountinfo``; False when that cannot be read (not Linux)."""
    try:
        with open(_MOUNTINFO, encoding="utf-8", errors="replace") as mounts:
            lines = mounts.read().splitlines()
    except OSError:
        return False
    path = os.path.realpath(directory)
    best, fs_type = -1, ""
    for line in lines:
        fields, _, rest = line.partition(" - ")
        parts = fields.split()
        if len(parts) < 5 or not rest:
            continue
        # Spaces and the like are written as octal escapes ("\040").
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), parts[4])
        inside = path == point or path.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= best:  # the last of equal mounts is the one on top
            best, fs_type = len(point), rest.split()[0]
    return fs_type in LOCAL_FILE_SYSTEMS


class Journal:
    """One process's append-only journals in ``directory`` (thread-safe appends).

    Guarantee: when :meth:`append` returns, the frames are in the kernel's page cache
    (and on disk when ``fsync``), readable by :func:`read_frames` after any crash.
    """

    def __init__(self, directory: Path, *, fsync: bool = False) -> None:
        self.directory = directory
        self.fsync = fsync
        self.owner = f"{os.getpid()}-{secrets.token_hex(6)}"
        self._lock = threading.Lock()
        self._owner_fd = _create_locked(directory, f"{self.owner}.owner", b"")
        self._seq = 0
        self._torn = False  # the current journal ends with a partial frame
        # Writes keep the GIL (see _write) from this monotonic time on: never with fsync
        # (fdatasync lets go of it anyway) or off a local file system; later after a slow one.
        hold = _write_holding_gil is not None and not fsync and local_file_system(directory)
        self._hold_gil_from = 0.0 if hold else math.inf
        self._slow: str | None = None  # what a slow write did (see take_note)
        self.name = ""
        self._fd = -1
        self.size = 0
        #: Journals written to the end and replaced by a newer one: name -> final size.
        self.retired: dict[str, int] = {}
        self._open_next()

    def _open_next(self) -> None:
        self._seq += 1
        name = f"{self.owner}.{self._seq}.journal"
        fd = _create_locked(self.directory, name, MAGIC)
        if self._fd >= 0:
            os.close(self._fd)
            self.retired[self.name] = self.size
        self.name, self._fd, self.size = name, fd, len(MAGIC)
        self._torn = False

    def append(self, payloads: Sequence[bytes]) -> Mark:
        """Write one frame per payload; return the mark just past the last one."""
        return self.append_frames(b"".join(frame(p) for p in payloads))

    def append_frames(self, data: bytes) -> Mark:
        """Write ``data``, made of whole :func:`frame` results; return the mark after it.

        On any exception none of ``data`` stays readable: a partial frame is cut off, or,
        when it cannot be, the next frame goes to a new journal."""
        with self._lock:
            if self._fd < 0:
                raise SpoolError("the spool is closed")
            try:
                if self._torn or self.size >= ROTATE_BYTES:
                    self._open_next()
                self._write(data)
                if self.fsync:
                    os.fdatasync(self._fd)
            except BaseException as exc:  # an OSError, or a signal handler's exception
                self._cut_torn_tail()
                if not isinstance(exc, OSError):
                    raise
                if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise SpoolFull(f"the spool's disk is full ({exc.strerror})") from None
                raise SpoolError(f"cannot write the spool journal: {exc.strerror}") from None
            self.size += len(data)
            return (self.name, self.size)

    def take_note(self) -> str | None:
        """What the last slow write did (see :meth:`_write`: ``"took 12.0 ms"``), once;
        None when there was none since the last call. Logged by the spool's upkeep, where
        no caller's lock is held (a log handler may write to this very spool)."""
        with self._lock:
            note, self._slow = self._slow, None
        return note

    def _cut_torn_tail(self) -> None:
        """A partial frame may be on disk, a torn tail no replay reads past: cut it off
        (that needs no space); failing that, the next frame must go to a new journal (on a
        full disk even its header may not fit yet)."""
        try:
            os.ftruncate(self._fd, self.size)
            self._torn = False
        except OSError:
            self._torn = True

    def finished(self, name: str, offset: int) -> bool:
        """True when ``name`` is a retired journal ingested up to its end (deletable)."""
        with self._lock:
            return self.retired.get(name) == offset

    def retired_sizes(self) -> dict[str, int]:
        """The retired journals and their final sizes, as now."""
        with self._lock:
            return dict(self.retired)

    def delete(self, name: str) -> None:
        """Delete a retired journal (everything in it is in the database)."""
        with self._lock:
            self.retired.pop(name, None)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.directory / name)

    def _write(self, data: bytes) -> None:
        """All of ``data`` into the current journal: :func:`_write_all`, but with a write
        that keeps the GIL where the compiled twin is built and the journal is on a local
        file system (:func:`local_file_system`). ``emit`` makes one write of a few hundred
        bytes into the page cache, about a microsecond; letting go of the GIL for it hands
        the GIL to a busy background thread, and the caller waits to get it back (measured:
        a durable ``emit`` 15 µs with, 6 µs without). Only writes up to
        :data:`HOLD_GIL_MAX_BYTES` keep it (copying more takes long enough by itself).
        While such a write waits (for the disk, a lock, memory), every thread of the process
        waits too: after a write that slept, or took over :data:`SLOW_WRITE` (also one that
        then failed), writes let go of the GIL for :data:`HOLD_OFF`. So a disk that stalls
        stops every thread at most once in that time, and the caller alone otherwise, as
        with ``os.write``."""
        hold = _write_holding_gil
        if hold is not None and type(data) is bytes and len(data) <= HOLD_GIL_MAX_BYTES:
            start = _monotonic()
            if start >= self._hold_gil_from:
                slept = False
                try:
                    written, slept = hold(self._fd, data)
                finally:  # a write that failed after a long wait counts too
                    took = _monotonic() - start
                    if slept or took > SLOW_WRITE:
                        self._hold_gil_from = start + took + HOLD_OFF
                        self._slow = f"{'waited' if slept else 'took'} {took * 1000:.1f} ms"
                if written < len(data):
                    _write_all(self._fd, memoryview(data)[written:])
                return
        _write_all(self._fd, data)

    def close(self, *, delete_current: bool) -> None:
        """Stop appending; delete the current journal when it is fully ingested."""
        with self._lock:
            fd, self._fd = self._fd, -1
        if fd < 0:
            return
        os.close(fd)
        if delete_current:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.directory / self.name)
            for name in list(self.retired):
                self.delete(name)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.directory / f"{self.owner}.owner")
        os.close(self._owner_fd)

    def abandon(self) -> None:
        """In a forked child: drop the inherited descriptors (the parent keeps its lock)."""
        with contextlib.suppress(OSError):
            os.close(self._fd)
        with contextlib.suppress(OSError):
            os.close(self._owner_fd)
        self._fd = -1


def journals_of(directory: Path, owner: str) -> list[str]:
    """The journal names of ``owner``, oldest first."""
    names = [p.name for p in directory.glob(f"{owner}.*.journal")]
    return sorted(names, key=lambda n: int(n.rsplit(".", 2)[1]))


@contextlib.contextmanager
def claim_dead_owners(directory: Path, skip: str) -> Iterator[list[str]]:
    """Lock every dead owner's lock file (except ``skip``); yield their names.

    While the context is open nobody else can claim them; on exit the lock files are
    deleted (their journals must have been replayed and deleted by then). Temporary files
    left by a process killed while creating one of its files are deleted first.
    """
    _sweep_temporaries(directory)
    claimed: list[tuple[str, int]] = []
    # Journals first: an owner starting meanwhile makes its lock file before any journal.
    journal_owners = {p.name.split(".", 1)[0] for p in directory.glob("*.journal")}
    owners = {p.name[: -len(".owner")] for p in directory.glob("*.owner")}
    # Journals whose owner file is gone (a crash between the two deletions) are orphans.
    orphans = journal_owners - owners
    try:
        for owner in sorted(owners - {skip}):
            fd = _lock_existing(directory / f"{owner}.owner")
            if fd is not None:
                claimed.append((owner, fd))
        yield [owner for owner, _ in claimed] + sorted(orphans - {skip})
    finally:
        for owner, fd in claimed:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(directory / f"{owner}.owner")
            os.close(fd)


def _sweep_temporaries(directory: Path) -> None:
    """Delete the temporary files of processes killed inside :func:`_create_locked`:
    older than :data:`STALE_TEMPORARY` and not locked. They hold a header at most, never
    an event (records are appended only after the rename)."""
    too_old = time.time() - STALE_TEMPORARY
    for path in directory.glob(".*.tmp"):
        try:
            if path.stat().st_mtime > too_old:
                continue
        except FileNotFoundError:
            continue
        fd = _lock_existing(path)
        if fd is not None:
            try:
                path.unlink(missing_ok=True)
            finally:
                os.close(fd)


class Damaged(NamedTuple):
    """Bytes ``start .. end`` of a journal that hold no valid frame (kept in ``data``):
    damage on disk, not a torn tail. They may hold records, which are lost to replay."""

    start: int
    end: int
    data: bytes

    def __repr__(self) -> str:  # the bytes may hold email addresses: never in a repr
        return f"Damaged(start={self.start}, end={self.end}, data=<{len(self.data)} bytes>)"


def _valid_at(data: bytes, pos: int) -> int:
    """The end of the frame starting at ``pos`` when it is whole and its crc32 matches,
    else -1. An empty payload is never valid: no writer makes one, and eight zero bytes
    would pass its check."""
    end = len(data)
    if pos + _HEADER.size > end:
        return -1
    length, crc = _HEADER.unpack_from(data, pos)
    start = pos + _HEADER.size
    after: int = start + length
    if length == 0 or after > end or zlib.crc32(memoryview(data)[start:after]) != crc:
        return -1
    return after


def read_frames(path: Path, offset: int) -> Iterator[tuple[int, bytes | Damaged]]:
    """Yield ``(end offset, payload)`` for each whole frame after ``offset``, in order.

    A bad frame (crc32 mismatch, impossible length) followed by a valid one further on is
    damage: the bytes up to that frame are yielded as ``(end offset, Damaged)`` and reading
    goes on from there. A bad frame with no valid one after it is a torn tail when it runs
    past the end of the file (the writer died inside its ``write``): reading stops quietly;
    when it does not, it is damage too. A file that is not a journal raises SpoolError
    naming it.
    """
    with open(path, "rb") as f:
        data = f.read()
    if not data.startswith(MAGIC):
        raise SpoolError(f"{path}: not a selligent-segment journal; it was left untouched")
    pos = max(offset, len(MAGIC))
    end = len(data)
    while pos < end:
        after = _valid_at(data, pos)
        if after >= 0:
            yield after, data[pos + _HEADER.size : after]
            pos = after
            continue
        resync = next((q for q in range(pos + 1, end) if _valid_at(data, q) >= 0), -1)
        if resync < 0:
            start = pos + _HEADER.size
            if start > end or start + _HEADER.unpack_from(data, pos)[0] > end:
                return  # a torn tail: never acknowledged to a caller
            resync = end
        yield resync, Damaged(pos, resync, data[pos:resync])
        pos = resync
