"""``destination serve`` and ``destination replay`` as real subprocesses: config errors at
start (check's text), kill -9 after a 200 then a restart that loads every row, SIGTERM,
the spool commands on the destination's spool, replay with FILE:LINE and --dry-run."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import urllib3
from _destination import ENV, example_data, identify, sign, toml_text, track

from selligent_segment import SpoolFile
from selligent_segment.cli import main
from selligent_segment.testing import LocalSelligent

ACME = ENV["ACME_SEGMENT_SHARED_SECRET"]


@pytest.fixture
def config_file(local_selligent: LocalSelligent, tmp_path: Path) -> Path:
    path = tmp_path / "destination.toml"
    path.write_text(toml_text(example_data(local_selligent.url)))
    return path


@pytest.fixture
def env() -> dict[str, str]:
    return {**os.environ, **ENV}


class Served:
    """A ``destination serve`` subprocess, its URL once it printed LISTENING."""

    def __init__(self, config: Path, spool: Path, env: dict[str, str], *extra: str) -> None:
        args = ["--config", str(config), "--spool", str(spool), "--port", "0", *extra]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "selligent_segment", "destination", "serve", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()  # blocks until it listens, or exits
        if not line.startswith("LISTENING "):
            self.proc.kill()
            _, stderr = self.proc.communicate(timeout=30)
            raise AssertionError(f"serve did not start: {line!r} {stderr.decode()}")
        self.url = line.split()[1]
        self.http = urllib3.PoolManager(retries=False, timeout=10.0)

    def post(self, tenant: str, events: list[dict[str, object]], secret: str) -> int:
        body = orjson.dumps(events)
        headers = {"Content-Type": "application/json", "X-Signature": sign(secret, body)}
        answer = self.http.request(
            "POST", f"{self.url}/segment/{tenant}", body=body, headers=headers
        )
        return answer.status

    def stop(self, sig: int = signal.SIGTERM) -> tuple[int, str]:
        self.proc.send_signal(sig)
        _, stderr = self.proc.communicate(timeout=60)
        return self.proc.returncode, stderr.decode()


@pytest.fixture
def spool(tmp_path: Path) -> Path:
    return tmp_path / "destination.spool"


def test_serve_and_replay_can_fsync_each_journal_write(tmp_path: Path) -> None:
    """Found by a review: the docs promise a power cut loses nothing "with fsync", but
    neither command could turn it on (the loader's ``fsync`` stayed False)."""
    import argparse

    from selligent_segment.cli._destination_serve import add_loader_options, loader_settings

    parser = argparse.ArgumentParser()
    add_loader_options(parser)
    common = ["--config", "dest.toml", "--spool", str(tmp_path / "dest.spool")]
    assert loader_settings(parser.parse_args([*common, "--fsync"])).fsync is True
    assert loader_settings(parser.parse_args(common)).fsync is False


def test_serve_refuses_to_start_on_an_invalid_config_with_checks_text(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[tenants.acme]\nselligent_url = "ftp://x"\norganization = "o"\n'
        'api_key_env = "ACME_SELLIGENT_API_KEY"\n[tenants.acme.identify]\nlist = "C"\n'
        'key = "nope"\n'
    )
    assert main(["destination", "check", "--config", str(bad)]) == 1
    check_text = capsys.readouterr().err
    assert main(["destination", "serve", "--config", str(bad), "--port", "0"]) == 1
    serve_text = capsys.readouterr().err
    assert serve_text == check_text
    assert "selligent_url" in serve_text
    assert "column nope: a key column must be one of the fields" in serve_text


def test_serve_refuses_a_mapping_its_samples_cannot_map(
    local_selligent: LocalSelligent, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    data = example_data(local_selligent.url)
    data["tenants"]["acme"]["identify"]["fields"] = {"customer_id": "$.traits.loyaltyId"}
    data["tenants"]["acme"]["identify"]["key"] = "customer_id"
    path = tmp_path / "c.toml"
    path.write_text(toml_text(data))
    assert main(["destination", "serve", "--config", str(path), "--port", "0"]) == 1
    err = capsys.readouterr().err
    assert "tenant acme, table identify, column customer_id" in err
    assert "$.traits.loyaltyId" in err


def test_serve_without_the_builtin_samples_takes_a_key_of_ones_own(
    local_selligent: LocalSelligent, tmp_path: Path, spool: Path, env: dict[str, str]
) -> None:
    """A key from a trait of the customer's own fails on the built-in samples, which do
    not have it: serve refused such a valid config, with no way round."""
    data = example_data(local_selligent.url)
    data["tenants"]["acme"]["identify"]["fields"] = {"customer_id": "$.traits.loyaltyId"}
    data["tenants"]["acme"]["identify"]["key"] = "customer_id"
    path = tmp_path / "c.toml"
    path.write_text(toml_text(data))
    served = Served(path, spool, env, "--linger", "0.01", "--no-builtin-samples")
    try:
        event = {**identify(1), "traits": {"loyaltyId": "L-1"}}
        assert served.post("acme", [event], ACME) == 200
        assert local_selligent.wait_for_rows(1, "CONTACTS", timeout=30)
    finally:
        served.stop()
    assert local_selligent.row("CONTACTS", customer_id="L-1") is not None


@pytest.mark.slow
def test_kill_9_after_a_200_then_a_restart_loads_every_row(
    config_file: Path, spool: Path, env: dict[str, str], local_selligent: LocalSelligent
) -> None:
    local_selligent.outage(503)  # nothing can be loaded before the kill
    served = Served(config_file, spool, env, "--linger", "0.01")
    events = [e for n in range(300) for e in (identify(n), track(n))]
    for start in range(0, len(events), 100):
        assert served.post("acme", events[start : start + 100], ACME) == 200
    served.proc.kill()  # SIGKILL right after the last 200
    served.proc.communicate(timeout=30)
    assert local_selligent.rows("CONTACTS") == []
    local_selligent.end_outage()
    again = Served(config_file, spool, env, "--linger", "0.01")
    try:
        assert local_selligent.wait_for_rows(300, "CONTACTS", timeout=60)
        assert local_selligent.wait_for_rows(300, "INTERACTIONS", timeout=60)
    finally:
        status, stderr = again.stop()
    assert status == 0
    assert "0 left in the spool" in stderr
    ids = {r["customer_id"] for r in local_selligent.rows("CONTACTS")}
    assert ids == {f"user-{n}" for n in range(300)}
    assert len(local_selligent.rows("INTERACTIONS")) == 300


@pytest.mark.slow
def test_sigterm_stops_accepting_flushes_and_leaves_the_rest_in_the_spool(
    config_file: Path, spool: Path, env: dict[str, str], local_selligent: LocalSelligent,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    served = Served(config_file, spool, env, "--flush-timeout", "0.5")
    assert served.post("acme", [identify(1)], ACME) == 200
    assert local_selligent.wait_for_rows(1, "CONTACTS", timeout=30)
    local_selligent.outage(503)
    assert served.post("acme", [identify(2), identify(3)], ACME) == 200
    status, stderr = served.stop()
    assert status == 0
    assert "SIGTERM: no new requests" in stderr
    assert "2 left in the spool" in stderr
    for value in ENV.values():
        assert value not in stderr
    assert main(["spool", "status", "--spool", str(spool), "--json"]) == 0
    status_json = orjson.loads(capsys.readouterr().out)
    assert status_json["queued"] == 2
    assert main(["dead-letters", "list", "--spool", str(spool)]) == 0


@pytest.mark.slow
def test_replay_loads_exported_events_and_names_bad_lines(
    config_file: Path, spool: Path, env: dict[str, str], local_selligent: LocalSelligent,
    tmp_path: Path,
) -> None:  # fmt: skip
    events = tmp_path / "events.jsonl"
    no_user = identify(3)
    del no_user["userId"]
    lines = [
        orjson.dumps(identify(1)),
        b"{not json",
        orjson.dumps([track(1), identify(2), identify(2)]),
        orjson.dumps(no_user),
        b"",
    ]
    events.write_bytes(b"\n".join(lines))
    args = ["destination", "replay", "--config", str(config_file), "--spool", str(spool)]
    dry = subprocess.run(
        [sys.executable, "-m", "selligent_segment", *args, "--tenant", "acme", "--dry-run",
         str(events)], env=env, capture_output=True, check=False,
    )  # fmt: skip
    assert dry.returncode == 1
    printed = [orjson.loads(line) for line in dry.stdout.splitlines()]
    assert [p["source"] for p in printed] == [f"{events}:1", f"{events}:3[0]", f"{events}:3[1]"]
    assert printed[0]["row"]["customer_id"] == "user-1"
    assert f"{events}:2: invalid JSON" in dry.stderr.decode()
    assert f"{events}:4: column customer_id <- $.userId" in dry.stderr.decode()
    assert local_selligent.requests == []
    run = subprocess.run(
        [sys.executable, "-m", "selligent_segment", *args, "--tenant", "acme", "--linger", "0",
         str(events)], env=env, capture_output=True, check=False,
    )  # fmt: skip
    stderr = run.stderr.decode()
    assert "3 rows loaded, 0 skipped, 1 duplicates, 2 refused" in stderr
    assert run.returncode == 1
    assert local_selligent.row("CONTACTS", customer_id="user-2") is not None
    assert local_selligent.row("INTERACTIONS", event_id="tr-1") is not None


def test_replay_needs_a_tenant_when_there_are_several(
    config_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    args = ["destination", "replay", "--config", str(config_file), str(tmp_path / "x.jsonl")]
    assert main(args) == 2
    assert "--tenant is needed" in capsys.readouterr().err


@pytest.mark.slow
def test_the_destination_demo_loads_both_customers_rows_through_an_outage(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["destination", "demo"]) == 0
    printed = capsys.readouterr().out
    assert "Selligent is down (503)" in printed
    assert "list CONTACTS (32 rows, upserted on customer_id)" in printed
    assert "list GLOBEX_CONTACTS (30 rows, upserted on customer_id)" in printed
    assert "list GLOBEX_EVENTS (60 rows, upserted on event_id)" in printed
    assert "25 duplicates dropped" in printed
    assert "demo-secret" not in printed


@pytest.fixture
def secrets_set(monkeypatch: pytest.MonkeyPatch) -> None:
    """The config's secrets in this process's environment (for ``main`` in process)."""
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)


def _replay(config_file: Path, spool: Path, *argv: str) -> int:
    """``destination replay`` of acme in this process; its exit status."""
    args = ["destination", "replay", "--config", str(config_file), "--spool", str(spool)]
    return main([*args, "--tenant", "acme", *argv])


@pytest.mark.usefixtures("secrets_set")
def test_an_interrupted_replay_keeps_the_rows_it_had_mapped(
    config_file: Path,
    spool: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    local_selligent: LocalSelligent,
) -> None:
    """Ctrl-C while replay reads: the rows mapped since the last chunk were only in
    memory, never journaled, yet the summary said they were left in the spool."""
    from selligent_segment.cli import _destination_replay

    def five_then_ctrl_c(path: str) -> Iterator[tuple[str, object]]:
        for n in range(5):
            yield f"{path}:{n + 1}", identify(n)
        raise KeyboardInterrupt

    monkeypatch.setattr(_destination_replay, "_events", five_then_ctrl_c)
    assert _replay(config_file, spool, str(tmp_path / "events.jsonl")) == 130
    summary = capsys.readouterr().err
    loaded = sum(
        local_selligent.row("CONTACTS", customer_id=f"user-{n}") is not None for n in range(5)
    )
    assert f"{loaded} rows loaded" in summary
    assert f"{5 - loaded} left in the spool" in summary
    with SpoolFile(spool) as kept:
        assert kept.status().queued == 5 - loaded


@pytest.mark.usefixtures("secrets_set")
def test_replay_reads_events_as_the_receiver_does(
    config_file: Path,
    spool: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    local_selligent: LocalSelligent,
) -> None:
    """A lone surrogate escape (JSON.stringify writes it) refused the whole line, and one
    unreadable element of an array line took the good events around it: the receiver
    takes both."""
    events = tmp_path / "events.jsonl"
    lone = orjson.dumps(identify(1)).replace(b'"traits":{', b'"traits":{"nick":"\\ud83d",', 1)
    array = b"[" + orjson.dumps(identify(2)) + b',{"x":NaN},' + orjson.dumps(identify(3)) + b"]"
    events.write_bytes(lone + b"\n" + array + b"\n")
    status = _replay(config_file, spool, "--linger", "0", str(events))
    err = capsys.readouterr().err
    assert "4 events from 1 file(s): 3 rows loaded" in err
    assert f"{events}:2[1]: invalid JSON" in err
    assert status == 1  # the one refused
    for n in (1, 2, 3):
        assert local_selligent.row("CONTACTS", customer_id=f"user-{n}") is not None


@pytest.mark.usefixtures("secrets_set")
def test_replay_refuses_an_empty_message_id_as_the_receiver_does(
    config_file: Path, spool: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A second event with ``"messageId": ""`` was counted a duplicate of the first, not
    refused as the receiver refuses it (found by a review): empty is missing."""
    events = tmp_path / "events.jsonl"
    first, second = identify(1), identify(2)
    first["messageId"] = second["messageId"] = ""
    events.write_bytes(orjson.dumps(first) + b"\n" + orjson.dumps(second) + b"\n")
    status = _replay(config_file, spool, "--dry-run", str(events))
    err = capsys.readouterr().err
    assert "0 rows would load, 0 skipped, 0 duplicates, 2 refused" in err
    assert err.count("the event has no messageId") == 2
    assert status == 1


def _many_identifies(path: Path, n: int) -> None:
    pad = "x" * 2000  # about 2 KB a row: a few chunks fill a small spool
    lines = []
    for i in range(n):
        event = identify(i)
        event["traits"]["lastName"] = pad  # type: ignore[index]
        lines.append(orjson.dumps(event))
    path.write_bytes(b"\n".join(lines) + b"\n")


@pytest.mark.usefixtures("secrets_set")
def test_replay_into_a_full_spool_waits_for_room_then_loads_everything(
    config_file: Path,
    spool: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    local_selligent: LocalSelligent,
) -> None:
    """A chunk that found the spool at its cap crashed replay with a SpoolFull traceback,
    no summary, the loader not closed (found by a review). It waits for the rows before
    it to load, and goes on."""
    from selligent_segment.cli import _destination_replay

    monkeypatch.setattr(_destination_replay, "_CHUNK", 20)
    events = tmp_path / "events.jsonl"
    _many_identifies(events, 400)
    status = _replay(
        config_file, spool, "--linger", "0", "--max-spool-bytes", "300000", str(events)
    )
    err = capsys.readouterr().err
    assert "400 events from 1 file(s): 400 rows loaded" in err
    assert "0 left in the spool" in err
    assert status == 0
    assert len(local_selligent.rows("CONTACTS")) == 400


@pytest.mark.usefixtures("secrets_set")
def test_replay_into_a_spool_that_stays_full_stops_with_a_summary_and_status_3(
    config_file: Path,
    spool: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    local_selligent: LocalSelligent,
) -> None:
    """Selligent refusing the key (the tenant paused) and the spool at its cap: replay
    crashed with a traceback, exit 1, no summary (found by a review). It stops reading,
    says where and how many rows were not journaled, closes the loader, and exits 3."""
    from selligent_segment.cli import _destination_replay

    monkeypatch.setattr(_destination_replay, "_CHUNK", 20)
    local_selligent.revoke_api_key(ENV["ACME_SELLIGENT_API_KEY"])
    events = tmp_path / "events.jsonl"
    _many_identifies(events, 400)
    status = _replay(
        config_file, spool, "--linger", "0", "--max-spool-bytes", "300000", str(events)
    )
    err = capsys.readouterr().err
    assert status == 3
    assert "Traceback" not in err
    assert f"is full: stopped after {events}:" in err
    summary = err.splitlines()[-1]
    assert "0 rows loaded" in summary
    with SpoolFile(spool) as kept:
        queued = kept.status().queued
    assert 0 < queued < 400
    read, unjournaled = re.search(r"(\d+) events from .* (\d+) not journaled", summary).groups()  # type: ignore[union-attr]
    assert f"{queued} left in the spool" in summary
    assert 0 < int(unjournaled) <= 20  # the chunk in hand
    assert queued + int(unjournaled) == int(read) < 400


@pytest.mark.usefixtures("secrets_set")
def test_healthz_answers_503_from_the_stop_signal_on(
    config_file: Path, spool: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``closing`` was set only once the server had stopped, when nobody could ask any
    more: ``/healthz`` never answered 503 while stopping, as documented (found by a
    review). The signal sets it before the server is told to stop."""
    from _asgi_calls import call_asgi

    from selligent_segment.cli import _destination_serve

    seen: dict[str, object] = {}
    healthz = {"type": "http", "method": "GET", "path": "/healthz", "root_path": ""}
    healthz.update({"headers": [], "query_string": b""})

    class StoppedBySignal:
        def __init__(self, config: Any) -> None:
            self.app = config.app

        def run(self, sockets: list[object]) -> None:
            seen["before"] = call_asgi(self.app, dict(healthz), [])
            signal.raise_signal(signal.SIGTERM)  # the handler runs here, in this thread
            seen["after"] = call_asgi(self.app, dict(healthz), [])

        def stop(self) -> None:
            seen["closing at stop"] = self.app.closing

    monkeypatch.setattr(_destination_serve, "_Server", StoppedBySignal)
    args = ["destination", "serve", "--config", str(config_file), "--spool", str(spool)]
    assert main([*args, "--port", "0", "--flush-timeout", "1"]) == 0
    assert seen["before"] == (200, b"ok")
    assert seen["closing at stop"] is True
    assert seen["after"] == (503, b"closing")
