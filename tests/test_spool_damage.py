"""A spool file or its journals damaged, foreign or unwritable: nothing lost silently, a
clear error naming the file and the reason, nothing hung.

Real SQLite files in tmp_path, real processes killed with SIGKILL, LocalSegment on
loopback, the command line run as a user would.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from selligent_segment import BatchPolicy, Emitter, RetryPolicy, SpoolFile, message_id
from selligent_segment._journal import FRAME_OVERHEAD, journals_of, read_frames
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
        "from selligent_segment._sqlite_spool import SqliteSpool\n"
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
