"""A worker process for the durable-spool crash tests (tests/test_durable.py).

Run as ``python tests/_crash_worker.py CONFIG_JSON``. It opens an Emitter on a spool file,
emits records with unique ``event_id`` values and reports on stdout, one line per fact,
written with a single ``write(2)`` each so that what the parent reads after a SIGKILL is
exactly what the worker had reported before it:

* ``READY``: the Emitter is constructed (it has recovered what dead processes left).
* ``T s e``: about to emit records ``s .. e-1`` (one ``emit`` each, or one ``emit_many``).
* ``A s e``: those calls returned and accepted every one of them: the *accepted* set.
* ``F`` / ``FD ok``: a ``flush`` starts / returned ``ok``.
* ``RSS kb hwm_kb``: ``VmRSS`` and ``VmHWM`` from ``/proc/self/status``.
* ``E``: every record was emitted; with ``wait`` the worker then reads commands from
  stdin (``flush``, ``close``), else it flushes and closes.
* ``DONE ok``: ``close`` returned ``ok``.

Records and their tenants come from :func:`record` and :func:`tenant_of`, which the tests
import to compute the expected ``messageId`` of every record a worker could have emitted.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

KINDS = ("opened", "delivered", "unsubscribed", "bounced")


def tenant_of(cfg: dict[str, Any], i: int) -> str:
    """The tenant of record ``i``: ``big`` for the first ``big`` records if configured,
    then round-robin over ``tenants`` tenants named ``t0``, ``t1``..."""
    big = int(cfg.get("big", 0))
    if i < big:
        return "big"
    return f"t{(i - big) % int(cfg.get('tenants', 1))}"


def tenants(cfg: dict[str, Any]) -> list[str]:
    names = [f"t{k}" for k in range(int(cfg.get("tenants", 1)))]
    return (["big"] if cfg.get("big") else []) + names


def write_keys(cfg: dict[str, Any]) -> dict[str, str]:
    return {t: f"key-{t}" for t in tenants(cfg)}


def record(cfg: dict[str, Any], i: int) -> dict[str, Any]:
    prefix = cfg["prefix"]
    rec: dict[str, Any] = {
        "type": KINDS[i % len(KINDS)],
        "tenant": tenant_of(cfg, i),
        "email": f"{prefix}.{i}@example.com",
        "event_id": f"{prefix}-{i}",
        "email_id": f"m-{i % 7}",
        "properties": {"pad": "x" * (i % 97)},
    }
    if rec["type"] == "bounced":
        rec["bounce_type"] = "hard"
    return rec


def _rss() -> tuple[int, int]:
    with open("/proc/self/status") as f:
        fields = dict(line.split(":", 1) for line in f)
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


def _say(line: str) -> None:
    os.write(1, (line + "\n").encode())


def main(cfg: dict[str, Any]) -> int:
    from selligent_segment import BatchPolicy, Emitter, RetryPolicy

    retry = RetryPolicy(
        initial_backoff=cfg.get("backoff", 0.02),
        max_backoff=cfg.get("max_backoff", 0.2),
        max_attempts=1_000_000,
        max_rate_limit_duration=43_200.0,
    )
    options: dict[str, Any] = {}
    if "max_pending" in cfg:
        options["max_pending"] = cfg["max_pending"]
    if "on_full" in cfg:
        options["on_full"] = cfg["on_full"]
        options["block_timeout"] = 60.0
    em = Emitter(
        write_keys=write_keys(cfg),
        endpoint=cfg["endpoint"],
        spool=cfg["spool"],
        retry=retry,
        batch=BatchPolicy(linger=cfg.get("linger", 0.0)),
        max_requests_per_second=0,
        **options,
    )
    _say("READY")
    count = int(cfg["count"])
    chunk = int(cfg.get("chunk", 1))
    flush_every = int(cfg.get("flush_every", 0))
    rss_every = int(cfg.get("rss_every", 0))
    next_flush = flush_every
    next_rss = 0
    i = 0
    while i < count:
        if rss_every and i >= next_rss:
            _say("RSS {} {}".format(*_rss()))
            next_rss += rss_every
        end = min(count, i + chunk)
        _say(f"T {i} {end}")
        if cfg.get("mode", "emit") == "many":
            result = em.emit_many(record(cfg, j) for j in range(i, end))
            if result.accepted != end - i:
                _say(f"REFUSED {result.refused!r}")
                return 3
        else:
            for j in range(i, end):
                if not em.emit(record(cfg, j)):
                    return 3
        _say(f"A {i} {end}")
        i = end
        if flush_every and i >= next_flush:
            next_flush += flush_every
            _say("F")
            _say(f"FD {em.flush(30)}")
    if rss_every:
        _say("RSS {} {}".format(*_rss()))
    _say("E")
    if cfg.get("wait"):
        for line in sys.stdin:
            command = line.strip()
            if command == "flush":
                _say(f"FD {em.flush(float(cfg.get('flush_timeout', 60)))}")
            elif command == "rss":
                _say("RSS {} {}".format(*_rss()))
            elif command == "close":
                break
    else:
        _say("F")
        _say(f"FD {em.flush(float(cfg.get('flush_timeout', 60)))}")
    _say(f"DONE {em.close(5)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(json.loads(sys.argv[1])))
