"""The operations commands (``flush``, ``spool status``, ``dead-letters``, ``demo``),
run as a user would: subprocesses, real spool files, a LocalSegment on loopback."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _signals import default_sigint, press_ctrl_c

from selligent_segment import Emitter, RetryPolicy, SpoolError, SpoolFile
from selligent_segment.testing import LocalSegment

KEYS = {"acme": "key-acme", "globex": "key-globex"}


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k != "SEGMENT_WRITE_KEY"}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "selligent_segment", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=120,
    )


def record(i: int, tenant: str = "acme", **extra: Any) -> dict[str, Any]:
    return {
        "type": "delivered",
        "tenant": tenant,
        "email": f"user{i}@example.com",
        "event_id": f"ev-{tenant}-{i}",
        "email_id": extra.pop("email_id", "m-1"),
        **extra,
    }


@pytest.fixture
def server() -> Iterator[LocalSegment]:
    def refuse(item: dict[str, Any]) -> str | None:
        return "poison" if item["properties"].get("email_id") == "bad" else None

    with LocalSegment(write_keys=KEYS.values(), strict=True, refuse=refuse) as segment:
        yield segment


@pytest.fixture
def keys_file(tmp_path: Path) -> Path:
    path = tmp_path / "keys.json"
    path.write_text(json.dumps(KEYS))
    return path


def fill(spool: Path, records: list[dict[str, Any]]) -> None:
    """Accept records into ``spool`` while nothing can deliver them (endpoint down)."""
    down = LocalSegment().start()
    url = down.url
    down.stop()  # nothing listens there any more: every send fails and is retried later
    em = Emitter(
        write_keys=KEYS,
        endpoint=url,
        spool=spool,
        retry=RetryPolicy(initial_backoff=30.0, max_backoff=60.0),
    )
    assert em.emit_many(records).accepted == len(records)
    em.close(0.5)


@pytest.mark.slow
def test_flush_delivers_what_a_spool_holds_and_empties_it(
    tmp_path: Path, server: LocalSegment, keys_file: Path
) -> None:
    spool = tmp_path / "spool.db"
    fill(spool, [record(i, "acme" if i % 3 else "globex") for i in range(300)])
    with SpoolFile(spool) as sf:
        assert sf.status().queued == 300

    done = cli(
        "flush", "--spool", str(spool), "--write-keys", str(keys_file), "--endpoint", server.url
    )
    assert done.returncode == 0, done.stderr
    assert server.accepted_count == 300
    assert len(server.events("key-globex")) == 100
    with SpoolFile(spool) as sf:
        assert sf.status().queued == 0
    assert "key-acme" not in done.stderr + done.stdout


@pytest.mark.slow
def test_flush_names_a_tenant_whose_key_is_refused_and_keeps_its_events(
    tmp_path: Path, server: LocalSegment, keys_file: Path
) -> None:
    spool = tmp_path / "spool.db"
    fill(spool, [record(i, "acme" if i % 2 else "globex") for i in range(40)])
    server.revoke_write_key("key-globex")

    done = cli(
        "flush",
        "--spool",
        str(spool),
        "--write-keys",
        str(keys_file),
        "--endpoint",
        server.url,
        "--timeout",
        "20",
    )
    assert done.returncode == 3
    assert "'globex'" in done.stderr
    assert "20 events not delivered" in done.stderr
    assert "key-globex" not in done.stderr
    assert len(server.events("key-acme")) == 20
    with SpoolFile(spool) as sf:
        (globex,) = sf.status().tenants
    assert (globex.tenant, globex.queued) == ("globex", 20)
    assert globex.paused is not None
    assert "401" in globex.paused


def test_flush_refuses_a_missing_spool_without_creating_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope.db"
    done = cli(
        "flush", "--spool", str(missing), "--write-key", "k", "--endpoint", "http://127.0.0.1:9"
    )
    assert done.returncode == 2
    assert "no spool file there" in done.stderr
    assert not missing.exists()


@pytest.mark.slow
def test_spool_status_text_and_json(tmp_path: Path) -> None:
    spool = tmp_path / "spool.db"
    fill(spool, [record(i, "acme") for i in range(7)] + [record(1, "globex")])

    text = cli("spool", "status", "--spool", str(spool))
    assert text.returncode == 0, text.stderr
    assert "acme" in text.stdout
    assert "globex" in text.stdout
    data = json.loads(cli("spool", "status", "--spool", str(spool), "--json").stdout)
    per_tenant = {t["tenant"]: t for t in data["tenants"]}
    assert per_tenant["acme"]["queued"] == 7
    assert per_tenant["globex"]["queued"] == 1
    assert data["queued"] == 8
    assert data["processes"] == 0
    assert per_tenant["acme"]["oldest_age"] >= 0


def test_spool_status_of_a_foreign_file_exits_2_and_leaves_it(tmp_path: Path) -> None:
    foreign = tmp_path / "notes.db"
    foreign.write_text("not a database\n")
    done = cli("spool", "status", "--spool", str(foreign))
    assert done.returncode == 2
    assert "not a selligent-segment spool" in done.stderr
    assert foreign.read_text() == "not a database\n"


@pytest.mark.slow
def test_dead_letters_list_requeue_purge(
    tmp_path: Path, server: LocalSegment, keys_file: Path
) -> None:
    spool = tmp_path / "spool.db"
    bad = [record(100 + i, "acme", email_id="bad") for i in range(3)]
    fill(spool, [record(i) for i in range(10)] + bad + [record(50, "globex", email_id="bad")])
    flushed = cli(
        "flush", "--spool", str(spool), "--write-keys", str(keys_file), "--endpoint", server.url
    )
    assert flushed.returncode == 0, flushed.stderr  # dead letters are not deliverable
    assert "4 dead letters kept" in flushed.stderr
    assert server.accepted_count == 10

    listed = json.loads(cli("dead-letters", "list", "--spool", str(spool), "--json").stdout)
    assert len(listed) == 4
    assert {d["status"] for d in listed} == {400}
    assert all(d["reason"].startswith("rejected") for d in listed)
    only_globex = cli("dead-letters", "list", "--spool", str(spool), "--tenant", "globex")
    assert only_globex.stdout.count("\n") == 1
    assert "globex" in only_globex.stdout

    # The poison is fixed on the server side: requeue acme's and deliver them.
    server._refuse = None
    requeued = cli(
        "dead-letters",
        "requeue",
        "--spool",
        str(spool),
        "--tenant",
        "acme",
        "--reason",
        "rejected",
        "--json",
    )
    assert json.loads(requeued.stdout) == {"requeued": 3}
    again = cli(
        "flush", "--spool", str(spool), "--write-keys", str(keys_file), "--endpoint", server.url
    )
    assert again.returncode == 0, again.stderr
    assert server.accepted_count == 13
    assert {e["messageId"] for e in server.accepted} >= {
        d["message_id"] for d in listed if d["tenant"] == "acme"
    }

    refused = cli("dead-letters", "purge", "--spool", str(spool))
    assert refused.returncode == 2
    assert "--all" in refused.stderr
    purged = cli("dead-letters", "purge", "--spool", str(spool), "--all")
    assert purged.returncode == 0
    assert "1 dead letters purged" in purged.stdout
    with SpoolFile(spool) as sf:
        assert sf.dead_letters() == []


@pytest.mark.slow  # half a second or more: the second step of .ci/run
def test_a_spool_file_works_in_a_process_forked_while_a_thread_uses_it(tmp_path: Path) -> None:
    spool = tmp_path / "spool.db"
    fill(spool, [record(i) for i in range(3)])
    with SpoolFile(spool) as sf:
        inherited = sf._db
        stop = threading.Event()
        reads = threading.Semaphore(0)

        def busy() -> None:  # in SQLite calls over and over, so likely in one at the fork
            while not stop.is_set():
                assert sf.status().tenants[0].queued == 3
                reads.release()

        reader = threading.Thread(target=busy, daemon=True)
        reader.start()
        assert reads.acquire(timeout=10)
        pid = os.fork()
        if pid == 0:  # the child: its own connection; the inherited one is left alone
            code = 1
            try:
                ok = sf.status().tenants[0].queued == 3 and sf._db is not inherited
                sf.close()
                code = 0 if ok else 1
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        stop.set()
        reader.join(10)
        assert os.waitstatus_to_exitcode(status) == 0
        assert sf._db is inherited
        assert [t.queued for t in sf.status().tenants] == [3]
        assert len(sf.dead_letters()) == 0
    with pytest.raises(SpoolError, match="closed"):
        sf.status()


@pytest.mark.slow
def test_help_documents_exit_codes() -> None:
    for command in (["flush"], ["spool"], ["dead-letters"], ["demo"]):
        shown = cli(*command, "--help")
        assert shown.returncode == 0
        assert "exit status" in shown.stdout


@pytest.mark.slow
def test_demo_verifies_every_event_and_exits_0() -> None:
    done = cli("demo")
    assert done.returncode == 0, done.stderr
    assert "verified: every emitted event was accepted exactly once" in done.stderr
    lines = [line.split() for line in done.stdout.splitlines()[1:]]
    total = lines[-1]
    assert total[0] == "total"
    assert total[1] == total[2]
    assert int(total[1]) > 1000
    tenants = {line[0] for line in lines[:-1]}
    assert tenants == {"acme", "globex", "initech"}
    assert "MISMATCH" not in done.stdout
    # It said "6981 events retried" for 1,923 events: re-sends counted as events.
    retried = re.search(r"([\d,]+) events retried \(([\d,]+) re-sends", done.stderr)
    assert retried is not None, done.stderr
    events, resends = (int(n.replace(",", "")) for n in retried.groups())
    assert 0 < events <= int(total[1])  # never more events retried than there are
    assert events <= resends


# -- what spool status and flush say about failures (issue 15) -----------------------------


def test_spool_status_shows_each_tenants_last_error_recorded_by_another_process(
    tmp_path: Path,
) -> None:
    from _delivery import fake_emitter

    from selligent_segment.testing import MockResponse

    spool = tmp_path / "spool.db"
    em, _, clock = fake_emitter(
        lambda request: MockResponse.error(503, "try again later"), spool=str(spool)
    )
    try:
        em.emit(record(1, "acme"))
        assert clock.run_until(
            lambda: getattr(em.stats().tenants.get("acme"), "last_error", None) is not None,
            waiters=2,
        )
    finally:
        em.close(0)
    text = cli("spool", "status", "--spool", str(spool))
    assert text.returncode == 0, text.stderr
    (line,) = [x for x in text.stdout.splitlines() if "last error" in x]
    assert line.startswith("  last error of 'acme': ")
    assert "HTTP 503" in line
    assert "try again later" in line
    assert line.endswith(" ago")
    data = json.loads(cli("spool", "status", "--spool", str(spool), "--json").stdout)
    (acme,) = data["tenants"]
    assert acme["last_error"]["status"] == 503
    assert "try again later" in acme["last_error"]["text"]
    assert acme["last_error"]["at"] > 0
    assert "key-acme" not in text.stdout


@pytest.mark.slow
def test_flush_json_says_what_it_delivered_and_what_is_left(
    tmp_path: Path, server: LocalSegment, keys_file: Path
) -> None:
    spool = tmp_path / "spool.db"
    fill(spool, [record(i, "acme") for i in range(3)])
    done = cli(
        "flush",
        "--spool",
        str(spool),
        "--write-keys",
        str(keys_file),
        "--endpoint",
        server.url,
        "--json",
    )
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["delivered"] == 3
    assert data["exit_status"] == 0
    assert data["spool"]["queued"] == 0
    assert data["spool"]["path"] == str(spool)
    assert "delivered 3 events" not in done.stderr  # JSON instead of the text summary


_OWNER = """
import sys, time
from selligent_segment import Emitter
em = Emitter("key-acme", endpoint="http://127.0.0.1:9", spool=sys.argv[1])
print("ready", flush=True)
time.sleep(120)
"""


@pytest.mark.slow
def test_a_process_killed_with_sigkill_is_not_counted_live(tmp_path: Path) -> None:
    """After kill -9, spool status must not report the dead process as live: an owner
    file counts only while some process holds its lock."""
    import signal

    spool = tmp_path / "spool.db"
    proc = subprocess.Popen(
        [sys.executable, "-c", _OWNER, str(spool)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n"
        alive = json.loads(cli("spool", "status", "--spool", str(spool), "--json").stdout)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        proc.kill()
    owners = list((tmp_path / "spool.db.journals").glob("*.owner"))
    assert len(owners) == 1  # the dead process's owner file is still there ...
    dead = json.loads(cli("spool", "status", "--spool", str(spool), "--json").stdout)
    assert alive["processes"] == 1
    assert dead["processes"] == 0  # ... and does not count
    text = cli("spool", "status", "--spool", str(spool)).stdout
    assert "0 live processes" in text


def _no_records(payload: Any) -> Any:
    raise AssertionError("no journal record is leased here")


@pytest.mark.parametrize("option", ["--reason", "--tenant"])
def test_an_empty_filter_purges_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str
) -> None:
    # `--reason "$REASON"` with the variable unset: "" matched every dead letter, and
    # purge deleted them all without --all.
    from selligent_segment._mapping import encode
    from selligent_segment.cli import main
    from selligent_segment.spool._sqlite import SqliteSpool

    spool = tmp_path / "spool.db"
    db = SqliteSpool(spool, max_bytes=1 << 24, decoder=_no_records)
    db.put_many([encode(record(i), tenant="acme") for i in range(2)])
    lease = db.lease("acme", 10, 1 << 20)
    assert lease is not None
    db.reject(lease, lease.messages, "too_large: over 32 KB", None)
    db.close()
    for action in ("purge", "requeue"):
        assert main(["dead-letters", action, "--spool", str(spool), option, " "]) == 2
        assert f"{option} is empty" in capsys.readouterr().err
    with SpoolFile(spool) as sf:
        assert len(sf.dead_letters()) == 2


@pytest.mark.parametrize("presses", [1, 2])
def test_an_interrupted_flush_exits_130_with_its_summary(
    tmp_path: Path, keys_file: Path, presses: int
) -> None:
    """Ctrl-C during flush (the endpoint in an outage) exits 130, as send does, not 3 (or
    0): a script can tell "stopped" from "could not deliver". A second Ctrl-C, while
    the first is handled, still gives the summary and no traceback."""
    spool = tmp_path / "spool.db"
    fill(spool, [record(1)])
    with LocalSegment(write_keys=KEYS.values()) as server:
        server.outage(503)
        command = ["flush", "--spool", str(spool), "--write-keys", str(keys_file)]
        proc = subprocess.Popen(
            [sys.executable, "-m", "selligent_segment", *command, "--endpoint", server.url],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={k: v for k, v in os.environ.items() if k != "SEGMENT_WRITE_KEY"},
            preexec_fn=default_sigint,
        )
        try:
            assert server.wait_for_arrivals(1, timeout=30)  # it is retrying now
            err = press_ctrl_c(proc, again_on="interrupted" if presses == 2 else None)
        finally:
            proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert "what is left stays in the spool" in err
    assert "acme" in err  # the summary names the tenant with events left
    with SpoolFile(spool) as sf:
        assert sf.status().queued == 1
