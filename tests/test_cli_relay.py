"""``selligent-segment relay`` (cli/_relay.py): usage errors, the status line, and a real
relay process delivering another process's rows, stopped by SIGTERM with status 0."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from selligent_segment import Emitter
from selligent_segment.cli import _relay
from selligent_segment.cli._main import main
from selligent_segment.cli._relay import relay_line
from selligent_segment.testing import LocalSegment
from selligent_segment.testing._local_postgres import LocalPostgres

_schemas = itertools.count(1)


def test_the_status_line_says_throughput_backlog_and_paused_tenants() -> None:
    assert relay_line(1200, 60.0, 35, {}) == (
        "selligent-segment relay: 1,200 delivered in 60 s (20/s); backlog 35"
    )
    assert relay_line(0, 10.0, 5, {"acme": "unauthorized"}).endswith(
        "backlog 5; paused: acme (unauthorized)"
    )


def test_a_spool_file_or_a_bad_interval_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["relay", "--spool", str(tmp_path / "s.db"), "--write-key", "k"]) == 2
    assert "--spool: expected a postgresql:// URL" in capsys.readouterr().err
    url = "postgresql://u@127.0.0.1:1/x"
    for interval in ("0", "nan", "inf", "1e10"):  # inf and 1e10 once crashed the wait
        assert main(["relay", "--spool", url, "--write-key", "k", "--interval", interval]) == 2
        assert "--interval: must be above 0 and at most" in capsys.readouterr().err


def test_a_sigterm_while_the_relay_starts_stops_it_with_status_0(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A relay stopped as it starts (a deploy right after a start) stops as documented:
    # status 0, not the 143 of a command cut off; main()'s own SIGTERM handler runs.
    def starting(*args: object) -> Emitter:
        os.kill(os.getpid(), signal.SIGTERM)  # arrives while connecting, say
        raise AssertionError("SIGTERM was not handled")

    monkeypatch.setattr(_relay, "emitter_from_args", starting)
    url = "postgresql://u@127.0.0.1:1/x"
    assert main(["relay", "--spool", url, "--write-key", "k"]) == 0
    assert "relay: stopped before it started" in capsys.readouterr().err


def test_an_unreachable_database_is_a_usage_error_without_the_password(
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = "postgresql://app:s3cret@127.0.0.1:1/x"
    assert main(["relay", "--spool", url, "--write-key", "k"]) == 2
    text = capsys.readouterr().err
    assert "s3cret" not in text
    assert "127.0.0.1:1" in text


@pytest.mark.slow
def test_a_relay_delivers_what_another_process_emitted_and_stops_on_sigterm(
    postgres: LocalPostgres, tmp_path: Path
) -> None:
    url = f"{postgres.url}?spool_schema=relay_{next(_schemas)}"
    keys = tmp_path / "keys.json"
    keys.write_text('{"acme": "key-acme"}')
    with LocalSegment() as server:
        writer = Emitter(write_keys={"acme": "key-acme"}, endpoint="http://127.0.0.1:9/", spool=url)
        writer.emit_many(
            [{"type": "opened", "tenant": "acme", "email": f"r{i}@example.com"} for i in range(40)]
        )
        writer.close(timeout=0.1)
        env = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[1]))
        relay = subprocess.Popen(
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
                server.url,
                "--interval",
                "0.2",
            ],
            stdin=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
        )
        try:
            assert server.wait_for(40, timeout=60)
            assert relay.stderr is not None
            while b"delivered in" not in relay.stderr.readline():
                pass  # a status line arrives every 0.2 s
        finally:
            relay.send_signal(signal.SIGTERM)
            _, err = relay.communicate(timeout=30)
        assert relay.returncode == 0
        assert b"relay: stopped; " in err
        assert b"key-acme" not in err
