"""Process life: SIGTERM turned into a clean exit (flush and report), the opt-out, and an
application's own handler left alone; each in a real child process."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from selligent_segment import Emitter
from selligent_segment.testing import LocalSegment

# The child emits five events that would linger for 30 s, says so, then waits for ever
# (as a web worker does between requests) until it is sent SIGTERM.
_APP = """
import logging, sys, threading
from selligent_segment import BatchPolicy, Emitter
logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
{before}
em = Emitter(
    "key", endpoint={url!r}, batch=BatchPolicy(linger=30.0), exit_timeout=1.0,
    on_failure=lambda f: print("failure", f.reason, len(f.message_ids), flush=True),
    {options}
)
for i in range(5):
    em.emit({{"type": "opened", "email": "a@example.com", "event_id": str(i)}})
print("ready", flush=True)
# Timed waits: a SIGTERM that lands just before an untimed wait blocks would
# leave its handler pending until the wait ends (CPython runs handlers between
# bytecodes), which here is never.
while True:
    threading.Event().wait(0.2)
"""


def _run_until_sigterm(
    server: LocalSegment, *, options: str = "", before: str = ""
) -> subprocess.CompletedProcess[str]:
    script = textwrap.dedent(_APP).format(url=server.url, options=options, before=before)
    child = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == "ready\n"
        child.send_signal(signal.SIGTERM)
        out, err = child.communicate(timeout=30)
    finally:
        child.kill()
    return subprocess.CompletedProcess(child.args, child.returncode, "ready\n" + out, err)


@pytest.mark.fault_injection
def test_sigterm_flushes_what_was_accepted_and_exits_143(server: LocalSegment) -> None:
    done = _run_until_sigterm(server)
    assert done.returncode == 128 + signal.SIGTERM, done.stderr
    assert server.accepted_count == 5
    assert "failure" not in done.stdout


@pytest.mark.slow
@pytest.mark.fault_injection
def test_sigterm_reports_what_it_could_not_deliver(server: LocalSegment) -> None:
    server.outage(503)
    done = _run_until_sigterm(server)
    assert done.returncode == 128 + signal.SIGTERM, done.stderr
    assert "failure unsent_at_close 5" in done.stdout
    assert "5 events unsent at close" in done.stderr
    assert server.accepted_count == 0


def test_handle_sigterm_false_leaves_the_default_action(server: LocalSegment) -> None:
    done = _run_until_sigterm(server, options="handle_sigterm=False,")
    assert done.returncode == -signal.SIGTERM
    assert server.accepted_count == 0


def test_an_applications_own_sigterm_handler_is_left_alone(server: LocalSegment) -> None:
    """The application installed its handler first: ours is not installed, and the
    application's runs (here it exits 7 without closing; nothing is flushed)."""
    before = (
        "import os, signal\n"
        "signal.signal(signal.SIGTERM, lambda s, f: (print('app handler', flush=True),"
        " os._exit(7)))"
    )
    done = _run_until_sigterm(server, before=before)
    assert done.returncode == 7
    assert "app handler" in done.stdout
    assert server.accepted_count == 0


def test_sigterm_with_every_emitter_closed_takes_the_default_action(
    server: LocalSegment,
) -> None:
    before = "import atexit"
    script = textwrap.dedent(_APP).format(url=server.url, options="", before=before)
    script = script.replace('print("ready"', 'em.close(5); print("ready"')
    child = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == "ready\n"
        child.send_signal(signal.SIGTERM)
        child.communicate(timeout=30)
    finally:
        child.kill()
    assert child.returncode == -signal.SIGTERM
    assert server.accepted_count == 5


@pytest.mark.parametrize("value", [1, "yes", None])
def test_handle_sigterm_must_be_a_bool(value: object) -> None:
    from selligent_segment import ConfigurationError, Emitter

    with pytest.raises(ConfigurationError, match="handle_sigterm"):
        Emitter("key", handle_sigterm=value)  # type: ignore[arg-type]


def test_a_close_cut_short_by_sigterm_is_run_again_whole_by_the_exit_hook(
    server: LocalSegment,
) -> None:
    """SIGTERM arriving while the application's own close() flushes raises SystemExit in
    it; the exit hook's close() then does the whole close: the report is not skipped."""
    from _delivery import emitter, record

    from selligent_segment import DeliveryFailure

    failures: list[DeliveryFailure] = []
    server.outage(503)
    em = emitter(server, on_failure=failures.append)
    em.emit(record(1))

    def cut_short(timeout: float | None = None) -> bool:
        raise SystemExit(143)

    em.flush = cut_short  # type: ignore[method-assign]
    with pytest.raises(SystemExit):
        em.close(0.1)
    del em.flush
    assert not em.close(0.1)
    assert em.stats().dropped == {"unsent_at_close": 1}
    assert [f.reason for f in failures] == ["unsent_at_close"]
    assert em.close(0.1) is False  # idempotent: the same result again


def test_a_close_cut_short_while_reporting_is_finished_by_the_next_close(
    server: LocalSegment,
) -> None:
    """SIGTERM lands inside an on_failure callback of close(): the tenants not reported
    yet are reported by the exit hook's close, and it returns False."""
    from _delivery import emitter, record

    reported: list[str] = []

    def on_failure(failure: object) -> None:
        reported.append(failure.tenant)  # type: ignore[attr-defined]
        if len(reported) == 1:
            raise SystemExit(143)

    server.outage(503)
    em = emitter(server, on_failure=on_failure)
    em.emit(record(1, "acme"))
    em.emit(record(2, "globex"))
    with pytest.raises(SystemExit):  # (a callback's Exception is logged; SystemExit is not)
        em.close(0.1)
    assert not em.close(0.1)
    assert sorted(reported) == ["acme", "globex"]
    assert em.stats().dropped == {"unsent_at_close": 2}


def _blocked_signals(native_id: int) -> set[int]:
    """The signals thread ``native_id`` of this process blocks (``SigBlk`` in /proc)."""
    status = Path(f"/proc/self/task/{native_id}/status").read_text()
    mask = int(
        next(line for line in status.splitlines() if line.startswith("SigBlk:")).split()[1], 16
    )
    return {n for n in range(1, 65) if mask & (1 << (n - 1))}


def test_library_threads_leave_sigterm_and_ctrl_c_to_the_main_thread(
    server: LocalSegment,
) -> None:
    """The kernel gives a process's SIGTERM to any thread not blocking it, and Python runs
    the handler only in the main thread: one taken by a sender in a socket call waited for
    the main thread to wake, for ever in an application whose main thread waits on an
    Event (seen as a child that never shut down). Every library thread blocks both."""
    emitter = Emitter("key", endpoint=server.url, handle_sigterm=False)
    try:
        emitter.emit({"type": "opened", "email": "a@example.com", "event_id": "1"})
        assert emitter.flush(10)
        ours = [t for t in threading.enumerate() if t.name.startswith("selligent-segment-")]
        assert {t.name for t in ours} >= {"selligent-segment-encoder", "selligent-segment-sender-0"}
        for thread in ours:
            assert thread.native_id is not None
            blocked = _blocked_signals(thread.native_id)
            assert {signal.SIGTERM, signal.SIGINT} <= blocked, thread.name
        main = threading.main_thread().native_id
        assert main is not None
        assert signal.SIGTERM not in _blocked_signals(main)
    finally:
        emitter.close(5)


# An emitter made in the parent, used in multiprocessing's forked children: each child
# emits events that would wait 30 s for a batch, then returns (its process leaves through
# os._exit, which skips atexit). The last child is forked while another thread of the
# parent is inside close() of a second emitter.
_POOL = """
import multiprocessing, sys, threading
from selligent_segment import BatchPolicy, Emitter
em = Emitter("key", endpoint={url!r}, batch=BatchPolicy(linger=30.0), exit_timeout=5.0)

def work(i):
    em.delivered(email=f"w{{i}}@example.com", event_id=f"mp-{{i}}")

ctx = multiprocessing.get_context("fork")
for i in range(3):
    child = ctx.Process(target=work, args=(i,))
    child.start()
    child.join(30)
    print("child", i, child.exitcode, flush=True)
other = Emitter("key", endpoint="http://127.0.0.1:9", allow_insecure_http=True)
other.emit({{"type": "opened", "email": "a@example.com", "event_id": "x"}})
closing = threading.Thread(target=other.close, args=(3.0,))
with other._close_lock:  # as if close() were under way in another thread at the fork
    closing.start()
    child = ctx.Process(target=work, args=(3,))
    child.start()
child.join(30)
print("child", 3, child.exitcode, flush=True)
closing.join()
"""


def test_multiprocessing_children_deliver_what_they_accepted_before_exit(
    server: LocalSegment,
) -> None:
    script = textwrap.dedent(_POOL).format(url=server.url)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    # Each child delivered its event on its way out; the fourth exited too (it hung on
    # the copy of the close lock held at the fork).
    assert done.stdout.splitlines() == [f"child {i} 0" for i in range(4)]
    assert server.wait_for(4, timeout=10)


def test_an_on_failure_that_closes_the_emitter_at_exit_does_not_hang_the_exit(
    server: LocalSegment,
) -> None:
    """The exit hook's close() reports unsent_at_close holding its lock; an on_failure
    that closed the emitter waited for that lock in the same thread, and the process
    never exited (found by a review). Now the inner close() returns at once."""
    server.outage(503)
    script = textwrap.dedent(
        f"""
        from selligent_segment import Emitter
        def on_failure(failure):
            print("failure", failure.reason.value, em.close(), flush=True)
        em = Emitter("k", endpoint={server.url!r}, on_failure=on_failure, exit_timeout=0.1)
        em.emit({{"type": "opened", "email": "a@example.com", "event_id": "1"}})
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0
    assert done.stdout == "failure unsent_at_close False\n"
