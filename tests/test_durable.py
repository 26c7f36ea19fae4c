"""Crash tests of the durable spool: real worker processes killed with SIGKILL.

Each worker (tests/_crash_worker.py) emits records with unique ``event_id`` values into a
spool file and reports, on stdout, which calls returned: that is the *accepted* set.
Workers are killed with SIGKILL at random moments: while starting (recovering what the
previous one left), while emitting (journal writes, group commits into SQLite), while
sending (requests in flight to a LocalSegment with latency and injected faults). Then the
survivors, or a new process, deliver; the checks, by unique ``messageId``:

* every accepted event reached LocalSegment, with its own tenant's write key;
* nothing else did: only records a worker emitted, and of those not acknowledged as
  accepted at most the ones of the one call the worker was in when it died.

``SELLIGENT_CRASH_ITERATIONS`` (default 12) scales the number of kills;
``SELLIGENT_CRASH_SEED`` replays a run (the seed is in every failure message);
``SELLIGENT_OUTAGE_EVENTS`` (default 200,000) sizes the outage backlog.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from selligent_segment import BatchPolicy, Emitter, RetryPolicy, message_id
from selligent_segment.testing import FaultPlan, LocalSegment, MockTransport

REPO = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).with_name("_crash_worker.py")
ITERATIONS = int(os.environ.get("SELLIGENT_CRASH_ITERATIONS", "12"))
SEED = int(os.environ.get("SELLIGENT_CRASH_SEED", str(random.randrange(2**32))))
OUTAGE_EVENTS = int(os.environ.get("SELLIGENT_OUTAGE_EVENTS", "200000"))
FAST_RETRY = RetryPolicy(initial_backoff=0.02, max_backoff=0.2, max_attempts=1_000_000)

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="needs SIGKILL, flock and /proc"
)


def _load_worker_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_crash_worker", WORKER)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


worker_module = _load_worker_module()


class Worker:
    """One worker process and what it reported on stdout (read by a thread)."""

    def __init__(self, cfg: dict[str, Any], log_dir: Path) -> None:
        self.cfg = cfg
        self.name = cfg["prefix"]
        self.stderr_path = log_dir / f"{self.name}.stderr"
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, str(WORKER), json.dumps(cfg)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                cwd=REPO,
            )
        self.killed_at: float | None = None  # time.time() of the SIGKILL
        self.tried: list[tuple[int, int]] = []
        self.accepted: list[tuple[int, int]] = []
        self.n_accepted = 0
        self.ready = False
        self.flushing = 0
        self.flushed: list[bool] = []
        self.rss: list[tuple[int, int]] = []
        self.emitted_all = False
        self.done: bool | None = None
        self.other: list[str] = []
        self.eof = False
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, name=f"read-{self.name}", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            word, *rest = raw.decode().split()
            with self._cond:
                if word == "T":
                    self.tried.append((int(rest[0]), int(rest[1])))
                elif word == "A":
                    start, end = int(rest[0]), int(rest[1])
                    assert self.tried[-1] == (start, end)
                    self.accepted.append((start, end))
                    self.n_accepted += end - start
                elif word == "READY":
                    self.ready = True
                elif word == "F":
                    self.flushing += 1
                elif word == "FD":
                    self.flushed.append(rest[0] == "True")
                elif word == "RSS":
                    self.rss.append((int(rest[0]), int(rest[1])))
                elif word == "E":
                    self.emitted_all = True
                elif word == "DONE":
                    self.done = rest[0] == "True"
                else:
                    self.other.append(raw.decode())
                self._cond.notify_all()
        with self._cond:
            self.eof = True
            self._cond.notify_all()

    def describe(self) -> str:
        err = self.stderr_path.read_text(errors="replace")[-3000:]
        return (
            f"worker {self.name} (seed {SEED}, cfg {self.cfg}): exit {self.proc.poll()}, "
            f"accepted {self.n_accepted}, other output {self.other}\nstderr:\n{err}"
        )

    def wait_until(self, predicate: Callable[[], bool], what: str, timeout: float = 60) -> bool:
        """Wait for ``predicate`` (True) or the worker's end (False: it did not happen)."""
        with self._cond:
            if not self._cond.wait_for(lambda: predicate() or self.eof, timeout):
                pytest.fail(f"timed out waiting for {what}: {self.describe()}")
            return predicate()

    def pause(self, seconds: float) -> None:
        """Let the worker run for ``seconds`` (randomises a kill; not a synchronisation)."""
        with self._cond:
            self._cond.wait_for(lambda: self.eof, seconds)

    def kill(self) -> None:
        """SIGKILL (when still running), then collect everything it wrote."""
        self.killed_at = time.time()
        self.proc.send_signal(signal.SIGKILL)  # a no-op once it has been reaped
        self.proc.wait(30)
        self._reader.join(30)
        assert self.eof, self.describe()

    def tell(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command.encode() + b"\n")
        self.proc.stdin.flush()

    def finish(self, timeout: float = 60) -> None:
        """Wait for a clean exit (the worker flushed and closed)."""
        self.wait_until(lambda: False, "exit", timeout)
        assert self.proc.wait(30) == 0, self.describe()

    def has_emitted_all(self) -> bool:
        return self.emitted_all

    def has_flushed(self, times: int) -> bool:
        return len(self.flushed) >= times

    def accepted_indices(self) -> set[int]:
        return {i for start, end in self.accepted for i in range(start, end)}

    def in_progress(self) -> set[int]:
        """Records of the call the worker was in when it stopped (may have been accepted)."""
        if self.tried and (not self.accepted or self.accepted[-1] != self.tried[-1]):
            return set(range(*self.tried[-1]))
        return set()

    def emitted(self) -> int:
        return self.tried[-1][1] if self.tried else 0


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[[dict[str, Any]], Worker]]:
    """Start workers; any still running at the end of the test is killed."""
    workers: list[Worker] = []

    def start(cfg: dict[str, Any]) -> Worker:
        worker = Worker(cfg, tmp_path)
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        if worker.proc.poll() is None:
            worker.kill()
        if worker.proc.stdin is not None:
            with contextlib.suppress(OSError):
                worker.proc.stdin.close()
        if worker.proc.stdout is not None:
            worker.proc.stdout.close()


def _emitter(server: LocalSegment, spool: Path, keys: dict[str, str]) -> Emitter:
    return Emitter(
        write_keys=keys,
        endpoint=server.url,
        spool=spool,
        retry=FAST_RETRY,
        batch=BatchPolicy(linger=0.0),
        max_requests_per_second=0,
    )


def _epoch(timestamp: str) -> float:
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


def verify(server: LocalSegment, workers: list[Worker]) -> dict[str, int]:
    """Every accepted event arrived once or more, with its tenant's key; nothing else did.

    Returns {worker name: events that arrived without being acknowledged as accepted}.
    """
    owner_of: dict[str, tuple[Worker, int]] = {}
    keys: set[str] = set()
    for worker in workers:
        keys.update(worker_module.write_keys(worker.cfg).values())
        for i in range(worker.emitted()):
            owner_of[message_id(worker_module.record(worker.cfg, i))] = (worker, i)
    arrived: dict[Worker, set[int]] = {worker: set() for worker in workers}
    for key in sorted(keys):
        for event in server.events(key):
            mid = event["messageId"]
            assert mid in owner_of, f"seed {SEED}: an event nobody emitted arrived: {event}"
            worker, i = owner_of[mid]
            rec = worker_module.record(worker.cfg, i)
            assert key == f"key-{rec['tenant']}", (SEED, worker.name, i, key)
            assert event["anonymousId"] == rec["email"], (SEED, event)
            if worker.killed_at is not None:  # the time of emit, not of the replay
                assert _epoch(event["timestamp"]) <= worker.killed_at + 0.01, (SEED, event)
            arrived[worker].add(i)
    unacknowledged = {}
    for worker in workers:
        accepted = worker.accepted_indices()
        missing = sorted(accepted - arrived[worker])
        assert not missing, f"accepted events lost: {missing[:20]}...\n{worker.describe()}"
        extra = sorted(arrived[worker] - accepted - worker.in_progress())
        assert not extra, f"events never emitted arrived: {extra[:20]}\n{worker.describe()}"
        unacknowledged[worker.name] = len(arrived[worker] - accepted)
    return unacknowledged


def assert_spool_drained(spool: Path) -> None:
    """Nothing left to send, no dead letter, no journal or lock file left behind.

    (Recorded journal offsets are not checked: a process killed inside ``close``, after
    deleting its journal and before deleting its offset, leaves a harmless one behind; a
    clean close leaving none is checked in test_sqlite_spool.py.)
    """
    files = sorted(p.name for p in spool.with_name(spool.name + ".journals").iterdir())
    with contextlib.closing(sqlite3.connect(spool)) as db:
        left = {
            "messages": db.execute("SELECT count(*) FROM messages").fetchone()[0],
            "dead_letters": db.execute("SELECT count(*) FROM dead_letters").fetchone()[0],
            "files": files,
        }
    assert left == {"messages": 0, "dead_letters": 0, "files": []}, f"seed {SEED}"


def _random_cfg(
    rng: random.Random, server: LocalSegment, spool: Path, prefix: str
) -> dict[str, Any]:
    mode = rng.choice(["emit", "many"])
    return {
        "spool": str(spool),
        "endpoint": server.url,
        "prefix": prefix,
        "count": rng.choice([150, 300, 600]),
        "tenants": 3,
        "mode": mode,
        "chunk": 1 if mode == "emit" else rng.choice([7, 50, 200]),
        "flush_every": rng.choice([0, 40, 120]),
        "linger": rng.choice([0.0, 0.02]),
    }


def _kill_at_random_moment(rng: random.Random, worker: Worker) -> str:
    """Kill ``worker`` while it starts, emits or sends; returns which was aimed at."""
    moment = rng.choice(["starting", "emitting", "emitting", "sending"])
    if moment == "starting":  # importing, opening the file, replaying the previous one
        worker.pause(rng.uniform(0.05, 0.6))
    elif moment == "emitting":
        target = rng.randrange(1, worker.cfg["count"])
        worker.wait_until(lambda: worker.n_accepted >= target, f"{target} accepted")
    else:  # requests in flight: LocalSegment answers after its latency
        worker.wait_until(lambda: worker.flushing > 0, "a flush")
        worker.pause(rng.uniform(0.0, 0.05))
    worker.kill()
    return moment


# -- one process, killed again and again ------------------------------------------------------


@pytest.mark.slow
@pytest.mark.fault_injection
def test_sigkill_at_random_moments_loses_no_accepted_event(
    tmp_path: Path, spawn: Callable[[dict[str, Any]], Worker]
) -> None:
    rng = random.Random(SEED)
    spool = tmp_path / "spool.db"
    workers: list[Worker] = []
    faults = FaultPlan.mix(seed=SEED, rates={500: 0.1, 503: 0.05, "drop": 0.05})
    with LocalSegment(latency=0.01, faults=faults) as server:
        moments = []
        # Each worker starts on the file the previous one was killed on: it may itself be
        # killed while replaying that one's journal.
        for n in range(ITERATIONS):
            worker = spawn(_random_cfg(rng, server, spool, f"w{n}"))
            workers.append(worker)
            moments.append(_kill_at_random_moment(rng, worker))
        assert sum(w.n_accepted for w in workers) > 0, [w.describe() for w in workers]
        server.set_faults(None)
        keys = worker_module.write_keys(workers[0].cfg)
        em = _emitter(server, spool, keys)
        assert em.flush(60), f"seed {SEED}"
        assert em.close(10)
        verify(server, workers)
    assert_spool_drained(spool)


# -- several processes, one file ----------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.fault_injection
def test_survivor_delivers_what_killed_workers_sharing_its_spool_accepted(
    tmp_path: Path, spawn: Callable[[dict[str, Any]], Worker]
) -> None:
    rng = random.Random(SEED + 1)
    spool = tmp_path / "spool.db"
    everyone: list[Worker] = []
    with LocalSegment(latency=0.01) as server:
        for round_ in range(max(1, ITERATIONS // 3)):
            server.set_faults(FaultPlan.mix(seed=SEED + round_, rates={500: 0.1, "drop": 0.05}))
            cfgs = [_random_cfg(rng, server, spool, f"r{round_}w{n}") for n in range(3)]
            cfgs[0].update(wait=True, count=300)  # the survivor stays up once done
            workers = [spawn(cfg) for cfg in cfgs]
            everyone += workers
            for worker in workers[1:]:
                _kill_at_random_moment(rng, worker)
            survivor = workers[0]
            survivor.wait_until(survivor.has_emitted_all, "the survivor's emits")
            server.set_faults(None)
            # Nothing tells the survivor: it finds the dead workers' journals and leases
            # itself, within a second or two, and delivers them with its own events.
            expected = {
                message_id(worker_module.record(w.cfg, i))
                for w in workers
                for i in w.accepted_indices()
            }
            deadline = time.monotonic() + 30
            while not expected <= server.message_ids():
                assert time.monotonic() < deadline, (
                    f"{len(expected - server.message_ids())} accepted events not delivered "
                    f"by the survivor: {survivor.describe()}"
                )
                server.wait_for(server.accepted_count + 1, timeout=0.1)
            flushes = len(survivor.flushed)
            survivor.tell("flush")
            survivor.wait_until(
                functools.partial(survivor.has_flushed, flushes + 1), "the survivor's flush"
            )
            assert survivor.flushed[-1], survivor.describe()
            survivor.tell("close")
            survivor.finish()
            assert survivor.done, survivor.describe()
            verify(server, everyone)
    assert_spool_drained(spool)


@pytest.mark.slow
@pytest.mark.fault_injection
def test_next_start_delivers_what_all_killed_workers_accepted(
    tmp_path: Path, spawn: Callable[[dict[str, Any]], Worker]
) -> None:
    rng = random.Random(SEED + 2)
    spool = tmp_path / "spool.db"
    with LocalSegment(latency=0.02) as server:
        workers = [spawn(_random_cfg(rng, server, spool, f"k{n}")) for n in range(3)]
        for worker in workers:
            _kill_at_random_moment(rng, worker)
        assert sum(w.n_accepted for w in workers) > 0
        before = server.message_ids()
        # A flush-only process: starts, delivers what the file holds, exits 0 when done.
        flusher = spawn(
            {
                "spool": str(spool),
                "endpoint": server.url,
                "prefix": "flusher",
                "count": 0,
                "tenants": 3,
            }
        )
        flusher.finish()
        assert flusher.flushed == [True], flusher.describe()
        assert flusher.done, flusher.describe()
        verify(server, workers)
        assert server.message_ids() >= before
    assert_spool_drained(spool)


@pytest.mark.slow
def test_a_new_process_replays_a_journal_nobody_ingested(
    tmp_path: Path, spawn: Callable[[dict[str, Any]], Worker]
) -> None:
    """Records only in a dead process's journal (killed before its encoder moved them into
    SQLite): a fresh Emitter's flush must not report done before replaying them."""
    spool = tmp_path / "spool.db"
    cfg = {"prefix": "j", "tenants": 2}
    n = 20_000  # replaying takes a while: flush must wait for it, not report an empty file
    script = (
        "import os, orjson, sys\n"
        "from pathlib import Path\n"
        "sys.path.insert(0, sys.argv[2])\n"
        "import _crash_worker as w\n"
        "from selligent_segment.spool._sqlite import SqliteSpool\n"
        "cfg = {'prefix': 'j', 'tenants': 2}\n"
        "spool = SqliteSpool(Path(sys.argv[1]), max_bytes=1 << 20, decoder=None)\n"
        "spool.accept([orjson.dumps((w.tenant_of(cfg, i), None, w.record(cfg, i)))"
        f" for i in range({n})])\n"
        "os.kill(os.getpid(), 9)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, str(spool), str(WORKER.parent)], check=False, timeout=60
    )
    assert proc.returncode == -signal.SIGKILL
    with contextlib.closing(sqlite3.connect(spool)) as db:
        assert db.execute("SELECT count(*) FROM messages").fetchone()[0] == 0
    with LocalSegment() as server:
        em = _emitter(server, spool, worker_module.write_keys(cfg))
        assert em.flush(30)
        assert server.message_ids() == {message_id(worker_module.record(cfg, i)) for i in range(n)}
        assert em.close(10)
    assert_spool_drained(spool)
    with contextlib.closing(sqlite3.connect(spool)) as db:  # nobody was killed in close
        assert db.execute("SELECT * FROM journals").fetchall() == []


# -- a long outage --------------------------------------------------------------------------------


@pytest.mark.slow
def test_outage_backlog_stays_on_disk_and_drains_fairly_when_segment_returns(
    tmp_path: Path, spawn: Callable[[dict[str, Any]], Worker]
) -> None:
    spool = tmp_path / "spool.db"
    big = OUTAGE_EVENTS
    with LocalSegment() as server:
        server.outage(503)
        cfg = {
            "spool": str(spool),
            "endpoint": server.url,
            "prefix": "o",
            "big": big,  # records 0 .. big-1 for tenant "big", then 5 small tenants
            "tenants": 5,
            "count": big + 100,
            "mode": "many",
            "chunk": 5000,
            "rss_every": 20_000,
            "wait": True,
            "max_pending": 20_000,
            "on_full": "block",
            "max_backoff": 0.1,
        }
        worker = spawn(cfg)
        worker.wait_until(lambda: worker.emitted_all, "the backlog", timeout=120)
        assert worker.n_accepted == big + 100, worker.describe()
        assert server.accepted_count == 0
        assert server.request_count > 0  # it kept trying through the outage
        # Everything accepted reaches the file (the encoder is at most max_pending behind).
        with contextlib.closing(sqlite3.connect(spool, timeout=30)) as db:
            deadline = time.monotonic() + 60
            while db.execute("SELECT count(*) FROM messages").fetchone()[0] < big + 100:
                assert time.monotonic() < deadline, worker.describe()
                worker.pause(0.05)
        reports = len(worker.rss)
        worker.tell("rss")
        worker.wait_until(lambda: len(worker.rss) > reports, "an RSS report")
        # Memory stays flat while the backlog grows: from 20,000 events in to the end the
        # peak RSS grows by far less than the events' size (a memory queue would hold
        # ~200 MB for 200,000 of them).
        baseline = worker.rss[1][0]
        peak = worker.rss[-1][1]
        assert peak - baseline < 40_000, worker.rss  # kB

        server.end_outage()
        worker.tell("flush")
        worker.wait_until(lambda: bool(worker.flushed), "the flush after the outage", 120)
        assert worker.flushed == [True], worker.describe()
        worker.tell("close")
        worker.finish()
        verify(server, [worker])
        assert len(server.message_ids()) == big + 100
        # Fairly across tenants: the small tenants' events did not wait for the big
        # tenant's backlog (~170 requests) to drain.
        delivered = [r.write_key for r in server.requests if r.status == 200]
        small = [n for n, key in enumerate(delivered) if key != "key-big"]
        assert len(small) == 5, small
        assert max(small) < min(30, len(delivered) // 4), (small, len(delivered))
    assert_spool_drained(spool)


def test_a_relative_spool_path_still_names_the_same_file_after_a_chdir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A daemon changes directory after start-up: the relative path was looked up again
    from the new one, so close() could not remove its journals (but forgot their
    offsets), and the next start sent every delivered event again."""
    home, elsewhere = tmp_path / "home", tmp_path / "elsewhere"
    home.mkdir()
    elsewhere.mkdir()
    monkeypatch.chdir(home)
    transport = MockTransport()
    em = Emitter(write_key="k", spool="data/spool.db", transport=transport)
    monkeypatch.chdir(elsewhere)
    assert em.config.spool == str(home / "data" / "spool.db")
    pid = os.fork()
    if pid == 0:  # a worker forked after the chdir: the same file, not one of its own
        code = 1
        try:
            em.emit({"type": "delivered", "email": "child@example.com", "event_id": "c"})
            code = 0 if em.flush(10) else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    for i in range(3):
        em.emit({"type": "delivered", "email": f"u{i}@example.com", "event_id": f"e{i}"})
    assert em.flush(10)
    assert em.close(10)
    assert len(transport.requests) == 1
    assert not (elsewhere / "data").exists()
    assert not any((home / "data" / "spool.db.journals").iterdir())
    monkeypatch.chdir(home)
    again = MockTransport()
    with Emitter(write_key="k", spool="data/spool.db", transport=again) as em2:
        assert em2.flush(10)
    assert again.requests == []
