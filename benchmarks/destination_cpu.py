"""CPU per row of Selligent's destination, in this process: the receiver's ``handle`` (parse,
verify, map, journal) and the loader (ingest, lease, ``data/load`` bodies, settle) against
the Selligent stand-in running in a process of its own.

Usage (from the repository root)::

    python -m benchmarks.destination_cpu [--rows 120000] [--batch-size 2000]

CPU time (``time.process_time``: every thread of this process) is what the serve process
spends per row whatever else the machine runs; wall time is reported too. Under
``valgrind --tool=callgrind`` two runs of different ``--rows`` give instructions per row
(their difference divided by the difference of rows), independent of machine load;
``--accept-only`` stops after acceptance and ``--prepare-only`` before it (the events
made and signed), to tell the parts apart::

    valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        python -m benchmarks.destination_cpu --rows 4000    # then --rows 12000
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.destination import (
    BATCH,
    ENV,
    events,
    http_json,
    signed,
    spawn_selligent,
    write_config,
)
from selligent_segment.destination import LoaderSettings, load_config
from selligent_segment.destination._loader import Loader
from selligent_segment.destination._receiver import Receiver


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=120_000, help="rows (events), both tenants")
    parser.add_argument("--batch-size", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument(
        "--accept-only",
        action="store_true",
        help="stop (os._exit) once accepted: with callgrind, the accept part apart",
    )
    parser.add_argument(
        "--prepare-only",
        action="store_true",
        help="stop (os._exit) before accepting: with callgrind, the events' making apart",
    )
    args = parser.parse_args(argv)
    n_batches = max(2, args.rows // BATCH)
    selligent, s_url = spawn_selligent()
    try:
        with tempfile.TemporaryDirectory(prefix="destination-cpu-") as tmp:
            config_path = write_config(Path(tmp) / "destination.toml", s_url)
            config = load_config(config_path, {**os.environ, **ENV})
            batches = []
            for k in range(n_batches):
                tenant = "acme" if k % 2 == 0 else "globex"
                batches.append((tenant, *signed(tenant, events(tenant, (k // 2) * BATCH, BATCH))))
            settings = LoaderSettings(batch_size=args.batch_size, linger=0.05, threads=args.threads)
            loader = Loader(config, Path(tmp) / "spool", settings)
            receiver = Receiver(config, loader)
            total = n_batches * BATCH
            if args.prepare_only:
                selligent.kill()
                os._exit(0)
            cpu0, wall0 = time.process_time(), time.perf_counter()
            for tenant, body, signature in batches:
                status, _ = receiver.handle(config.tenants[tenant], body, signature)
                assert status == 200, status
            cpu1, wall1 = time.process_time(), time.perf_counter()
            if args.accept_only:
                print(f"accept (handle): {(cpu1 - cpu0) / total * 1e6:6.2f} us CPU/row")
                sys.stdout.flush()
                selligent.kill()
                os._exit(0)
            stand_in_cpu0 = _cpu_of(selligent.pid)
            loader.start()
            settled = loader.dispatcher.settled
            while True:
                delivered = sum(loader.counters.delivered.values())
                if delivered >= total:
                    break
                with settled:
                    settled.wait(0.5)
            cpu2, wall2 = time.process_time(), time.perf_counter()
            loader.close(5.0)
            held = int(http_json("GET", s_url + "/_stats")["rows"])
            stand_in_cpu = _cpu_of(selligent.pid) - stand_in_cpu0
    finally:
        selligent.kill()
        selligent.wait()
    accept_cpu, load_cpu = cpu1 - cpu0, cpu2 - cpu1
    print(f"rows {total:,} (stand-in holds {held:,}); batch size {args.batch_size}")
    print(
        f"accept (handle): {accept_cpu / total * 1e6:6.2f} us CPU/row, "
        f"{total / (wall1 - wall0):,.0f} events/s wall"
    )
    print(
        f"load (loader):   {load_cpu / total * 1e6:6.2f} us CPU/row, "
        f"{total / (wall2 - wall1):,.0f} rows/s wall"
    )
    print(f"the stand-in's load: {stand_in_cpu / total * 1e6:6.2f} us CPU/row (its process)")
    return 0


def _cpu_of(pid: int) -> float:
    """CPU seconds (user + system) of process ``pid`` so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


if __name__ == "__main__":
    sys.exit(main())
