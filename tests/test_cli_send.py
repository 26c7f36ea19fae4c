"""``selligent-segment send`` delivering to a LocalSegment, run as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from selligent_segment.testing import LocalSegment


@pytest.fixture
def server() -> Iterator[LocalSegment]:
    with LocalSegment(write_keys=["key-acme", "key-globex"]) as segment:
        yield segment


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k != "SEGMENT_WRITE_KEY"}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "selligent_segment", "send", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=full_env,
    )


def write(path: Path, *records: dict[str, object] | str) -> str:
    lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def rec(i: int, tenant: str) -> dict[str, object]:
    return {"type": "opened", "tenant": tenant, "email": f"u{i}@example.com", "event_id": str(i)}


@pytest.fixture
def keys_file(tmp_path: Path) -> str:
    path = tmp_path / "keys.json"
    path.write_text(json.dumps({"acme": "key-acme", "globex": "key-globex"}))
    return str(path)


def test_every_valid_record_is_delivered_to_its_tenant(
    server: LocalSegment, tmp_path: Path, keys_file: str
) -> None:
    data = write(tmp_path / "in.jsonl", rec(1, "acme"), rec(2, "globex"), rec(3, "acme"))
    result = run(data, "--write-keys", keys_file, "--endpoint", server.url)
    assert result.returncode == 0, result.stderr
    assert len(server.events("key-acme")) == 2
    assert len(server.events("key-globex")) == 1
    assert "3 delivered" in result.stderr


def test_write_key_from_the_environment(server: LocalSegment, tmp_path: Path) -> None:
    data = write(tmp_path / "in.jsonl", {"type": "delivered", "email": "a@example.com"})
    result = run(data, "--endpoint", server.url, env={"SEGMENT_WRITE_KEY": "key-acme"})
    assert result.returncode == 0, result.stderr
    assert server.accepted_count == 1


def test_invalid_lines_are_reported_and_the_rest_delivered(
    server: LocalSegment, tmp_path: Path, keys_file: str
) -> None:
    data = write(tmp_path / "in.jsonl", rec(1, "acme"), "{not json", rec(2, "initech"))
    result = run(data, "--write-keys", keys_file, "--endpoint", server.url)
    assert result.returncode == 1
    assert f"{data}:2: line: invalid JSON" in result.stderr
    assert f"{data}:3: no write key configured for tenant 'initech'" in result.stderr
    assert server.accepted_count == 1


def test_a_refused_key_names_the_tenant_never_the_key(tmp_path: Path) -> None:
    with LocalSegment(write_keys=["key-globex"]) as server:
        keys = tmp_path / "keys.json"
        keys.write_text(json.dumps({"acme": "key-acme-revoked", "globex": "key-globex"}))
        data = write(tmp_path / "in.jsonl", rec(1, "acme"), rec(2, "globex"))
        result = run(data, "--write-keys", str(keys), "--endpoint", server.url)
        assert result.returncode == 3
        assert "tenant 'acme'" in result.stderr
        assert "paused" in result.stderr
        assert "key-acme-revoked" not in result.stderr + result.stdout
        assert server.events("key-globex")


def test_usage_errors_exit_2(server: LocalSegment, tmp_path: Path, keys_file: str) -> None:
    data = write(tmp_path / "in.jsonl", rec(1, "acme"))
    no_key = run(data, "--endpoint", server.url)
    assert no_key.returncode == 2
    assert "--write-key" in no_key.stderr
    bad_keys = tmp_path / "bad.json"
    bad_keys.write_text("[1, 2]")
    assert run(data, "--write-keys", str(bad_keys), "--endpoint", server.url).returncode == 2
    insecure = run(data, "--write-keys", keys_file, "--endpoint", "http://example.com")
    assert insecure.returncode == 2
    assert "endpoint" in insecure.stderr
    assert server.request_count == 0
