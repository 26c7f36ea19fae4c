"""Crash and fault tests of the PostgreSQL spool with real processes on a real server:
emitting processes and relays, some killed with SIGKILL at random moments, the database
restarted (fast and immediate) and its backends terminated mid-run. Every accepted event
arrives; a messageId arrives more than once only as a resend after a lease expired."""

from __future__ import annotations

import itertools
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import _pg_worker
import psycopg
import pytest

from selligent_segment import message_id
from selligent_segment.testing import LocalSegment
from selligent_segment.testing._local_postgres import LocalPostgres

pytestmark = [pytest.mark.slow, pytest.mark.fault_injection]
WORKER = Path(__file__).with_name("_pg_worker.py")
_schemas = itertools.count(1)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(__file__).parents[1])
    return env


class _Emitting:
    def __init__(self, url: str, endpoint: str, prefix: str, start: int, end: int) -> None:
        self.prefix = prefix
        self.accepted: list[int] = []
        self.proc = subprocess.Popen(
            [sys.executable, str(WORKER), url, endpoint, prefix, str(start), str(end)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=_env(),
        )

    def read_until(self, count: int) -> bool:
        """Read ``A i`` lines until ``count`` were accepted in all, or the end (``E``)."""
        assert self.proc.stdout is not None
        while len(self.accepted) < count:
            line = self.proc.stdout.readline()
            if not line or line == b"E\n":
                return False
            self.accepted.append(int(line.split()[1]))
        return True

    def read_rest(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(b"A "):
                self.accepted.append(int(line.split()[1]))
            if line == b"E\n":
                return


def _relay(url: str, endpoint: str, keys: Path) -> subprocess.Popen[bytes]:
    """A relay process, once it has started (its first line said so): a SIGTERM before
    Python has even set up its handlers would kill it, not stop it."""
    relay = _start_relay(url, endpoint, keys)
    assert relay.stderr is not None
    while b"relay: delivering from" not in (line := relay.stderr.readline()):
        assert line, f"the relay did not start (status {relay.wait()})"
    return relay


def _start_relay(url: str, endpoint: str, keys: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "selligent_segment",
            "relay",
            "--spool",
            url,
            "--write-keys",
            str(keys),
            "--endpoint",
            endpoint,
            "--interval",
            "1",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=_env(),
    )


def test_every_accepted_event_arrives_through_kills_restarts_and_cut_backends(
    postgres: LocalPostgres, tmp_path: Path
) -> None:
    keys = tmp_path / "keys.json"
    keys.write_text('{"t0": "key-t0", "t1": "key-t1", "t2": "key-t2"}')
    rng = random.Random(13)
    url = f"{postgres.url}?spool_schema=crash_{next(_schemas)}&lease_seconds=2"
    with LocalSegment(record_events=False) as server:
        relays = [_relay(url, server.url, keys) for _ in range(2)]
        emitters = [_Emitting(url, server.url, f"w{k}", 0, 600) for k in range(3)]
        try:
            # SIGKILL one emitting process and one relay at random moments
            victim = emitters[0]
            victim.read_until(rng.randrange(50, 300))
            victim.proc.send_signal(signal.SIGKILL)
            victim.proc.wait()
            relays[0].send_signal(signal.SIGKILL)
            relays[0].wait()
            emitters[1].read_until(150)
            postgres.restart("fast")
            emitters[1].read_until(300)
            postgres.restart("immediate")
            emitters[2].read_until(400)
            with psycopg.connect(postgres.url, autocommit=True) as admin:
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE pid <> pg_backend_pid() AND datname = current_database()"
                )
            relays.append(_relay(url, server.url, keys))
            for worker in emitters[1:]:
                worker.read_rest()
            expected = {
                message_id(_pg_worker.record(w.prefix, i)) for w in emitters for i in w.accepted
            }
            assert len(expected) == sum(len(w.accepted) for w in emitters)
            assert server.wait_for_ids(expected, timeout=120), (
                f"{len(expected - server.message_ids())} accepted events never arrived"
            )
            # The victim's accepted events arrived although it died; only resends after a
            # lease expired (a killed relay's, or the restarts') may repeat a messageId.
            assert server.duplicates <= 2 * 500
        finally:
            for worker in emitters:
                if worker.proc.poll() is None:
                    assert worker.proc.stdin is not None
                    worker.proc.stdin.close()
                    worker.proc.wait(timeout=30)
            for relay in relays:
                if relay.poll() is None:
                    relay.send_signal(signal.SIGTERM)
                    assert relay.wait(timeout=30) == 0
