"""``selligent-segment destination demo``: two customers' signed Segment batches through
the receiver, the spool and the loader into a local Selligent stand-in, through an outage,
ending with the rows as each customer would see them in its lists.

Nothing leaves the machine: the receiver is served on loopback (uvicorn, the ``server``
extra), Selligent is :class:`~selligent_segment.testing.LocalSelligent`, secrets are made
up and kept in memory, the spool is in a temporary directory. The config is
``examples/destination.toml`` (``--config`` for another), pointed at the stand-in.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

import orjson

from selligent_segment.cli._base import EXIT_INVALID, EXIT_OK, EXIT_USAGE, PROG, Command, err, out

__all__ = ["DEMO"]

_EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "destination.toml"
_BATCH = 25
_EPILOG = """\
Sends signed batches for acme (the seed schemas) and globex (its own columns, three
events allowed) to the receiver on loopback, re-sends one batch (deduplicated), takes
Selligent down (503) for the second half, and prints each customer's lists.

exit status:
  0  every row that should be loaded is, once; every other event is skipped or refused
  1  the lists differ from what was sent
  2  the config file is missing, or uvicorn is not installed
"""


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", metavar="FILE", default=str(_EXAMPLE), help="default: the example"
    )


def _events(tenant: str, n_users: int) -> list[dict[str, Any]]:
    """Each user's identify, then two tracks; a few events each mapping skips or refuses."""
    events: list[dict[str, Any]] = []
    for n in range(n_users):
        user = f"{tenant[:2]}-{n:03d}"
        email = f"{tenant}.user{n}@example.com"
        events.append(
            {
                "type": "identify",
                "messageId": f"{tenant}-id-{n}",
                "userId": user if n % 5 else None,  # every fifth: known by email only
                "timestamp": "2026-11-30T09:00:00.000Z",
                "traits": {
                    "email": email,
                    "firstName": ["Ada", "Ben", "Cleo", "Dev"][n % 4],
                    "lastName": f"Sample{n}",
                    "address": {"city": "Lyon", "postalCode": f"690{n % 10:02d}", "country": "FR"},
                    "birthday": "1990-05-17",
                },
            }
        )
        for k, name in enumerate(("Order Completed", "Subscription Started")):
            events.append(
                {
                    "type": "track",
                    "messageId": f"{tenant}-tr-{n}-{k}",
                    "userId": user,
                    "event": name,
                    "timestamp": f"2026-11-30T09:{10 + k:02d}:00.000Z",
                    "context": {"ip": "203.0.113.9", "traits": {"email": email}},
                    "properties": {"total": 20 + n, "plan_name": "Pro", "channel": "web"},
                }
            )
    events.append(
        {"type": "track", "messageId": f"{tenant}-pv", "userId": "x", "event": "Page Viewed"}
    )
    events.append(
        {
            "type": "track",
            "messageId": f"{tenant}-loop",
            "userId": "x",
            "event": "Email Opened",
            "context": {"integration": {"name": "selligent", "version": "1.0.0"}},
        }
    )
    events.append({"type": "identify", "messageId": f"{tenant}-nokey", "traits": {}})
    return events


def _table(rows: list[dict[str, str]], columns: tuple[str, ...], limit: int = 4) -> list[str]:
    shown = rows[:limit]
    widths = [
        min(24, max(len(c), *(len(r.get(c, "")) for r in shown))) if shown else len(c)
        for c in columns
    ]
    lines = ["    " + "  ".join(c[:w].ljust(w) for c, w in zip(columns, widths, strict=True))]
    for row in shown:
        cells = [row.get(c, "")[:w].ljust(w) for c, w in zip(columns, widths, strict=True)]
        lines.append("    " + "  ".join(cells))
    if len(rows) > limit:
        lines.append(f"    ... and {len(rows) - limit} more")
    return lines


def _run(args: argparse.Namespace) -> int:
    try:
        import uvicorn  # noqa: F401 - needed by serve_asgi
    except ImportError:
        err(f"{PROG}: the destination demo needs uvicorn: pip install 'selligent-segment[server]'")
        return EXIT_USAGE
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib

    import urllib3

    from selligent_segment.delivery._retry import RetryPolicy
    from selligent_segment.destination import (
        DestinationConfigError,
        Loader,
        LoaderSettings,
        Receiver,
        parse_config,
    )
    from selligent_segment.destination._signature import first_element, sign
    from selligent_segment.testing import LocalSelligent, SelligentList
    from selligent_segment.testing._asgi_server import serve_asgi

    try:
        data = tomllib.loads(Path(args.config).read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        err(f"{PROG}: {args.config}: {exc}; pass --config examples/destination.toml")
        return EXIT_USAGE
    # The refused and dead-lettered events are reported in the demo's own lines.
    logging.getLogger("selligent_segment").setLevel(logging.ERROR)
    selligent = LocalSelligent().start()
    environ: dict[str, str] = {}
    try:
        for name, tenant in data.get("tenants", {}).items():
            tenant["selligent_url"] = selligent.url
            environ[tenant["api_key_env"]] = f"{name}-demo-key:{name}-demo-secret"
            if "shared_secret_env" in tenant:
                environ[tenant["shared_secret_env"]] = f"{name}-demo-shared-secret"
        try:
            config = parse_config(data, environ, source=args.config)
        except DestinationConfigError as exc:
            err(str(exc))
            return EXIT_USAGE
        for tenant_config in config.tenants.values():
            for mapping in (tenant_config.identify, tenant_config.track):
                if mapping is not None:
                    selligent.declare_list(
                        mapping.list, SelligentList(mapping.list, mapping.columns).columns
                    )
        with tempfile.TemporaryDirectory(prefix="selligent-destination-demo-") as tmp:
            retry = RetryPolicy(initial_backoff=0.2, max_backoff=0.5, jitter=False)
            settings = LoaderSettings(batch_size=200, linger=0.05, retry=retry)
            loader = Loader(config, Path(tmp) / "destination.spool", settings).start()
            try:
                with serve_asgi(Receiver(config, loader)) as url:
                    status = _send_all(
                        config, environ, url, selligent, loader, urllib3, sign, first_element
                    )
                    if status:
                        return status
            finally:
                loader.close(5.0)
            stats = loader.stats()
        return _report(config, selligent, stats)
    finally:
        selligent.stop()


def _send_all(
    config: Any,
    environ: dict[str, str],
    url: str,
    selligent: Any,
    loader: Any,
    urllib3: Any,
    sign: Any,
    first_element: Any,
) -> int:
    """Send both tenants' batches, half of them through an outage; EXIT_OK when all
    were answered 200 and loaded."""
    http = urllib3.PoolManager(retries=False, timeout=10.0)
    out(f"receiver {url}/segment/TENANT -> spool -> Selligent stand-in {selligent.url}")
    plans = {
        name: _events(name, 40 if name == config_first(config) else 30) for name in config.tenants
    }
    counts = ("accepted", "duplicates", "skipped", "refused")
    totals = {name: dict.fromkeys(counts, 0) for name in config.tenants}
    for half in (0, 1):
        if half == 1:
            selligent.outage(503)
            out("Selligent is down (503): the receiver keeps answering 200, rows wait in the spool")
        for name, events in plans.items():
            tenant = config.tenants[name]
            secret = environ.get(tenant.shared_secret_env or "", "").encode()
            middle = len(events) // 2
            part = events[:middle] if half == 0 else events[middle:]
            batches = [part[i : i + _BATCH] for i in range(0, len(part), _BATCH)]
            if half == 0:
                batches.append(batches[0][5:] + batches[1][:5])  # a re-batched retry
            for index, batch in enumerate(batches):
                body = orjson.dumps(batch)
                # Segment's batching signs the first event only; the classic form the body.
                signed = first_element(body) if index % 2 else body
                headers = {"Content-Type": "application/json", "User-Agent": "Segment.io/1.0"}
                if secret:
                    headers["X-Signature"] = sign(secret, signed)
                answer = http.request("POST", f"{url}/segment/{name}", body=body, headers=headers)
                if answer.status != 200:
                    what = f"the receiver answered {answer.status}: {answer.data!r}"
                    err(f"{PROG}: tenant {name}: {what}")
                    return EXIT_INVALID
                result = orjson.loads(answer.data)
                for key in ("accepted", "duplicates", "skipped"):
                    totals[name][key] += result[key]
                totals[name]["refused"] += len(result["refused"])
                for refused in result["refused"]:
                    out(f"  {name}: event {refused['messageId']} refused: {refused['reason']}")
        if half == 1:
            before = selligent.stats()["requests"]
            selligent.wait_for_requests(before + 2, timeout=10.0)
            queued = sum(loader.queued().values())
            out(
                f"outage: {selligent.stats()['requests'] - before} loads refused with 503, "
                f"{queued} rows waiting in the spool; Selligent is back"
            )
            selligent.end_outage()
    for name, t in totals.items():
        out(
            f"{name}: {t['accepted']} events accepted, {t['duplicates']} duplicates dropped, "
            f"{t['skipped']} skipped (loop prevention, allow-list), {t['refused']} refused"
        )
    if not loader.flush(30.0):
        err(f"{PROG}: rows still waiting after 30 s: {loader.queued()}")
        return EXIT_INVALID
    http.clear()
    return EXIT_OK


def config_first(config: Any) -> str:
    return str(next(iter(config.tenants)))


def _report(config: Any, selligent: Any, stats: Any) -> int:
    ok = True
    for name, tenant in config.tenants.items():
        out("", f"== {name}: as the customer sees its Selligent lists ==")
        for mapping in (tenant.identify, tenant.track):
            if mapping is None:
                continue
            rows = selligent.rows(mapping.list)
            out(f"  list {mapping.list} ({len(rows)} rows, upserted on {', '.join(mapping.key)}):")
            out(*_table(rows, mapping.columns[:6]))
            keys = [tuple(r.get(k) for k in mapping.key) for r in rows]
            ok = ok and len(keys) == len(set(keys)) and len(rows) > 0
    requests = selligent.stats()["requests"]
    out(
        "",
        f"{stats.delivered} rows loaded, {stats.retried} retried after the outage, "
        f"{sum(stats.rejected.values())} dead letters; {requests} data/load requests",
    )
    return EXIT_OK if ok and stats.delivered == stats.accepted else EXIT_INVALID


DEMO = Command(
    name="demo",
    help="two customers' signed Segment batches into a local Selligent, through an outage",
    description="Run the destination end to end on loopback; nothing to configure.",
    epilog=_EPILOG,
    configure=_configure,
    run=_run,
)
