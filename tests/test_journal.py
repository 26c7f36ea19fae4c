"""The acceptance journal: framing, torn and corrupt tails, rotation, dead-owner detection."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from selligent_segment._errors import SpoolError, SpoolFull
from selligent_segment.spool import _journal
from selligent_segment.spool._journal import (
    FRAME_OVERHEAD,
    MAGIC,
    STALE_TEMPORARY,
    Damaged,
    Journal,
    claim_dead_owners,
    journals_of,
    read_frames,
)


@pytest.fixture
def jdir(tmp_path: Path) -> Path:
    directory = tmp_path / "spool.db.journals"
    directory.mkdir(mode=0o700)
    return directory


def payloads(n: int, start: int = 0) -> list[bytes]:
    return [f"record-{i}-".encode() * (1 + i % 5) for i in range(start, start + n)]


def test_appended_frames_read_back_in_order_with_their_end_offsets(jdir: Path) -> None:
    journal = Journal(jdir)
    first = payloads(3)
    name, end = journal.append(first)
    second = payloads(2, 3)
    name2, end2 = journal.append(second)
    assert name2 == name == journals_of(jdir, journal.owner)[0]
    assert end == len(MAGIC) + sum(FRAME_OVERHEAD + len(p) for p in first)
    assert end2 == os.path.getsize(jdir / name)
    frames = list(read_frames(jdir / name, 0))
    assert [p for _, p in frames] == first + second
    assert frames[2][0] == end
    assert frames[-1][0] == end2
    # From a recorded offset only what follows it is read.
    assert [p for _, p in read_frames(jdir / name, end)] == second
    journal.close(delete_current=False)


def test_journal_and_lock_files_are_private(jdir: Path) -> None:
    old = os.umask(0)
    try:
        journal = Journal(jdir)
        journal.append(payloads(1))
    finally:
        os.umask(old)
    for path in jdir.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert sorted(p.suffix for p in jdir.iterdir()) == [".journal", ".owner"]
    journal.close(delete_current=False)


def test_a_torn_tail_is_ignored(jdir: Path) -> None:
    journal = Journal(jdir)
    name, _ = journal.append(payloads(3))
    journal.close(delete_current=False)
    path = jdir / name
    whole = path.read_bytes()
    last = len(payloads(3)[-1]) + FRAME_OVERHEAD
    # The process died inside the last frame's write: every cut point loses only it.
    for cut in [1, FRAME_OVERHEAD - 1, FRAME_OVERHEAD, FRAME_OVERHEAD + 1, last - 1]:
        path.write_bytes(whole[: len(whole) - last + cut])
        assert [p for _, p in read_frames(path, 0)] == payloads(2), cut
    path.write_bytes(whole)
    assert [p for _, p in read_frames(path, 0)] == payloads(3)


def _payloads_and_damage(path: Path) -> tuple[list[bytes], list[Damaged]]:
    frames = [p for _, p in read_frames(path, 0)]
    return (
        [p for p in frames if not isinstance(p, Damaged)],
        [p for p in frames if isinstance(p, Damaged)],
    )


def test_a_damaged_frame_is_skipped_and_reported_and_the_frames_after_it_are_read(
    jdir: Path,
) -> None:
    journal = Journal(jdir)
    records = payloads(4)
    name, _ = journal.append(records)
    journal.close(delete_current=False)
    path = jdir / name
    whole = path.read_bytes()
    second = len(MAGIC) + FRAME_OVERHEAD + len(records[0])
    third = second + FRAME_OVERHEAD + len(records[1])
    # A byte of frame 2's payload, of its crc32, of its length (longer, shorter, absurd).
    for where, value in [
        (second + FRAME_OVERHEAD, None),
        (second + 4, None),
        (second, len(records[1]) + 3),
        (second, len(records[1]) - 3),
        (second, 1 << 30),
    ]:
        data = bytearray(whole)
        if value is None:
            data[where] ^= 0xFF
        else:
            data[second : second + 4] = value.to_bytes(4, "little")
        path.write_bytes(bytes(data))
        good, damaged = _payloads_and_damage(path)
        assert good == [records[0], *records[2:]], where
        assert damaged == [Damaged(second, third, bytes(data[second:third]))], where
        # The damaged range ends where the next good frame starts: its end offset.
        ends = [end for end, _ in read_frames(path, 0)]
        assert ends[1] == third


def test_a_damaged_last_frame_is_reported_not_taken_for_a_torn_tail(jdir: Path) -> None:
    journal = Journal(jdir)
    records = payloads(3)
    name, end = journal.append(records)
    journal.close(delete_current=False)
    path = jdir / name
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01  # the last frame is whole, its crc32 no longer matches
    path.write_bytes(bytes(data))
    last = end - FRAME_OVERHEAD - len(records[-1])
    good, damaged = _payloads_and_damage(path)
    assert good == records[:2]
    assert damaged == [Damaged(last, end, bytes(data[last:]))]


def test_bytes_that_look_like_a_frame_header_are_no_frame_unless_the_crc_matches(
    jdir: Path,
) -> None:
    journal = Journal(jdir)
    records = payloads(2)
    name, _ = journal.append(records)
    journal.close(delete_current=False)
    path = jdir / name
    first_end = len(MAGIC) + FRAME_OVERHEAD + len(records[0])
    data = path.read_bytes()
    # Garbage between two good frames, full of plausible headers: small lengths that fit
    # in the file, crc32 values that do not match (and eight zero bytes: an empty frame
    # whose crc32 would match, which no writer makes).
    fake = b"".join(
        int.to_bytes(n, 4, "little") + int.to_bytes(0xDEADBEEF ^ n, 4, "little") + b"x" * n
        for n in (1, 5, 12, 3)
    )
    garbage = fake + bytes(8) + fake
    path.write_bytes(data[:first_end] + garbage + data[first_end:])
    good, damaged = _payloads_and_damage(path)
    assert good == records
    assert damaged == [Damaged(first_end, first_end + len(garbage), garbage)]
    # Without a good frame after it, the garbage is damage up to the end of the file (its
    # first header fits in the file: it is no torn tail).
    path.write_bytes(data + garbage)
    good, damaged = _payloads_and_damage(path)
    assert good == records
    assert damaged == [Damaged(len(data), len(data) + len(garbage), garbage)]


def test_a_file_that_is_not_a_journal_is_refused_and_left_untouched(jdir: Path) -> None:
    path = jdir / "someone.1.journal"
    path.write_bytes(b"hello, I am a text file\n")
    with pytest.raises(SpoolError, match="not a selligent-segment journal"):
        list(read_frames(path, 0))
    assert path.read_bytes() == b"hello, I am a text file\n"


def test_journals_rotate_and_a_finished_one_can_be_deleted(
    jdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_journal, "ROTATE_BYTES", 200)
    journal = Journal(jdir)
    marks = [journal.append([b"x" * 100]) for _ in range(5)]
    names = journals_of(jdir, journal.owner)
    assert len(names) > 1
    assert names == sorted({n for n, _ in marks}, key=names.index)
    first = names[0]
    first_end = max(off for n, off in marks if n == first)
    assert journal.finished(first, first_end)
    assert not journal.finished(first, first_end - 1)
    assert not journal.finished(names[-1], marks[-1][1])  # the current one never is
    journal.delete(first)
    assert first not in journals_of(jdir, journal.owner)
    journal.close(delete_current=True)
    assert list(jdir.iterdir()) == []


def test_append_after_close_raises(jdir: Path) -> None:
    journal = Journal(jdir)
    journal.close(delete_current=True)
    with pytest.raises(SpoolError, match="closed"):
        journal.append([b"x"])


def _disk_fills_mid_write(monkeypatch: pytest.MonkeyPatch) -> None:
    real_write = os.write

    def half_then_enospc(fd: int, data: bytes | memoryview) -> int:
        if len(data) > 1:
            real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "write", half_then_enospc)  # the one _journal calls
    if _journal._write_holding_gil is not None:  # and its compiled twin, where built
        monkeypatch.setattr(_journal, "_write_holding_gil", half_then_enospc)


def test_disk_full_raises_spoolfull_and_later_frames_stay_readable(
    jdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = Journal(jdir)
    name, _ = journal.append([b"kept"])
    with monkeypatch.context() as patch:
        _disk_fills_mid_write(patch)
        with pytest.raises(SpoolFull, match="disk is full"):
            journal.append([b"lost" * 10])
        with pytest.raises(SpoolFull):  # still full: refused again, nothing torn left
            journal.append([b"lost too"])
    # Room again: what follows is read back, at the offset the mark says.
    mark = journal.append([b"after"])
    names = journals_of(jdir, journal.owner)
    frames = [(n, end, p) for n in names for end, p in read_frames(jdir / n, 0)]
    assert [p for _, _, p in frames] == [b"kept", b"after"]
    assert frames[-1][:2] == mark
    assert mark[1] == os.path.getsize(jdir / mark[0])
    journal.close(delete_current=False)
    assert name in names


def test_when_the_torn_frame_cannot_be_cut_off_the_next_frame_starts_a_new_journal(
    jdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = Journal(jdir)
    name, _ = journal.append([b"kept"])
    with monkeypatch.context() as patch:
        _disk_fills_mid_write(patch)

        def no_truncate(fd: int, length: int) -> None:
            raise OSError(errno.EIO, "I/O error")

        patch.setattr(os, "ftruncate", no_truncate)
        with pytest.raises(SpoolFull):
            journal.append([b"lost" * 10])
        with pytest.raises(SpoolFull):  # not even a new journal's header fits
            journal.append([b"lost too"])
    name2, end2 = journal.append([b"after"])
    assert name2 != name
    assert [p for _, p in read_frames(jdir / name, 0)] == [b"kept"]
    assert [p for _, p in read_frames(jdir / name2, 0)] == [b"after"]
    assert end2 == os.path.getsize(jdir / name2)
    journal.close(delete_current=False)


def test_a_full_disk_at_rotation_raises_spoolfull(
    jdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_journal, "ROTATE_BYTES", 64)
    journal = Journal(jdir)
    journal.append([b"x" * 100])
    with monkeypatch.context() as patch:
        _disk_fills_mid_write(patch)
        with pytest.raises(SpoolFull):
            journal.append([b"y"])
    assert journal.append([b"z"])[0] != journals_of(jdir, journal.owner)[0]
    journal.close(delete_current=False)


def test_a_live_owner_is_never_claimed_a_closed_one_is(jdir: Path) -> None:
    alive = Journal(jdir)
    alive.append([b"a"])
    gone = Journal(jdir)
    gone.append([b"b"])
    gone.close(delete_current=False)  # the lock is released, the journal kept
    me = Journal(jdir)
    with claim_dead_owners(jdir, skip=me.owner) as dead:
        assert dead == [gone.owner]
        # While claimed, nobody else can claim it.
        with claim_dead_owners(jdir, skip="nobody") as others:
            assert gone.owner not in others
            assert alive.owner not in others
    # Claiming deletes the lock file; the journal is the claimant's to replay and delete.
    assert not (jdir / f"{gone.owner}.owner").exists()
    assert journals_of(jdir, gone.owner)
    # A journal without a lock file is an orphan: every scan reports it.
    with claim_dead_owners(jdir, skip=me.owner) as dead:
        assert dead == [gone.owner]
    alive.close(delete_current=True)
    me.close(delete_current=True)


def _killed(script: str, jdir: Path) -> str:
    """Run ``script`` on ``jdir`` in a child that kills itself with SIGKILL; its stdout."""
    proc = subprocess.run(
        [sys.executable, "-c", script, str(jdir)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == -9, proc.stderr
    return proc.stdout.strip()


def test_an_owner_killed_by_sigkill_is_claimed(jdir: Path) -> None:
    script = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from selligent_segment.spool._journal import Journal\n"
        "j = Journal(Path(sys.argv[1]))\n"
        "j.append([b'one', b'two'])\n"
        "print(j.owner, flush=True)\n"
        "os.kill(os.getpid(), 9)\n"
    )
    owner = _killed(script, jdir)
    assert (jdir / f"{owner}.owner").exists()
    with claim_dead_owners(jdir, skip="me") as dead:
        assert dead == [owner]
        (name,) = journals_of(jdir, owner)
        assert [p for _, p in read_frames(jdir / name, 0)] == [b"one", b"two"]


def test_a_temporary_file_left_by_a_process_killed_while_creating_it_is_swept(
    jdir: Path,
) -> None:
    # The process is killed after making and locking its temporary owner file, before the
    # rename that gives it its name.
    script = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from selligent_segment.spool import _journal\n"
        "def stuck(src, dst):\n"
        "    print(src, flush=True)\n"
        "    os.kill(os.getpid(), 9)\n"
        "_journal.os.rename = stuck\n"
        "_journal.Journal(Path(sys.argv[1]))\n"
    )
    left = Path(_killed(script, jdir))
    assert left.parent == jdir
    assert left.name.endswith(".tmp")
    assert left.exists()
    # A fresh temporary file, and an old one still locked by its (live) creator, stay.
    fresh = jdir / ".fresh.owner.0000.tmp"
    fresh.write_bytes(b"")
    held = jdir / ".held.owner.0000.tmp"
    held.write_bytes(b"")
    fd = os.open(held, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        old = time.time() - STALE_TEMPORARY - 1
        for path in (left, held):
            os.utime(path, (old, old))
        with claim_dead_owners(jdir, skip="me") as dead:
            assert dead == []
        assert not left.exists()
        assert fresh.exists()
        assert held.exists()
    finally:
        os.close(fd)


def test_a_forked_child_does_not_release_the_parents_lock(jdir: Path) -> None:
    journal = Journal(jdir)
    pid = os.fork()
    if pid == 0:  # the child lets go of the inherited descriptors, then exits
        journal.abandon()
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    with claim_dead_owners(jdir, skip="me") as dead:
        assert journal.owner not in dead
    journal.append([b"still mine"])
    journal.close(delete_current=True)


# -- the write that keeps the GIL (the compiled twin of os.write) ------------------------------


class _Writes:
    """Stands in for the compiled ``write_holding_gil`` and the plain ``os.write``: records
    which one wrote, moves the fake clock by ``took`` for a GIL-keeping write, which says
    it ``slept`` when told, and may write only part, or part and then raise ``fail``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *, short_by: int = 0) -> None:
        self.now = 1024.0  # with SLOW_WRITE a power of two below, the sums are exact
        self.took = 0.0
        self.slept = False
        self.fail: BaseException | None = None
        self.short_by = short_by  # the GIL-keeping write leaves this many bytes unwritten
        self.paths: list[str] = []
        real = os.write

        def holding(fd: int, data: bytes) -> tuple[int, bool]:
            assert type(data) is bytes
            self.paths.append("held")
            self.now += self.took
            if self.fail is not None:
                real(fd, data[: len(data) // 2])
                raise self.fail
            return real(fd, data[: len(data) - self.short_by]), self.slept

        def plain(fd: int, data: bytes | memoryview) -> int:
            self.paths.append("plain")
            return real(fd, data)

        monkeypatch.setattr(_journal, "_write_holding_gil", holding)
        monkeypatch.setattr(_journal, "local_file_system", lambda directory: True)
        monkeypatch.setattr(_journal, "SLOW_WRITE", 2.0**-7)
        monkeypatch.setattr(os, "write", plain)
        monkeypatch.setattr(_journal, "_monotonic", lambda: self.now)

    def journal(self, jdir: Path, **options: bool) -> Journal:
        journal = Journal(jdir, **options)
        self.paths.clear()  # the new journal's header
        return journal


def _frames(jdir: Path, journal: Journal) -> list[bytes]:
    return [p for n in journals_of(jdir, journal.owner) for _, p in read_frames(jdir / n, 0)]


def test_writes_keep_the_gil_until_one_is_slow_then_let_go_of_it_for_the_hold_off(
    jdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes = _Writes(monkeypatch)
    journal = writes.journal(jdir)
    journal.append([b"a"])
    writes.took = _journal.SLOW_WRITE  # not over it: still fast
    journal.append([b"b"])
    assert writes.paths == ["held", "held"]
    assert journal.take_note() is None
    writes.took = _journal.SLOW_WRITE * 2  # a stalled disk: every thread waited
    journal.append([b"c"])
    assert journal.take_note() == "took 15.6 ms"  # for the spool's upkeep to log, once
    assert journal.take_note() is None
    writes.took = 0.0
    journal.append([b"d"])
    writes.now += _journal.HOLD_OFF - 1.0
    journal.append([b"e"])
    assert writes.paths == ["held", "held", "held", "plain", "plain"]
    writes.now += 1.0  # the hold-off is over
    journal.append([b"f"])
    assert writes.paths[-1] == "held"
    assert _frames(jdir, journal) == [b"a", b"b", b"c", b"d", b"e", b"f"]
    journal.close(delete_current=False)


@pytest.mark.parametrize(
    ("slept", "took", "fail", "note"),
    [
        (True, 0.0, None, "waited 0.0 ms"),  # however short: it waited, every thread too
        (False, 5.0, OSError(errno.EIO, "I/O error"), "took 5000.0 ms"),  # a dead NFS server
    ],
)
def test_a_write_that_slept_or_failed_slowly_lets_go_of_the_gil_for_the_hold_off(
    jdir: Path,
    monkeypatch: pytest.MonkeyPatch,
    slept: bool,
    took: float,
    fail: OSError | None,
    note: str,
) -> None:
    writes = _Writes(monkeypatch)
    journal = writes.journal(jdir)
    journal.append([b"kept"])
    writes.slept, writes.took, writes.fail = slept, took, fail
    with pytest.raises(SpoolError, match="I/O error") if fail else contextlib.nullcontext():
        journal.append([b"slow" * 10])
    assert journal.take_note() == note
    writes.slept, writes.took, writes.fail = False, 0.0, None
    journal.append([b"after"])
    assert writes.paths == ["held", "held", "plain"]
    expected = [b"kept", b"after"] if fail else [b"kept", b"slow" * 10, b"after"]
    assert _frames(jdir, journal) == expected  # a failed write left no torn frame
    journal.close(delete_current=False)


def test_an_exception_from_a_signal_handler_mid_write_leaves_no_torn_frame(
    jdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes = _Writes(monkeypatch)
    journal = writes.journal(jdir)
    name, end = journal.append([b"kept"])
    writes.fail = KeyboardInterrupt()
    with pytest.raises(KeyboardInterrupt):
        journal.append([b"half" * 10])
    assert os.path.getsize(jdir / name) == end  # the half frame is cut off
    writes.fail = None
    assert journal.append([b"after"])[0] == name
    assert _frames(jdir, journal) == [b"kept", b"after"]
    journal.close(delete_current=False)


def test_the_rest_of_a_short_gil_keeping_write_is_written_plainly(
    jdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes = _Writes(monkeypatch, short_by=3)
    journal = writes.journal(jdir)
    first = payloads(4)
    mark = journal.append(first)
    assert writes.paths == ["held", "plain"]
    assert [p for _, p in read_frames(jdir / mark[0], 0)] == first
    assert mark[1] == os.path.getsize(jdir / mark[0])
    journal.close(delete_current=False)


def test_a_write_over_the_size_limit_lets_go_of_the_gil(
    jdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Copying megabytes (an emit_many chunk) takes long enough to hold every thread."""
    writes = _Writes(monkeypatch)
    journal = writes.journal(jdir)
    limit = _journal.HOLD_GIL_MAX_BYTES - _journal.FRAME_OVERHEAD
    journal.append([b"x" * limit])
    journal.append([b"y" * (limit + 1)])
    assert writes.paths == ["held", "plain"]
    journal.close(delete_current=True)


@pytest.mark.parametrize("why", ["fsync", "not a local file system", "no compiled twin"])
def test_writes_let_go_of_the_gil_with_fsync_off_a_local_disk_or_without_the_twin(
    jdir: Path, monkeypatch: pytest.MonkeyPatch, why: str
) -> None:
    """fdatasync lets go of the GIL anyway; a network file system may make a write wait
    on the network; without the twin there is only ``os.write``."""
    writes = _Writes(monkeypatch)
    if why == "not a local file system":
        monkeypatch.setattr(_journal, "local_file_system", lambda directory: False)
    elif why == "no compiled twin":
        monkeypatch.setattr(_journal, "_write_holding_gil", None)
    journal = writes.journal(jdir, fsync=why == "fsync")
    journal.append([b"a"])
    assert writes.paths == ["plain"]
    journal.close(delete_current=True)


_MOUNTS = """\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
30 22 0:40 / /srv/nfs rw,relatime shared:9 - nfs4 server:/export rw,vers=4.2
31 30 0:41 / /srv/nfs/local rw shared:10 - tmpfs tmpfs rw
32 22 0:42 / /mnt/with\\040space rw shared:11 - fuse.sshfs host:/ rw
33 22 0:43 / /data rw shared:12 - xfs /dev/sdb1 rw
34 22 0:44 / /data rw shared:13 - cifs //host/share rw
"""


@pytest.mark.parametrize(
    ("path", "local"),
    [
        ("/", True),
        ("/var/spool", True),
        ("/srv/nfs", False),
        ("/srv/nfs/spool", False),
        ("/srv/nfsother", True),  # a prefix of the name is not the mount
        ("/srv/nfs/local/spool", True),  # the deepest mount holds it
        ("/mnt/with space/spool", False),
        ("/data/spool", False),  # mounted over: the last mount is the one seen
    ],
)
def test_local_file_system_reads_the_mount_that_holds_the_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, path: str, local: bool
) -> None:
    mounts = tmp_path / "mountinfo"
    mounts.write_text(_MOUNTS)
    monkeypatch.setattr(_journal, "_MOUNTINFO", str(mounts))
    assert _journal.local_file_system(Path(path)) is local


def test_local_file_system_is_false_where_the_mounts_cannot_be_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_journal, "_MOUNTINFO", str(tmp_path / "absent"))
    assert _journal.local_file_system(tmp_path) is False


def test_a_journal_retired_after_its_last_write_was_moved_in_is_deleted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A steady trickle: each write is moved into the file before the next one comes, and
    # that next one retires the journal. Its final mark went in as an ordinary offset and
    # no other came, so every retired journal stayed on disk while the process lived.
    from selligent_segment import Emitter
    from selligent_segment.testing import MockTransport

    monkeypatch.setattr(_journal, "ROTATE_BYTES", 1)  # every write in a journal of its own
    em = Emitter(write_key="k", spool=str(tmp_path / "spool.db"), transport=MockTransport())
    try:
        for i in range(5):
            em.emit({"type": "delivered", "email": f"u{i}@example.com", "event_id": str(i)})
            assert em.flush(10)  # moved in and delivered before the next write
        on_disk = sorted(p.name for p in (tmp_path / "spool.db.journals").glob("*.journal"))
        assert em.stats().delivered == 5
    finally:
        em.close(5)
    assert len(on_disk) <= 2  # the current journal, and the one it replaced at most
