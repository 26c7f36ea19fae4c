"""Benchmark the report parsers: DSN messages parsed per second, alone and into an Emitter.

Usage (from the repository root)::

    python -m benchmarks.inputs_reports [--messages N] [--repeat R] [--json FILE]

Scenarios, each over the same N messages (default 2,000: the corpus's RFC 3464 bounces
of ``tests/corpus/reports``, Postfix, Exim, Sendmail, Office 365 and Gmail, cycled, each made
unique by its Message-ID), read from memory (no disk), with a Join that has a VERP pattern
and a table resolver (as ``ingest --join`` builds it):

1. ``parse``: ``parse_dsn`` of every message; messages and records per second.
2. ``parse_emit``: the same, every record handed to ``Emitter.emit`` (memory spool, a
   ``MockTransport`` answering 200), until ``flush`` returns: messages per second end to end.
3. ``heuristic``: ``parse_dsn`` of qmail bounces (flufl.bounce, the ``bounces`` extra).

The median of R repetitions (default 3) is printed as a markdown table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from selligent_segment import Emitter
from selligent_segment.inputs.reports import Join, parse_dsn, table_resolver
from selligent_segment.testing import MockResponse, MockTransport

CORPUS = Path(__file__).resolve().parent.parent / "tests" / "corpus" / "reports"
RFC = [
    "postfix-user-unknown",
    "exim-mailbox-full",
    "sendmail-host-unknown",
    "office365-recipient-not-found",
    "gmail-account-disabled",
]
OLD = ["qmail-no-mailbox"]


def messages(names: list[str], count: int) -> list[bytes]:
    """``count`` distinct messages: the corpus's, cycled, each with its own Message-ID."""
    raw = [(CORPUS / f"{name}.eml").read_bytes() for name in names]
    out = []
    for i in range(count):
        data = raw[i % len(raw)]
        out.append(b"Message-ID: <bench-%d@bench.example>\n" % i + data)
    return out


def join() -> Join:
    table = json.loads((CORPUS / "join.json").read_text())
    return Join(resolver=table_resolver(table), verp=r"bounces\+(?P<token>[^@]+)@")


def parse_only(data: list[bytes]) -> tuple[float, int]:
    how = join()
    start = time.perf_counter()
    records = sum(len(parse_dsn(d, f"m{i}", how).records) for i, d in enumerate(data))
    return time.perf_counter() - start, records


def parse_emit(data: list[bytes]) -> tuple[float, int]:
    how = join()
    emitter = Emitter(
        write_keys={"acme": "k1", "globex": "k2"},
        transport=MockTransport(lambda request: MockResponse.ok()),
        spool="memory",
    )
    try:
        start = time.perf_counter()
        records = 0
        for i, d in enumerate(data):
            for record in parse_dsn(d, f"m{i}", how).records:
                emitter.emit(record)
                records += 1
        if not emitter.flush(60):
            raise RuntimeError("not delivered within 60 s")
        return time.perf_counter() - start, records
    finally:
        emitter.close(10)


def measure(
    run: Callable[[list[bytes]], tuple[float, int]], data: list[bytes], repeat: int
) -> dict[str, float]:
    results = [run(data) for _ in range(repeat)]
    seconds = statistics.median(r[0] for r in results)
    return {
        "messages_per_s": len(data) / seconds,
        "records_per_s": results[0][1] / seconds,
        "us_per_message": seconds / len(data) * 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()
    rfc = messages(RFC, args.messages)
    old = messages(OLD, max(args.messages // 4, 1))
    results = {
        "parse": measure(parse_only, rfc, args.repeat),
        "parse_emit": measure(parse_emit, rfc, args.repeat),
        "heuristic": measure(parse_only, old, args.repeat),
    }
    print("| scenario | messages/s | records/s | us/message |")
    print("|---|---:|---:|---:|")
    for name, r in results.items():
        print(
            f"| {name} | {r['messages_per_s']:,.0f} | {r['records_per_s']:,.0f} "
            f"| {r['us_per_message']:,.0f} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
