"""``selligent-segment send``: read callback records from JSON Lines or CSV inputs, refuse
the invalid ones with FILE:LINE (and set them aside with ``--rejects``), print the valid
ones (``--dry-run``) or deliver them, then say what happened and exit with its status."""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Sequence

from selligent_segment._emitter import Emitter
from selligent_segment._errors import (
    EmitterClosed,
    InvalidEvent,
    SpoolError,
    SpoolFull,
    UnknownTenant,
    shown,
)
from selligent_segment._mapping import encode
from selligent_segment._naming import EventNaming
from selligent_segment._record import CallbackRecord
from selligent_segment.cli._base import (
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    PROG,
    Command,
    OutputError,
    UsageError,
    _load_write_keys,
    add_delivery_options,
    add_json_option,
    add_spool_option,
    emitter_from_args,
    err,
    exit_status_of,
    interrupts_held,
    open_spool,
    print_json,
)
from selligent_segment.cli._progress import Progress, human_bytes, is_terminal
from selligent_segment.cli._reader import Format, HeaderError, Input, Line, format_for
from selligent_segment.cli._rejects import Rejects
from selligent_segment.cli._summary import (
    RESUME_HINT,
    SendRun,
    delivery_summary,
    only_paused_left,
    reading_summary,
    rejects_summary,
    send_exit_status,
    send_run,
    undelivered_tenants,
)
from selligent_segment.cli._watch import FailureWatch

__all__ = ["SEND", "SURELY_SMALL", "SendRunner", "Sink"]


_SEND_DESCRIPTION = """\
Read callback records and send each as one Segment track message (or print the messages
with --dry-run). Made for backfills: invalid records are reported and skipped (and, with
--rejects, set aside for fixing), the rest go through.

FILE may be '-' for standard input. Formats, chosen per FILE by its name (or for every
FILE by --format):
  JSON Lines  one record object per line: .jsonl, .ndjson, .json, '-' and any other name
  CSV         .csv: a header row naming record fields (type, tenant, email, ...); every cell
              is text, a blank cell means "absent", the 'properties' cell holds a JSON object
"""

_SEND_EPILOG = """\
rejects:
  --rejects FILE writes every invalid record there exactly as it was read (JSON Lines: the
  raw lines; CSV: the header, then the raw rows), and FILE.reasons gets one line per
  record, FILE:LINE: field: reason (from INPUT:LINE). Fix FILE and send it again.

re-running is safe:
  each record's messageId is derived from its tenant, kind and event_id (or its content),
  so sending the same file again gives the same ids and Segment drops the copies it
  already received (it deduplicates on messageId within about a day). After an
  interruption or exit status 3, run the same command again to resume. The summary
  counts this run's events; what it also delivered of events earlier runs left in the
  spool is a line of its own ("also delivered N events earlier runs left in the spool").

progress and summary:
  a progress bar is drawn on stderr when stderr is a terminal (with --dry-run, only when
  stdout is redirected); while delivery fails, a warning per tenant says why (again every
  30 s while it lasts); a closing summary (records read, valid, invalid; accepted and
  delivered per tenant when sending; each tenant not delivered with its last error) ends
  on stderr. --json prints that summary as one JSON object on stdout instead (not with
  --dry-run). -v shows each retry, --log-level LEVEL picks the level, -q keeps only errors.

exit status:
  0  every record was valid (and, when sending, delivered)
  1  some records were invalid: reported on stderr as FILE:LINE: field: reason
  2  usage error, an input (or its CSV header) could not be read, or the spool file is
     unusable: foreign, newer, corrupt or not writable (one line names it and the reason)
  3  some valid records of this run were not delivered (the tenants are named, never
     their keys); takes precedence over 1. Events earlier runs left in the spool that are
     still not delivered are reported, not counted: `flush` exits 3 for those
  130  interrupted (Ctrl-C): the summary says what was delivered; re-run to resume
  141  the reader of standard output went away (`--dry-run ... | head`): stopped, silently
  143  terminated (SIGTERM): the same as 130, for a deploy or a supervisor
"""


def _configure_send(send: argparse.ArgumentParser) -> None:
    send.add_argument("files", nargs="+", metavar="FILE")
    send.add_argument(
        "--dry-run",
        action="store_true",
        help="print one track message per valid record as a JSON line on stdout; send nothing",
    )
    send.add_argument(
        "--format",
        choices=[f.value for f in Format],
        help="read every FILE in this format (default: by file name; '-' is jsonl)",
    )
    send.add_argument(
        "--rejects",
        metavar="FILE",
        help="write the invalid records there, untouched, and their reasons to FILE.reasons",
    )
    add_json_option(send)
    add_spool_option(send)
    add_delivery_options(send)


def _open_inputs(paths: Sequence[str], fmt: Format | None) -> list[Input]:
    """Open every input up front (CSV headers checked), so nothing is sent when one of
    them cannot be read. Raises OSError or HeaderError."""
    return [Input(path, format_for(path, fmt)).open() for path in paths]


#: A record whose input text is under this many bytes cannot make a message over Segment's
#: 32 KB: a message is at most its fields' text escaped (at most 6 bytes per input byte),
#: the email twice, field names and a constant envelope. Longer records are encoded once
#: in the command, so that an oversized one is refused with its FILE:LINE.
SURELY_SMALL = 3072


class Sink:
    """Where valid records go: printed (dry run) or emitted. A record :meth:`take` refuses
    is counted and reported by the runner, never sent."""

    def take(self, record: CallbackRecord, size: int) -> None:
        """Take ``record`` (read from ``size`` bytes of input). Raises InvalidEvent or
        UnknownTenant for a record that cannot be taken."""
        raise NotImplementedError

    def detail(self) -> str:
        """What the progress line adds for this sink (``  N delivered``), or nothing."""
        return ""


class _Printer(Sink):
    """``--dry-run``: each message on stdout; with ``tenants`` (``--write-keys``' names),
    a record of another tenant is refused as the real run refuses it."""

    def __init__(self, naming: EventNaming, tenants: frozenset[str] | None = None) -> None:
        self._naming = naming
        self._tenants = tenants
        self._out = sys.stdout.buffer

    def take(self, record: CallbackRecord, size: int) -> None:
        if self._tenants is not None and (record.tenant or "default") not in self._tenants:
            raise UnknownTenant(record.tenant or "default")
        body = encode(record, naming=self._naming).body + b"\n"
        try:
            self._out.write(body)
        except BrokenPipeError:  # the reader went away: main() ends the run quietly
            raise
        except OSError as exc:
            raise OutputError(f"stdout: cannot write: {exc.strerror or exc}") from None

    def close(self) -> None:
        try:
            self._out.flush()
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise OutputError(f"stdout: cannot write: {exc.strerror or exc}") from None


class _Deliverer(Sink):
    def __init__(self, emitter: Emitter, naming: EventNaming) -> None:
        self.emitter = emitter
        self._naming = naming
        self.emitted = 0
        self.emitted_by: dict[str, int] = {}  # per tenant
        self.not_accepted: dict[str, int] = {}

    def take(self, record: CallbackRecord, size: int) -> None:
        if size >= SURELY_SMALL:
            encode(record, naming=self._naming)  # raises InvalidEvent when over 32 KB
        try:
            accepted = self.emitter.emit(record)
        except (SpoolFull, EmitterClosed):
            accepted = False
        tenant = record.tenant or "default"
        if accepted:
            self.emitted += 1
            self.emitted_by[tenant] = self.emitted_by.get(tenant, 0) + 1
        else:
            self.not_accepted[tenant] = self.not_accepted.get(tenant, 0) + 1

    def detail(self) -> str:
        return f"  {self.emitter.stats().delivered:,} delivered"


class SendRunner:
    """One run of ``send``: reading, reporting, and the closing summary.

    ``ingest`` runs the same way: a subclass overrides :meth:`open_inputs`,
    :meth:`read_all`, the reading lines of the summary (:meth:`summary_of_reading`) and
    of ``--json`` (:meth:`json_summary`); ``name`` names the command in its messages."""

    name = "send"

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.naming = EventNaming(profile=args.profile)
        self.read = 0
        self.invalid = 0
        self.rejects: Rejects | None = None
        self.inputs: list[Input] = []
        self._tenants: frozenset[str] | None = None  # a dry run's --write-keys
        enabled = False
        if not args.quiet and is_terminal(sys.stderr):
            enabled = not (args.dry_run and is_terminal(sys.stdout))
        self.progress = Progress(sys.stderr, enabled=enabled)

    # -- reading ---------------------------------------------------------------------

    def refuse(self, where: str, error: Exception, line: Line | None = None) -> None:
        """Count and report an input that is not taken: ``WHERE: field: reason``."""
        self.invalid += 1
        self.progress.message(f"{where}: {error}")
        if self.rejects is not None and line is not None:
            self.rejects.add(line, error)

    def offer(
        self, sink: Sink, where: str, record: CallbackRecord, size: int, line: Line | None = None
    ) -> None:
        """Hand ``record`` to ``sink``; refused (with ``where``, and ``line`` for
        ``--rejects``) when it cannot take it."""
        try:
            sink.take(record, size)
        except InvalidEvent as exc:
            self.refuse(where, exc, line)
        except UnknownTenant as exc:
            reason = f"no write key configured for {shown(exc.tenant)}"
            self.refuse(where, InvalidEvent("tenant", reason), line)

    def open_inputs(self) -> None:
        """Open every input up front (raises OSError, HeaderError or UsageError)."""
        args = self.args
        self.inputs = _open_inputs(args.files, Format(args.format) if args.format else None)
        if args.rejects:
            self.rejects = Rejects(args.rejects, self.inputs)

    def read_all(self, sink: Sink) -> None:
        """Every record of every input into ``sink``; invalid ones refused.

        Raises OSError or HeaderError when an input fails while it is read.
        """
        total = _total_size(self.inputs)
        done_before = 0
        for source in self.inputs:
            for line in source:
                self.read += 1
                if line.error is not None:
                    self.refuse(line.where, line.error, line)
                else:
                    assert line.record is not None
                    self.offer(sink, line.where, line.record, len(line.raw), line)
                if self.progress.due():
                    self._show_reading(done_before + source.bytes_read, total, sink)
            done_before += source.bytes_read

    def _show_reading(self, done: int, total: int | None, sink: Sink) -> None:
        size = human_bytes(done) + (f"/{human_bytes(total)}" if total else "")
        detail = f"{size}  {self.read:,} records  {self.invalid:,} invalid{sink.detail()}"
        self.progress.show("reading", done, total, detail)

    # -- the run ---------------------------------------------------------------------

    def run(self) -> int:
        args = self.args
        try:
            emitter = None
            failed: set[str] = set()
            if args.dry_run and args.json:
                raise UsageError("--json is for a delivery summary: not with --dry-run")
            if not args.dry_run:
                emitter = emitter_from_args(args, self.naming, failed)
            elif args.write_keys:  # checked as the real run would check them
                self._tenants = frozenset(_load_write_keys(args.write_keys))
            try:
                self.open_inputs()
            except BaseException:
                if emitter is not None:
                    emitter.close(0)
                raise
        except UsageError as exc:
            err(f"{PROG}: {self.name}: {exc}")
            return EXIT_USAGE
        except HeaderError as exc:
            err(str(exc))
            return EXIT_USAGE
        except OSError as exc:
            err(_cannot_read(exc))
            return EXIT_USAGE
        except KeyboardInterrupt:
            err(f"{PROG}: interrupted before anything was sent")
            return EXIT_INTERRUPTED
        try:
            if emitter is None:
                return self._dry_run()
            return self._deliver(emitter, failed)
        finally:
            self.progress.close()
            if self.rejects is not None:
                self.rejects.close()

    def _read_reporting_failures(self, sink: Sink) -> int | None:
        """Read everything; an exit status when reading stopped early, else None."""
        try:
            self.read_all(sink)
        except HeaderError as exc:
            self.progress.message(str(exc))
            return EXIT_USAGE
        except BrokenPipeError:  # stdout's reader went away: main() ends the run quietly
            raise
        except OutputError as exc:  # --rejects or stdout: not an input
            self.progress.message(f"{PROG}: {self.name}: {exc}")
            return EXIT_USAGE
        except OSError as exc:
            self.progress.message(_cannot_read(exc))
            return EXIT_USAGE
        except KeyboardInterrupt:
            self.progress.message(f"{PROG}: interrupted while reading")
            return EXIT_INTERRUPTED
        except SpoolError as exc:  # the spool file became unusable: stop, say why
            self.progress.message(f"{PROG}: {self.name}: {exc}")
            return EXIT_USAGE
        return None

    def _dry_run(self) -> int:
        printer = _Printer(self.naming, self._tenants)
        stopped = self._read_reporting_failures(printer)
        try:
            printer.close()
        except OutputError as exc:
            if stopped is None:
                self.progress.message(f"{PROG}: {self.name}: {exc}")
                stopped = EXIT_USAGE
        self.progress.close()
        self.summary_of_reading()
        return send_exit_status(stopped, 0, self.invalid)

    def _deliver(self, emitter: Emitter, failed: set[str]) -> int:
        sink = _Deliverer(emitter, self.naming)
        started = self._spool_now()  # this run's events are put in the spool from now on
        held = contextlib.ExitStack()  # Ctrl-C held off from the first one on
        try:
            stopped = self._read_reporting_failures(sink)
            if stopped is None or stopped == EXIT_USAGE:
                try:
                    self._wait(sink)
                except KeyboardInterrupt:
                    held.enter_context(interrupts_held())  # a second one: see below
                    self.progress.message(f"{PROG}: interrupted while delivering")
                    stopped = EXIT_INTERRUPTED
                except SpoolError as exc:
                    self.progress.message(f"{PROG}: {self.name}: {exc}")
                    stopped = EXIT_USAGE
        except BaseException:
            with held, interrupts_held():
                emitter.close(0)
            raise
        # Ctrl-C held off while the emitter closes and, once interrupted (``held``), until
        # the summary is out: a second one (people press one) would cut it short.
        with held:
            with interrupts_held():
                emitter.close(0)
            return self._summarise(emitter, sink, started, stopped, failed)

    def _summarise(
        self,
        emitter: Emitter,
        sink: _Deliverer,
        started: float,
        stopped: int | None,
        failed: set[str],
    ) -> int:
        """Print the summary of a closed emitter's run; its exit status."""
        self.progress.close()
        left, recent = self._left_in_spool(started)
        run = send_run(emitter.stats(), sink.not_accepted, left, recent, sink.emitted_by)
        status = send_exit_status(stopped, run.not_delivered, self.invalid)
        if self.args.json:
            print_json(self.json_summary(run, stopped, status))
        else:
            self.summary_of_reading()
            if not self.args.quiet:
                err(*delivery_summary(run))
        lines = undelivered_tenants(run, failed)
        if lines and not self.args.json:
            err(*lines)
        if stopped == EXIT_INTERRUPTED:
            err(RESUME_HINT)
        return status

    def _spool_now(self) -> float:
        """Now by the clock the spool stamps its events with (what ``since`` compares
        with): the database's for a ``postgresql://`` spool (this host's may run ahead of
        it: the run's events would then count as none), this host's for a spool file;
        this host's too when the database cannot be asked (the summary then cannot read
        the spool either)."""
        from selligent_segment.spool._postgres import is_postgres_url
        from selligent_segment.spool._postgres_view import PostgresView

        if is_postgres_url(self.args.spool):
            with contextlib.suppress(SpoolError, UsageError), open_spool(self.args) as spool:
                if isinstance(spool, PostgresView):
                    return spool.now()
        return time.time()

    def _left_in_spool(
        self, started: float
    ) -> tuple[dict[str, int] | None, dict[str, tuple[int, int, int]] | None]:
        """What each tenant has queued in the spool file now, and what is left of the
        events put there since ``started`` (see ``send_run``); (None, None) for a memory
        spool, or a file that cannot be read: the emitter's counts then stand alone."""
        if self.args.spool == "memory":
            return None, None
        try:
            with open_spool(self.args) as spool:
                status, recent = spool.status(), spool.since(started)
        except (SpoolError, UsageError):
            return None, None
        return {t.tenant: t.queued for t in status.tenants}, recent

    def json_summary(self, run: SendRun, stopped: int | None, status: int) -> dict[str, object]:
        """The ``--json`` summary: the reading counts, then ``run``'s (the shape is
        documented in docs/operations.md: fields may be added, never renamed)."""
        return {
            "read": self.read,
            "valid": self.read - self.invalid,
            "invalid": self.invalid,
            "inputs": len(self.inputs),
            **run.to_dict(),
            "interrupted": stopped == EXIT_INTERRUPTED,
            "exit_status": exit_status_of(self.args, status),
        }

    def _wait(self, sink: _Deliverer) -> None:
        """Wait for delivery, but not for tenants that are paused (refused key): their
        events cannot go until the key changes."""
        emitter = sink.emitter
        watch = FailureWatch()
        deadline = time.monotonic() + self.args.timeout
        while not emitter.flush(0.2) and time.monotonic() < deadline:
            stats = emitter.stats()
            if not self.args.quiet:
                for line in watch.lines(stats, time.monotonic()):
                    self.progress.message(line)
            if self.progress.due():
                detail = f"{stats.delivered:,}/{sink.emitted:,} delivered"
                self.progress.show("sending", stats.delivered, sink.emitted, detail)
            if only_paused_left(stats):
                break

    # -- summary ---------------------------------------------------------------------

    def summary_of_reading(self) -> None:
        """Say on stderr what was read (not with ``-q`` or ``--json``)."""
        if self.args.quiet or getattr(self.args, "json", False):
            return
        err(reading_summary(self.read, self.invalid, len(self.inputs)))
        if self.rejects is not None and self.rejects.count:
            err(rejects_summary(self.rejects.count, self.rejects.path, self.rejects.reasons_path))


def _cannot_read(exc: OSError) -> str:
    return f"{exc.filename}: cannot read: {exc.strerror or exc}"


def _total_size(inputs: Sequence[Input]) -> int | None:
    sizes = [i.size for i in inputs]
    return None if any(s is None for s in sizes) else sum(s or 0 for s in sizes)


def _run_send(args: argparse.Namespace) -> int:
    return SendRunner(args).run()


SEND = Command(
    name="send",
    help="send callback records from JSON Lines or CSV files (or print them with --dry-run)",
    description=_SEND_DESCRIPTION,
    epilog=_SEND_EPILOG,
    configure=_configure_send,
    run=_run_send,
)
