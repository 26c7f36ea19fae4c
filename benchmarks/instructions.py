"""Instructions per event on each path of the library, counted by callgrind.

The wall clock of the shared benchmark host moves 2x within minutes; instruction counts
do not. Each path runs twice under ``valgrind --tool=callgrind`` in a fresh interpreter,
building ``n`` events and then handing them to the path or not (same imports, same
set-up, the same inputs built); the difference divided by ``n`` is the cost per event::

    python -m benchmarks.instructions                    # every path, n=2,000
    python -m benchmarks.instructions --only normalize,emit_dict --n 5000

Paths (``--only``):

- ``normalize``: validating a record's dict form (``_record.normalize``);
- ``encode``: mapping and serialising normalised fields (``encode_fields``);
- ``emit_dict`` / ``emit_record`` / ``typed``: the whole in-memory path of one event, all
  threads counted: ``emit`` of a dict, of a prebuilt ``CallbackRecord``, and the typed
  ``delivered(...)``; then the encoder, a sender, the request body and a transport that
  answers 200 at once (no socket), until ``flush`` returns;
- ``durable_emit``: ``emit`` of a dict with a spool file, the journal write included, then
  the ingest into SQLite, the lease, the decode, the send and the ack, until ``flush``;
- ``decode``: a journal record into its message (``JournalIntake.decode``, on lease);
- ``post``: one ``HttpTransport.post`` of a 20-message batch to a ``LocalSegment`` on
  127.0.0.1 (another process, not counted), the answer read: per request, not per event;
- ``tenants``: the 1,000-tenant scenario's shape, ``n`` events over ``n / 20`` tenants
  (each its own write key, so a request of 20 events each), ``emit`` of a dict through
  the real ``HttpTransport`` to that ``LocalSegment``, until ``flush`` returns: per event,
  HTTP included.

The threads' polling (the encoder's and senders' timed waits) adds a little to every
count, the same with and without events; it cancels out in the difference only roughly,
so paths through the emitter are given to about 1 %.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from benchmarks.run import record

PATHS = (
    "normalize",
    "encode",
    "emit_dict",
    "emit_record",
    "typed",
    "durable_emit",
    "decode",
    "post",
    "tenants",
)
#: The paths that post to a LocalSegment started for them.
SERVED = ("post", "tenants")
#: The environment variable that gives the ``post`` path's child the server's URL.
SERVER_VARIABLE = "SELLIGENT_SEGMENT_BENCH_SERVER"
POST_BATCH = 20


class NullTransport:
    """Answers 200 to every batch at once, after building its body as HttpTransport does."""

    def __init__(self) -> None:
        from datetime import datetime, timezone

        from selligent_segment.delivery._transport import Response, build_body

        self._now = datetime.now
        self._utc = timezone.utc
        self._build = build_body
        self._ok = Response(200)

    def post(self, endpoint: str, write_key: str, bodies: Sequence[bytes], **_: Any) -> Any:
        self._build(bodies, write_key, self._now(self._utc))
        return self._ok

    def close(self) -> None:
        pass


def _emitter(**options: Any) -> Any:
    from selligent_segment import Emitter

    return Emitter(
        "k",
        transport=NullTransport(),
        endpoint="http://127.0.0.1:9",
        allow_insecure_http=True,
        handle_sigterm=False,
        max_pending=10**7,
        max_spool_bytes=2**31,
        **options,
    )


def run_path(path: str, n: int, process: bool) -> None:
    """Build ``n`` events, then run ``path`` for them when ``process`` (else set-up only)."""
    from selligent_segment import CallbackRecord
    from selligent_segment._mapping import encode_fields
    from selligent_segment._naming import EventNaming
    from selligent_segment._record import normalize

    records = [record(i) for i in range(n)]
    warm = [record(10**9 + i) for i in range(200)]
    if path == "normalize":
        for r in warm:
            normalize(r)
        for r in records if process else ():
            normalize(r)
        return
    if path == "encode":
        naming = EventNaming()
        fields = [normalize(r) for r in records]
        for f in (normalize(r) for r in warm):
            encode_fields(f, "default", naming, 1.7e9)
        for f in fields if process else ():
            encode_fields(f, "default", naming, 1.7e9)
        return
    if path == "post":
        _post(n, process)
        return
    if path == "tenants":
        _tenants(records, warm, process)
        return
    if path == "decode":
        import orjson

        from selligent_segment.intake._journal import JournalIntake

        payloads = [orjson.dumps(("default", 1.7e9, normalize(r))) for r in records]
        warm_p = [orjson.dumps(("default", 1.7e9, normalize(r))) for r in warm]
        decode = JournalIntake.decode.__get__(_FakeJournal())
        for p in warm_p:
            decode(p)
        for p in payloads if process else ():
            decode(p)
        return
    with tempfile.TemporaryDirectory() as tmp:
        options = {"spool": os.path.join(tmp, "spool.db")} if path == "durable_emit" else {}
        emitter = _emitter(**options)
        call: Callable[[Any], Any] = emitter.emit
        items: list[Any] = records
        warm_items: list[Any] = warm
        if path == "emit_record":
            items = [CallbackRecord.from_dict(r) for r in records]
            warm_items = [CallbackRecord.from_dict(r) for r in warm]
        elif path == "typed":
            items = [{k: v for k, v in r.items() if k != "type"} for r in records]
            warm_items = [{k: v for k, v in r.items() if k != "type"} for r in warm]

            def call(kw: dict[str, Any]) -> Any:
                return emitter.delivered(**kw)

        for item in warm_items:
            call(item)
        assert emitter.flush(60)
        for item in items if process else ():
            call(item)
        assert emitter.flush(600)
        assert emitter.stats().delivered == (n if process else 0) + len(warm_items)
        emitter.close()


def _post(n: int, process: bool) -> None:
    """``n`` posts of ``POST_BATCH`` messages each (when ``process``), after 50 to warm."""
    from selligent_segment.delivery._transport import HttpTransport

    url = os.environ[SERVER_VARIABLE]
    transport = HttpTransport(proxy=False)
    messages = [
        [
            b'{"type":"track","event":"Email Opened","userId":"u%d","messageId":"m%d-%d"}'
            % (i, i, k)
            for k in range(POST_BATCH)
        ]
        for i in range(n + 50)
    ]
    for i in range(50):
        assert transport.post(url, f"wk-{i}", messages[n + i]).status == 200
    for i in range(n) if process else ():
        assert transport.post(url, f"wk-{i % 1000}", messages[i]).status == 200
    transport.close()


def _tenants(records: list[dict[str, Any]], warm: list[dict[str, Any]], process: bool) -> None:
    """``records`` over ``len(records) / POST_BATCH`` tenants, interleaved as the
    1,000-tenant benchmark sends them, through the real transport (after ``warm``)."""
    from selligent_segment import Emitter

    count = max(1, len(records) // POST_BATCH)
    keys = {f"t{j}": f"wk-{j}" for j in range(count)}
    emitter = Emitter(
        write_keys=keys,
        endpoint=os.environ[SERVER_VARIABLE],
        allow_insecure_http=True,
        handle_sigterm=False,
    )
    for i, r in enumerate(warm):
        emitter.emit(r | {"tenant": f"t{i % count}"})
    assert emitter.flush(60)
    plan = [(i * count + j, j) for i in range(POST_BATCH) for j in range(count)]
    items = [records[index] | {"tenant": f"t{j}"} for index, j in plan]  # built either way
    for item in items if process else ():
        emitter.emit(item)
    assert emitter.flush(600)
    expected = (len(items) if process else 0) + len(warm)
    assert emitter.stats().delivered == expected, emitter.stats()
    emitter.close()


@contextlib.contextmanager
def _server() -> Iterator[str]:
    """A ``LocalSegment`` in another process (not counted), for the ``post`` path."""
    cmd = [sys.executable, "-m", "selligent_segment.testing", "--port", "0"]
    with subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE) as server:
        assert server.stdout is not None
        assert server.stdin is not None
        line = server.stdout.readline().decode()
        if not line.startswith("LISTENING "):
            raise RuntimeError(f"the server did not start: {line!r}")
        try:
            yield line.split(None, 1)[1].strip().rstrip("/")
        finally:
            server.stdin.close()  # the server stops when its input closes
            server.wait(10)


class _FakeJournal:
    def __init__(self) -> None:
        from selligent_segment._naming import EventNaming

        self.naming = EventNaming()


def count(path: str, n: int, process: bool, server: str | None = None) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "callgrind.out")
        cmd = [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out}",
            sys.executable,
            "-m",
            "benchmarks.instructions",
            "--child",
            path,
            "--n",
            str(n),
            *(["--process"] if process else []),
        ]
        env = dict(os.environ, PYTHONHASHSEED="0")
        if server is not None:
            env[SERVER_VARIABLE] = server
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{path} n={n} failed:\n{done.stderr[-3000:]}")
        found = re.search(r"Collected : (\d+)", done.stderr)
        if found is None:
            raise RuntimeError(done.stderr[-2000:])
        return int(found.group(1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.instructions")
    parser.add_argument("--only", default=",".join(PATHS))
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--process", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        run_path(args.child, args.n, args.process)
        return 0
    for path in args.only.split(","):
        with contextlib.ExitStack() as stack:
            server = stack.enter_context(_server()) if path in SERVED else None
            base = count(path, args.n, False, server)
            total = count(path, args.n, True, server)
        unit = "request" if path == "post" else "event"
        print(f"{path:14s} {(total - base) / args.n:10,.0f} instructions/{unit}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
