"""Multi-tenant setup: each tenant's write key lives in a database table.

The ``Emitter`` takes a *resolver*, a callable ``tenant -> write key or None``, and asks
it when it sends a tenant's batch, so a key changed in the table is used from the next
batch on, by every process, without a restart. :class:`KeyTable` is such a resolver over
a SQLite table (the same shape works over PostgreSQL or MySQL)::

    CREATE TABLE tenant_keys (tenant TEXT PRIMARY KEY, write_key TEXT NOT NULL)

It caches each answer for ``ttl`` seconds (the resolver is asked once per batch, so a
query per batch is avoided) and drops its cache entry when this process changes a key.

Key rotation:

* **Planned**: create the new key in Segment, write it to the table, revoke the old one
  later. Batches sent after the change use the new key; nothing pauses.
* **After a revocation** (the old key was revoked first): Segment answers 401, the
  tenant is *paused*, its events are kept and ``on_pause(tenant, reason)`` is called.
  Write the new key to the table and call ``emitter.resume(tenant)``: its backlog goes at
  once. (Without ``resume`` the emitter asks the resolver again every 30 seconds and
  resumes by itself when the key has changed.)

Run it as a self-contained demonstration (a local Segment stand-in, a temporary
database, two tenants, both kinds of rotation)::

    python examples/multi_tenant_sqlite.py

It prints what happened per tenant (never a key) and exits 0 when every event was
delivered with the right key.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sqlite3
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from selligent_segment import Emitter
from selligent_segment.testing import LocalSegment

log = logging.getLogger("multi_tenant_sqlite")

SCHEMA = "CREATE TABLE IF NOT EXISTS tenant_keys (tenant TEXT PRIMARY KEY, write_key TEXT NOT NULL)"


class KeyTable:
    """A write-key resolver backed by the ``tenant_keys`` table of a SQLite database.

    Thread-safe: the emitter's sender threads call it; each call uses its own short-lived
    connection (SQLite connections are not shared between threads by default).
    """

    def __init__(self, path: str | Path, ttl: float = 30.0) -> None:
        self.path = str(path)
        self.ttl = ttl
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, str | None]] = {}
        with self._connect() as db:
            db.execute(SCHEMA)

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=5.0)
        try:
            with db:  # commits (or rolls back) the transaction
                yield db
        finally:
            db.close()

    def __call__(self, tenant: str) -> str | None:
        """The tenant's current write key, or None when it has none (it is then paused)."""
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(tenant)
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            with self._connect() as db:
                row = db.execute(
                    "SELECT write_key FROM tenant_keys WHERE tenant = ?", (tenant,)
                ).fetchone()
        except sqlite3.Error as exc:
            # A resolver should not raise: keep using the last key known, if any (None
            # pauses the tenant; it is asked again later).
            log.warning("tenant %r: key lookup failed (%s); using the last known key", tenant, exc)
            return cached[1] if cached is not None else None
        key = row[0] if row else None
        with self._lock:
            self._cache[tenant] = (now + self.ttl, key)
        return key

    def set_key(self, tenant: str, key: str) -> None:
        """Store ``tenant``'s key (insert or replace)."""
        with self._connect() as db:
            db.execute(
                "INSERT INTO tenant_keys (tenant, write_key) VALUES (?, ?) "
                "ON CONFLICT (tenant) DO UPDATE SET write_key = excluded.write_key",
                (tenant, key),
            )
        with self._lock:
            self._cache.pop(tenant, None)

    def tenants(self) -> list[str]:
        with self._connect() as db:
            return [row[0] for row in db.execute("SELECT tenant FROM tenant_keys ORDER BY 1")]


def alert_paused(tenant: str, reason: str) -> None:
    """A tenant's key was refused or missing: its events are kept until it has one."""
    log.error("Segment paused tenant %s: %s", tenant, reason)


def make_emitter(table: KeyTable, **overrides: Any) -> Emitter:
    """The one factory: the keys come from ``table``, everything else from the environment
    (``Emitter.from_env``: endpoint, spool...); ``overrides`` win over both."""
    overrides.setdefault("on_pause", alert_paused)
    return Emitter.from_env(write_keys=table, **overrides)


def rotate_key(table: KeyTable, emitter: Emitter, tenant: str, new_key: str) -> None:
    """Store the tenant's new key and send its held-back events now (if it was paused)."""
    table.set_key(tenant, new_key)
    emitter.resume(tenant)


def demo(database: Path) -> int:
    """Both rotations against a local Segment stand-in; 0 when all went as expected."""
    paused = threading.Event()
    with LocalSegment(write_keys=["acme-key-1", "globex-key-1"]) as segment:
        table = KeyTable(database)
        table.set_key("acme", "acme-key-1")
        table.set_key("globex", "globex-key-1")
        emitter = make_emitter(
            table, endpoint=segment.url, on_pause=lambda tenant, reason: paused.set()
        )
        with emitter:
            for i in range(3):
                for tenant in table.tenants():
                    emitter.opened(tenant=tenant, email=f"user{i}@example.com", event_id=f"o{i}")
            assert emitter.flush(timeout=30)
            print("1. sent with the first keys:", _per_tenant(emitter))

            # Planned rotation: the new key exists in Segment before the table changes.
            segment.add_write_key("globex-key-2")
            table.set_key("globex", "globex-key-2")
            emitter.unsubscribed(tenant="globex", email="user0@example.com", event_id="u0")
            assert emitter.flush(timeout=30)
            segment.revoke_write_key("globex-key-1")
            print("2. globex rotated (planned): nothing paused:", _per_tenant(emitter))

            # Revocation first: acme's key stops working before the table knows.
            segment.revoke_write_key("acme-key-1")
            segment.add_write_key("acme-key-2")
            emitter.bounced(tenant="acme", email="user1@example.com", event_id="b1")
            if not paused.wait(timeout=30):
                print("acme was never paused")
                return 1
            print("3. acme paused, its event kept:", _per_tenant(emitter))
            rotate_key(table, emitter, "acme", "acme-key-2")
            delivered_all = emitter.flush(timeout=60)
            print("4. acme rotated and resumed:", _per_tenant(emitter))

        ok = (
            delivered_all
            and len(segment.events("acme-key-1")) == 3
            and len(segment.events("acme-key-2")) == 1
            and len(segment.events("globex-key-1")) == 3
            and len(segment.events("globex-key-2")) == 1
        )
    print("every event delivered with the right key" if ok else "NOT as expected")
    return 0 if ok else 1


def _per_tenant(emitter: Emitter) -> str:
    stats = emitter.stats()
    return ", ".join(
        f"{tenant}: {s.delivered}/{s.accepted} delivered" + (" (paused)" if s.paused else "")
        for tenant, s in stats.tenants.items()
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Key resolver over a SQLite table: a demo.")
    parser.add_argument("--db", type=Path, help="database file (default: a temporary one)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.db is not None:
        return demo(args.db)
    with tempfile.TemporaryDirectory() as folder:
        return demo(Path(folder) / "tenants.db")


if __name__ == "__main__":
    sys.exit(main())
