"""What the commands print besides their summaries: the log lines (-v, --log-level, -q,
one format whose prefix never repeats), the failure warnings while delivery waits, and
a quiet end when the reader of stdout goes away."""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
from _snapshots import stats

from selligent_segment.cli._base import DEFAULT_LOG_LEVEL, log_level, setup_logging
from selligent_segment.cli._main import COMMANDS, _parser
from selligent_segment.cli._watch import FailureWatch
from selligent_segment.delivery._stats import LastError, TenantStats

ROOT = Path(__file__).resolve().parent.parent


def parse(*argv: str) -> argparse.Namespace:
    return _parser(COMMANDS).parse_args(list(argv))


# -- the output options ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "level"),
    [
        ((), DEFAULT_LOG_LEVEL),
        (("-v",), logging.INFO),
        (("-vv",), logging.DEBUG),
        (("-q",), logging.ERROR),
        (("--log-level", "DEBUG"), logging.DEBUG),
        (("--log-level", "error"), logging.ERROR),
    ],
)
def test_every_command_takes_the_output_options(argv: tuple[str, ...], level: int) -> None:
    assert log_level(parse("send", "f.jsonl", *argv)) == level
    assert log_level(parse("flush", *argv)) == level
    assert log_level(parse("spool", "status", *argv)) == level


def test_quiet_and_verbose_together_are_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        parse("flush", "-q", "-v")
    assert exit_.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_log_lines_say_the_program_and_the_level_once(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """They read "ERROR selligent_segment: selligent-segment: tenant ..." before."""
    logger = logging.getLogger("selligent_segment")
    saved = logger.handlers[:], logger.level, logger.propagate
    try:
        setup_logging(parse("flush", "-v"))
        setup_logging(parse("flush", "-v"))  # once more: still one handler
        logger.info("tenant %s paused: %s", "'acme'", "write key refused (401)")
        logging.getLogger("selligent_segment.transport").debug("not shown at -v")
    finally:
        logger.handlers[:], logger.level, logger.propagate = saved
    assert capsys.readouterr().err.splitlines() == [
        "selligent-segment: info: tenant 'acme' paused: write key refused (401)"
    ]


def test_on_a_terminal_a_log_line_first_erases_the_progress_bar() -> None:
    from selligent_segment.cli._base import _LineFormatter

    record = logging.LogRecord("selligent_segment", logging.ERROR, "", 0, "boom", (), None)
    assert _LineFormatter(terminal=True).format(record) == "\r\x1b[Kselligent-segment: error: boom"
    assert _LineFormatter().format(record) == "selligent-segment: error: boom"


# -- a closed pipe ---------------------------------------------------------------------------


def test_a_closed_stdout_ends_the_dry_run_silently_with_141(tmp_path: Path) -> None:
    """``send --dry-run FILE | head -1`` printed "None: cannot read: Broken pipe" and
    exited 2. The reader here reads one line and closes the pipe, as head does."""
    data = tmp_path / "in.jsonl"
    with data.open("w") as out:
        for i in range(20_000):  # far more than a pipe buffer holds
            record = {"type": "opened", "email": f"u{i}@example.com", "event_id": str(i)}
            out.write(json.dumps(record) + "\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "selligent_segment", "send", "--dry-run", str(data)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    first = proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 141
    assert json.loads(first)["event"]
    assert err == b""


# -- the warnings while delivery waits --------------------------------------------------------


def failing(text: str, at: float, *, queued: int = 1, paused: str | None = None) -> TenantStats:
    return TenantStats(queued=queued, paused=paused, last_error=LastError(text, at, None))


def test_a_tenants_error_is_said_once_then_again_only_after_the_interval() -> None:
    watch = FailureWatch(every=30.0)
    line = "selligent-segment: warning: tenant 'acme': not delivered yet, retrying: refused"
    assert watch.lines(stats(acme=failing("refused", 1.0)), now=0.0) == [line]
    # every retry records the same error again: not repeated within the interval
    assert watch.lines(stats(acme=failing("refused", 2.0)), now=10.0) == []
    assert watch.lines(stats(acme=failing("refused", 3.0)), now=29.9) == []
    assert watch.lines(stats(acme=failing("refused", 4.0)), now=30.0) == [line]


def test_the_same_status_with_a_new_request_id_each_time_is_not_said_again() -> None:
    """Found by a review: the interval was kept per error text, and a gateway's 502 page
    names a new request id each time: every retry was said again (7 lines a tenant in
    40 s, where the docs promise one every 30 s)."""
    watch = FailureWatch(every=30.0)

    def bad_gateway(ray: int, at: float) -> TenantStats:
        text = f"HTTP 502 Bad Gateway: <html>502 Bad Gateway. Ray ID: {ray:08x}</html>"
        return TenantStats(queued=1, last_error=LastError(text, at, 502))

    assert len(watch.lines(stats(acme=bad_gateway(1, 1.0)), now=0.0)) == 1
    assert watch.lines(stats(acme=bad_gateway(2, 2.0)), now=5.0) == []
    assert watch.lines(stats(acme=bad_gateway(3, 3.0)), now=10.0) == []
    lines = watch.lines(stats(acme=bad_gateway(4, 4.0)), now=30.0)
    assert len(lines) == 1
    assert "Ray ID: 00000004" in lines[0]  # the newest text
    timeouts = [f"deadline exceeded: the request took longer than {s} s" for s in (30, 31)]
    assert len(watch.lines(stats(acme=failing(timeouts[0], 5.0)), now=31.0)) == 1
    assert watch.lines(stats(acme=failing(timeouts[1], 6.0)), now=32.0) == []


def test_a_new_error_text_is_said_at_once_and_each_tenant_on_its_own() -> None:
    watch = FailureWatch(every=30.0)
    assert len(watch.lines(stats(acme=failing("refused", 1.0)), now=0.0)) == 1
    lines = watch.lines(
        stats(acme=failing("HTTP 503", 2.0), globex=failing("refused", 2.0)), now=1.0
    )
    assert [line.split(": ", 3)[2] for line in lines] == ["tenant 'acme'", "tenant 'globex'"]


def test_no_warning_for_a_paused_tenant_nor_an_old_error_with_nothing_queued() -> None:
    watch = FailureWatch(every=30.0)
    paused = failing("write key refused (401)", 1.0, paused="write key refused (401)")
    assert watch.lines(stats(acme=paused), now=0.0) == []  # logged at ERROR already
    assert len(watch.lines(stats(globex=failing("refused", 1.0)), now=0.0)) == 1
    assert watch.lines(stats(globex=failing("refused", 1.0, queued=0)), now=99.0) == []


@pytest.mark.slow
def test_quiet_drops_the_count_dead_letters_list_notes_on_stderr(tmp_path: Path) -> None:
    from selligent_segment import Emitter

    spool = tmp_path / "spool.db"
    Emitter("key-acme", spool=spool).close(0)  # an empty spool file
    base = [sys.executable, "-m", "selligent_segment", "dead-letters", "list"]
    loud = subprocess.run([*base, "--spool", str(spool)], capture_output=True, text=True)
    quiet = subprocess.run([*base, "--spool", str(spool), "-q"], capture_output=True, text=True)
    assert (loud.returncode, loud.stderr) == (0, "0 dead letters\n")
    assert (quiet.returncode, quiet.stderr, quiet.stdout) == (0, "", "")
