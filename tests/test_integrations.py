"""The framework integrations of ``examples/integrations`` (``docs/integrations.md``), each
run for real: Flask and Django through their test clients, FastAPI through its lifespan and
under uvicorn, a Celery worker over a broker in a directory, gunicorn with two prefork
workers. Events are asserted where they arrive: at a ``LocalSegment`` on loopback.

The frameworks are in the ``test`` extra: a missing one fails these tests, it does not skip
them.
"""

from __future__ import annotations

import contextlib
import http.client
import importlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from selligent_segment import Emitter, EmitterClosed, InvalidEvent, RetryPolicy
from selligent_segment.testing import FaultPlan, LocalSegment

ROOT = Path(__file__).resolve().parent.parent
INTEGRATIONS = ROOT / "examples" / "integrations"
if str(INTEGRATIONS) not in sys.path:
    sys.path.insert(0, str(INTEGRATIONS))

KEYS = {"acme": "key-acme", "globex": "key-globex"}
FAST = RetryPolicy(initial_backoff=0.01, max_backoff=0.05, jitter=False)
# Variables of this process that would change what make_emitter builds in a child.
OURS = ("SEGMENT_WRITE_KEY", "SELLIGENT_SEGMENT_")

BOUNCE = {
    "account": "acme",
    "recipient": "Ada@Example.com",
    "id": "mta-8812:ada",
    "at": "2026-11-30T10:01:00Z",
    "dsn": "5.1.1",
    "diagnostic": "550 5.1.1 user unknown",
}
UNSUBSCRIBE = {
    "account": "globex",
    "recipient": "linus@example.net",
    "id": "unsub-77",
    "at": "2026-11-30T10:02:00Z",
    "list": "weekly",
}


def bounce(n: int) -> dict[str, Any]:
    return {**BOUNCE, "id": f"mta-{n}:ada"}


def fresh(name: str) -> ModuleType:
    """Import an example module anew (it reads the environment when imported)."""
    sys.modules.pop(name, None)
    return importlib.import_module(name)


def assert_both_arrived(segment: LocalSegment) -> None:
    (bounced,) = segment.events("key-acme")
    assert bounced["event"] == "Email Bounced"
    assert bounced["anonymousId"] == "ada@example.com"
    assert bounced["timestamp"].startswith("2026-11-30T10:01:00")
    assert bounced["properties"]["bounce_type"] == "hard"
    assert bounced["properties"]["smtp_status"] == "5.1.1"
    (unsubscribed,) = segment.events("key-globex")
    assert unsubscribed["event"] == "Email Unsubscribed"
    assert unsubscribed["properties"]["list_id"] == "weekly"


@pytest.fixture
def keys_file(tmp_path: Path) -> Path:
    path = tmp_path / "keys.json"
    path.write_text(json.dumps(KEYS))
    return path


@pytest.fixture
def environment(
    monkeypatch: pytest.MonkeyPatch, keys_file: Path, local_segment: LocalSegment
) -> dict[str, str]:
    """What ``make_emitter`` reads, pointed at ``local_segment``, set in this process and
    returned as a whole environment for a child process."""
    for name in list(os.environ):
        if name.startswith(OURS):
            monkeypatch.delenv(name)
    monkeypatch.setenv("SELLIGENT_SEGMENT_WRITE_KEYS", str(keys_file))
    monkeypatch.setenv("SELLIGENT_SEGMENT_ENDPOINT", local_segment.url)
    return {**os.environ, "PYTHONPATH": str(INTEGRATIONS), "PYTHONUNBUFFERED": "1"}


@pytest.fixture
def emitter(local_segment: LocalSegment) -> Iterator[Emitter]:
    """An emitter a test injects into an app, delivering to ``local_segment``."""
    with Emitter(write_keys=KEYS, endpoint=local_segment.url, retry=FAST) as emitter:
        yield emitter


def listening_socket() -> socket.socket:
    """A socket bound to a free loopback port and listening, for a server child to inherit:
    requests sent before the server accepts wait in the backlog (no readiness polling)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def post(port: int, path: str, payload: object) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        body = json.dumps(payload).encode()
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def assert_nothing_secret_logged(text: str) -> None:
    assert "key-acme" not in text
    assert "key-globex" not in text
    assert "example.com" not in text.lower()
    assert "example.net" not in text


# -- Flask -----------------------------------------------------------------------------------


def test_flask_webhook_with_an_injected_emitter_reaches_segment(
    emitter: Emitter, local_segment: LocalSegment
) -> None:
    import flask_app

    app = flask_app.create_app(emitter)
    assert flask_app.emitter_of(app) is emitter
    client = app.test_client()

    accepted = client.post("/hooks/bounce", json=BOUNCE)
    assert (accepted.status_code, accepted.get_json()) == (202, {"accepted": True})
    assert client.post("/hooks/unsubscribe", json=UNSUBSCRIBE).status_code == 202

    invalid = client.post("/hooks/bounce", json={**BOUNCE, "recipient": "nope"})
    assert invalid.status_code == 400
    assert invalid.get_json()["error"]["field"] == "email"
    missing = client.post("/hooks/bounce", json={"account": "acme", "dsn": "5.1.1"})
    assert (missing.status_code, missing.get_json()["error"]["field"]) == (400, "recipient")
    assert client.post("/hooks/bounce", data="not json").status_code == 400
    assert client.post("/hooks/open", json=BOUNCE).status_code == 404
    unknown = client.post("/hooks/bounce", json={**BOUNCE, "account": "initech"})
    assert (unknown.status_code, unknown.headers["Retry-After"]) == (503, "60")

    assert flask_app.close_emitter(app)
    assert_both_arrived(local_segment)
    stopping = client.post("/hooks/bounce", json=bounce(2))  # closed: the platform retries
    assert (stopping.status_code, stopping.headers["Retry-After"]) == (503, "5")


def test_flask_app_builds_its_emitter_from_the_environment(
    environment: dict[str, str], local_segment: LocalSegment
) -> None:
    import flask_app

    app = flask_app.create_app()
    try:
        client = app.test_client()
        assert client.post("/hooks/bounce", json=BOUNCE).status_code == 202
        assert client.post("/hooks/unsubscribe", json=UNSUBSCRIBE).status_code == 202
    finally:
        assert flask_app.close_emitter(app)
    assert_both_arrived(local_segment)


# -- Django ----------------------------------------------------------------------------------


@pytest.mark.slow  # importing and setting up Django: about half a second
def test_django_builds_its_emitter_in_ready_and_the_view_reaches_segment(
    environment: dict[str, str], local_segment: LocalSegment
) -> None:
    # Django is set up once per process: this is the one test that does it.
    import django_app
    from django.test import Client

    application = django_app.create_app()
    emitter = django_app.emitter()
    try:
        assert application is not None
        client = Client()
        accepted = client.post("/hooks/bounce", BOUNCE, content_type="application/json")
        assert (accepted.status_code, accepted.json()) == (202, {"accepted": True})
        unsubscribe = json.dumps(UNSUBSCRIBE)
        assert client.post("/hooks/unsubscribe", unsubscribe, "application/json").status_code == 202
        invalid = client.post("/hooks/bounce", {**BOUNCE, "recipient": "nope"}, "application/json")
        assert (invalid.status_code, invalid.json()["error"]["field"]) == (400, "email")
        assert client.post("/hooks/bounce", "{", "application/json").status_code == 400
        assert client.get("/hooks/bounce").status_code == 405
        with pytest.raises(RuntimeError, match="once per process"):
            django_app.create_app()
    finally:
        assert emitter.close(10)
    assert_both_arrived(local_segment)


# -- FastAPI ---------------------------------------------------------------------------------


@contextlib.contextmanager
def serve_with_lifespan(app: Any) -> Iterator[int]:
    """Serve the ASGI ``app`` under uvicorn in a thread, lifespan on, on a free loopback port;
    at exit uvicorn stops as on SIGTERM (the lifespan's shutdown runs) and is joined."""
    import uvicorn

    sock = listening_socket()
    server = uvicorn.Server(uvicorn.Config(app, lifespan="on", log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(timeout=60)
        sock.close()
    assert not thread.is_alive()


@pytest.mark.slow  # about half a second: uvicorn's start and graceful stop
def test_fastapi_lifespan_owns_the_injected_emitter(
    emitter: Emitter, local_segment: LocalSegment
) -> None:
    import fastapi_app

    with serve_with_lifespan(fastapi_app.create_app(emitter)) as port:
        assert post(port, "/hooks/bounce", BOUNCE) == (202, {"accepted": True})
        assert post(port, "/hooks/unsubscribe", UNSUBSCRIBE) == (202, {"accepted": True})
        status, body = post(port, "/hooks/unsubscribe", {**UNSUBSCRIBE, "recipient": "x"})
        assert (status, body["error"]["field"]) == (400, "email")
        assert post(port, "/hooks/bounce", [BOUNCE])[0] == 400
    # The lifespan's shutdown closed the emitter, after delivering what it had accepted.
    assert_both_arrived(local_segment)
    with pytest.raises(EmitterClosed):
        emitter.bounced(tenant="acme", email="ada@example.com", event_id="late")


def test_fastapi_dependency_override_replaces_the_emitter(
    emitter: Emitter, local_segment: LocalSegment
) -> None:
    import fastapi_app

    with Emitter(write_keys=KEYS, endpoint=local_segment.url) as unused:
        app = fastapi_app.create_app(unused)
        app.dependency_overrides[fastapi_app.get_emitter] = lambda: emitter
        with serve_with_lifespan(app) as port:
            assert post(port, "/hooks/bounce", BOUNCE)[0] == 202
        assert unused.stats().accepted == 0
    assert emitter.flush(10)
    assert emitter.stats().accepted == 1
    assert [e["event"] for e in local_segment.events("key-acme")] == ["Email Bounced"]


def run_server(cmd: list[str], environment: dict[str, str], sock: socket.socket) -> Server:
    """Start a server child that serves on ``sock`` (inherited), from the examples folder."""
    proc = subprocess.Popen(
        cmd,
        cwd=INTEGRATIONS,
        env=environment,
        pass_fds=(sock.fileno(),),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return Server(proc, sock.getsockname()[1])


class Server:
    def __init__(self, proc: subprocess.Popen[str], port: int) -> None:
        self.proc, self.port = proc, port

    def post(self, path: str, payload: object) -> tuple[int, Any]:
        return post(self.port, path, payload)

    def stop(self) -> tuple[int, str]:
        """SIGTERM, then the exit status and everything it printed."""
        self.proc.send_signal(signal.SIGTERM)
        return self.wait()

    def wait(self) -> tuple[int, str]:
        output, _ = self.proc.communicate(timeout=60)
        return self.proc.returncode, output

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate(timeout=60)


@pytest.mark.slow
def test_fastapi_under_uvicorn_builds_from_the_environment_and_flushes_on_sigterm(
    environment: dict[str, str], local_segment: LocalSegment
) -> None:
    sock = listening_socket()
    cmd = [sys.executable, "-m", "uvicorn", "--factory", "fastapi_app:create_app"]
    cmd += ["--fd", str(sock.fileno())]
    server = run_server(cmd, environment, sock)
    try:
        local_segment.outage(503)  # nothing can be delivered before the shutdown
        assert server.post("/hooks/bounce", BOUNCE) == (202, {"accepted": True})
        assert server.post("/hooks/unsubscribe", UNSUBSCRIBE) == (202, {"accepted": True})
        assert local_segment.wait_for_requests(1, timeout=30)  # tried, refused
        assert local_segment.accepted_count == 0
        server.proc.send_signal(signal.SIGTERM)
        local_segment.end_outage()
        status, output = server.wait()
    finally:
        server.kill()
        sock.close()
    # uvicorn ran the lifespan's shutdown: the emitter delivered before the process ended.
    # (After its graceful stop, uvicorn re-raises the SIGTERM it caught: status -15.)
    assert status in (0, -signal.SIGTERM), output
    assert "Application shutdown complete" in output
    assert_both_arrived(local_segment)
    assert_nothing_secret_logged(output)


# -- gunicorn --------------------------------------------------------------------------------


def start_gunicorn(environment: dict[str, str], sock: socket.socket) -> Server:
    env = {**environment, "GUNICORN_BIND": f"fd://{sock.fileno()}", "WEB_CONCURRENCY": "2"}
    cmd = [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py"]
    return run_server(cmd, env, sock)


@pytest.mark.slow
def test_gunicorn_workers_deliver_everything_they_accepted_on_sigterm(
    environment: dict[str, str], local_segment: LocalSegment
) -> None:
    sock = listening_socket()
    server = start_gunicorn(environment, sock)
    try:
        local_segment.outage(503)  # nothing can be delivered before the shutdown
        for n in range(20):
            assert server.post("/hooks/bounce", bounce(n)) == (202, {"accepted": True})
        assert server.post("/hooks/unsubscribe", UNSUBSCRIBE) == (202, {"accepted": True})
        assert local_segment.accepted_count == 0
        server.proc.send_signal(signal.SIGTERM)
        local_segment.end_outage()
        status, output = server.wait()
    finally:
        server.kill()
        sock.close()
    assert status == 0, output
    # Two workers, each with its own emitter: both booted, and every event accepted by either
    # was delivered by its worker_exit, once.
    assert output.count("Booting worker with pid") == 2, output
    ids = [e["messageId"] for e in local_segment.events("key-acme")]
    assert len(ids) == len(set(ids)) == 20
    assert [e["event"] for e in local_segment.events("key-globex")] == ["Email Unsubscribed"]
    assert local_segment.duplicates == 0
    assert_nothing_secret_logged(output)


@pytest.mark.slow
def test_gunicorn_workers_leave_what_they_could_not_deliver_in_the_shared_spool(
    environment: dict[str, str], local_segment: LocalSegment, tmp_path: Path
) -> None:
    spool = tmp_path / "segment.db"
    environment = {**environment, "SELLIGENT_SEGMENT_SPOOL": str(spool)}
    environment["EMITTER_CLOSE_TIMEOUT"] = "0.5"
    sock = listening_socket()
    server = start_gunicorn(environment, sock)
    try:
        local_segment.outage(503)  # for the workers' whole life
        for n in range(10):
            assert server.post("/hooks/bounce", bounce(n)) == (202, {"accepted": True})
        status, output = server.stop()
    finally:
        server.kill()
        sock.close()
    assert status == 0, output
    assert local_segment.accepted_count == 0

    # The next process on the same file (a new worker, or selligent-segment flush) sends them.
    local_segment.end_outage()
    with Emitter.from_env(environment) as emitter:
        assert emitter.flush(30)
    ids = [e["messageId"] for e in local_segment.events("key-acme")]
    assert len(ids) == len(set(ids)) == 10


# -- Celery ----------------------------------------------------------------------------------


@pytest.fixture
def celery_app(
    environment: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[ModuleType]:
    """``celery_app`` imported with its broker in a fresh folder of this test."""
    monkeypatch.setenv("CELERY_QUEUE_DIR", str(tmp_path / "queue"))
    environment["CELERY_QUEUE_DIR"] = str(tmp_path / "queue")
    module = fresh("celery_app")
    yield module
    module.use_emitter(None)


@pytest.mark.slow
def test_celery_worker_processes_build_their_emitter_and_flush_it_at_shutdown(
    celery_app: ModuleType, environment: dict[str, str], local_segment: LocalSegment
) -> None:
    environment["EMITTER_CLOSE_TIMEOUT"] = "3"
    local_segment.outage(503)  # nothing can be delivered before the shutdown
    celery_app.bounce.delay(BOUNCE)  # the web tier enqueues; the worker runs the hook
    celery_app.unsubscribe.delay(UNSUBSCRIBE)
    cmd = [sys.executable, "-m", "celery", "-A", "celery_app", "worker", "--pool", "prefork"]
    cmd += ["--concurrency", "1", "--without-gossip", "--without-mingle", "--without-heartbeat"]
    worker = subprocess.Popen(
        [*cmd, "--loglevel", "INFO"],
        cwd=INTEGRATIONS,
        env=environment,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        # Both tasks ran once both tenants' batches were tried (and refused) by the pool
        # process's emitter.
        seen = 0
        while {r.write_key for r in local_segment.requests} != set(KEYS.values()):
            seen += 1
            assert local_segment.wait_for_requests(seen, timeout=60), "the tasks did not run"
        assert local_segment.accepted_count == 0
        worker.send_signal(signal.SIGTERM)  # warm shutdown
        # Segment is back for acme; globex's key keeps failing through the shutdown.
        local_segment.set_faults(FaultPlan(per_key={"key-globex": [503] * 1000}))
        local_segment.end_outage()
        output, _ = worker.communicate(timeout=60)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.communicate(timeout=60)
    # The pool process ends with os._exit, skipping exit hooks: worker_process_shutdown's
    # close delivered acme's event, and reported globex's as unsent (the memory spool).
    assert worker.returncode == 0, output
    (bounced,) = local_segment.events("key-acme")
    assert bounced["event"] == "Email Bounced"
    assert local_segment.events("key-globex") == []
    assert "tenant 'globex': 1 events unsent at close (memory spool)" in output
    assert_nothing_secret_logged(output)


def test_celery_tasks_run_eagerly_with_an_injected_emitter(
    celery_app: ModuleType, emitter: Emitter, local_segment: LocalSegment
) -> None:
    celery_app.use_emitter(emitter)
    celery_app.app.conf.update(task_always_eager=True, task_eager_propagates=True)
    try:
        celery_app.bounce.delay(BOUNCE)
        celery_app.unsubscribe.delay(UNSUBSCRIBE)
        with pytest.raises(InvalidEvent):  # fails the task, never retried
            celery_app.bounce.delay({**BOUNCE, "recipient": "nope"})
    finally:
        celery_app.app.conf.update(task_always_eager=False, task_eager_propagates=False)
    assert emitter.flush(10)
    assert_both_arrived(local_segment)


def test_the_integrations_page_includes_every_example_file() -> None:
    page = (ROOT / "docs" / "integrations.md").read_text()
    included = set(re.findall(r'--8<-- "examples/integrations/([^"]+)"', page))
    assert included == {path.name for path in INTEGRATIONS.glob("*.py")}
    assert "integrations.md" in (ROOT / "mkdocs.yml").read_text()
