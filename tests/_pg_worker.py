"""A worker process for the PostgreSQL crash tests (tests/test_postgres_crash.py).

``python tests/_pg_worker.py URL ENDPOINT PREFIX START END``: an Emitter on the PostgreSQL
spool ``URL`` delivering to ``ENDPOINT``, emitting records ``START .. END-1`` (see
:func:`record`). After each ``emit`` returns it writes ``A i`` on stdout with one
``write(2)``, so what the parent reads after a SIGKILL is exactly what was accepted. An
``emit`` that raises SpoolError (the database is restarting) is tried again: the event was
not accepted. Then ``E``, and it keeps delivering until its stdin closes.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

KEYS = {"t0": "key-t0", "t1": "key-t1", "t2": "key-t2"}


def record(prefix: str, i: int) -> dict[str, Any]:
    return {
        "type": ("opened", "bounced", "unsubscribed")[i % 3],
        "tenant": f"t{i % 3}",
        "email": f"{prefix}.{i}@example.com",
        "event_id": f"{prefix}-{i}",
        **({"bounce_type": "hard"} if i % 3 == 1 else {}),
    }


def main() -> None:
    url, endpoint, prefix, start, end = sys.argv[1:6]
    from selligent_segment import Emitter, SpoolError

    emitter = Emitter(write_keys=KEYS, endpoint=endpoint, spool=url, handle_sigterm=False)
    for i in range(int(start), int(end)):
        while True:
            try:
                emitter.emit(record(prefix, i))
                break
            except SpoolError:
                time.sleep(0.05)  # the database is away: the caller's own retry
        os.write(1, f"A {i}\n".encode())
    os.write(1, b"E\n")
    sys.stdin.read()
    emitter.close(timeout=5)


if __name__ == "__main__":
    main()
