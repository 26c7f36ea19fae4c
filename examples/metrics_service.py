"""A service that emits into a spool file and exposes ``/metrics`` and ``/healthz``.

What a platform's callback service adds for operations: a Prometheus endpoint computed at
scrape time from the Emitter and its spool file, and a health check for a load balancer
or an alert. Standard library HTTP (``http.server``); needs the ``prometheus`` extra::

    pip install 'selligent-segment[prometheus]'
    SEGMENT_WRITE_KEY=... python examples/metrics_service.py --spool /srv/spool.db --port 9464
    # one exporter beside prefork workers that share the file: the backlog only
    python examples/metrics_service.py --spool /srv/spool.db --exporter-only --port 9465

Routes:

``POST /events``
    body: a JSON array of callback records (docs/records.md); ``202 {"accepted": N}``.
``POST /flush``
    waits up to 10 s for what is queued to be delivered; ``200 {"flushed": true|false}``.
``GET /metrics``
    the Prometheus text format (docs/observability.md lists the metrics).
``GET /healthz``
    ``200`` healthy, ``503`` degraded or unhealthy, with ``{"status", "reasons", ...}``.

The first line on stdout is ``LISTENING http://HOST:PORT`` (useful with ``--port 0``).
SIGTERM or SIGINT flushes (up to 5 s) and exits. Nothing logged names an email address
or a write key.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from selligent_segment import Emitter, SelligentSegmentError, load_write_keys
from selligent_segment.observability import (
    HealthThresholds,
    PrometheusCollector,
    Source,
    health,
)


class MetricsServer(ThreadingHTTPServer):
    """Owns the Emitter (None for an exporter), the observation source and the registry."""

    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        emitter: Emitter | None,
        source: Source,
        thresholds: HealthThresholds,
        tenant_labels: int,
    ) -> None:
        super().__init__(address, Handler)
        self.emitter = emitter
        self.source = source
        self.thresholds = thresholds
        self.registry = CollectorRegistry()
        self.registry.register(PrometheusCollector(source, tenant_labels=tenant_labels))


class Handler(BaseHTTPRequestHandler):
    server: MetricsServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # request lines would be noise; nothing here holds a secret anyway

    def answer(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self.answer(200, generate_latest(self.server.registry), CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            status, body = health(self.server.source, self.server.thresholds).http()
            self.answer(status, body)
        else:
            self.answer(404, b'{"error": "not found"}')

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]
        emitter = self.server.emitter
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if emitter is None:
            self.answer(404, b'{"error": "an exporter only serves GET /metrics and /healthz"}')
        elif path == "/events":
            try:
                records = json.loads(body)
                if not isinstance(records, list):
                    raise ValueError("expected a JSON array of records")
                accepted = sum(emitter.emit(record) for record in records)
            except (ValueError, SelligentSegmentError) as exc:
                self.answer(400, json.dumps({"error": str(exc)}).encode())
                return
            self.answer(202, json.dumps({"accepted": accepted}).encode())
        elif path == "/flush":
            self.answer(200, json.dumps({"flushed": emitter.flush(10.0)}).encode())
        else:
            self.answer(404, b'{"error": "not found"}')


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9464, help="0: any free port")
    parser.add_argument("--spool", required=True, help="the spool file")
    parser.add_argument("--write-keys", metavar="FILE.json", help='{"tenant": "key"}')
    parser.add_argument("--endpoint", help="a custom endpoint (default: Segment's)")
    parser.add_argument(
        "--exporter-only",
        action="store_true",
        help="emit nothing: report the spool file's backlog beside the processes that do",
    )
    parser.add_argument("--tenant-labels", type=int, default=0, help="(default: 0, off)")
    parser.add_argument(
        "--max-oldest-age", type=float, default=900.0, help="seconds (default: 900)"
    )
    args = parser.parse_args(argv)

    emitter: Emitter | None = None
    try:
        if not args.exporter_only:
            keys = load_write_keys(args.write_keys) if args.write_keys else None
            key = None if keys else os.environ.get("SEGMENT_WRITE_KEY")
            emitter = Emitter(key, write_keys=keys, endpoint=args.endpoint, spool=args.spool)
            source = Source(emitter)
        else:
            source = Source(spool=args.spool)
        thresholds = HealthThresholds(max_oldest_age=args.max_oldest_age)
        server = MetricsServer(
            (args.host, args.port), emitter, source, thresholds, args.tenant_labels
        )
    except (OSError, SelligentSegmentError) as exc:
        print(f"metrics_service: {exc}", file=sys.stderr)
        return 2

    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    print(f"LISTENING http://{host}:{port}", flush=True)
    stop.wait()
    server.shutdown()
    if emitter is not None:
        emitter.close(5.0)
    source.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
