"""The encoder: one background thread per Emitter that moves accepted records from the
intake into the spool, runs the spool's upkeep, and tells the senders what arrived."""

from __future__ import annotations

import logging
import threading
import time

from selligent_segment._process_life import in_library_thread
from selligent_segment.delivery._dispatcher import Dispatcher
from selligent_segment.intake._memory import ENCODE_CHUNK
from selligent_segment.intake._protocol import Intake, notify_settled

__all__ = ["Encoder"]

log = logging.getLogger("selligent_segment")

#: How long a burst may gather after the first record of a quiet spell (under the batch
#: linger): ``emit`` then skips ``Event.set``, which took about 15% of a call's time when
#: every event woke the encoder on its own.
GATHER = 0.002
#: Seconds between two rounds of spool upkeep (recovering dead processes, sweeping).
MAINTAIN_EVERY = 1.0
#: Seconds the encoder leaves the CPU to a bulk call at a time: when the call handed
#: nothing over meanwhile (a slow source), what waits is moved before it yields again.
BULK_YIELD = 0.05
#: Seconds the encoder yields to bulk calls at most in a row, however fast they go (a
#: fast ``emit_many`` of 100,000 records takes about 0.2 s).
BULK_YIELD_MAX = 1.0


class Encoder:
    """Moves records from ``intake`` into its spool in a thread of its own.

    ``idle`` is True while it waits for work: ``emit`` calls :meth:`wake` only then.
    With a durable intake it starts busy (its first round recovers what dead processes
    left) and, while an ``emit_many`` is under way and fewer than ``max_pending`` records
    wait, it leaves the CPU to that call (the records are journaled already): for
    :data:`BULK_YIELD` seconds at a time, as long as the call hands records over, and
    :data:`BULK_YIELD_MAX` seconds in a row at most; never while records of another call
    (:meth:`other_call`), a flush or a close wait.
    """

    def __init__(
        self, intake: Intake, dispatcher: Dispatcher, *, linger: float, max_pending: int
    ) -> None:
        self.intake = intake
        self.dispatcher = dispatcher
        self.linger = linger
        self.max_pending = max_pending
        self.idle = not intake.durable
        self.stopping = False
        self.bulk_calls = 0  # emit_many calls under way
        # Bumped by each emit() while a bulk call is under way; the encoder yields only
        # while it equals the count it saw before it last found the inbox empty.
        self.others = 0
        self._others_seen = 0
        self.yielding = False  # waiting in _yield_to_bulk
        self._yielding_since: float | None = None  # when this run of yields began
        self._pending_seen = 0  # what waited at the last yield
        self._bulk_lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_maintain = 0.0

    def wake(self) -> None:
        """There is work (or the emitter is stopping)."""
        self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(
            target=in_library_thread(self._loop), name="selligent-segment-encoder", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float) -> bool:
        """Finish the current step and stop (records left stay in the intake); False when
        the thread is still in a step after ``timeout`` seconds (a slow callback, say)."""
        self.stopping = True
        self._wake.set()
        thread = self._thread
        if thread is None or thread.ident is None or thread is threading.current_thread():
            return True  # never started (a start racing close), or the caller itself
        thread.join(timeout)
        return not thread.is_alive()

    def owns(self, thread: threading.Thread) -> bool:
        """True when ``thread`` is this encoder's thread."""
        return thread is self._thread

    def other_call(self) -> None:
        """An ``emit`` accepted a record while a bulk call is under way: move it now (no
        yielding to the bulk call until the inbox was found empty since)."""
        self.others += 1  # a lost update still changes it: any change counts
        if self.idle or self.yielding:  # else it is working: no Event.set per emit
            self._wake.set()

    def enter_bulk(self) -> None:
        with self._bulk_lock:
            self.bulk_calls += 1

    def leave_bulk(self) -> None:
        with self._bulk_lock:
            self.bulk_calls -= 1
        self._wake.set()

    def maintain(self) -> None:
        """Spool upkeep now; tells the senders which tenants got messages from it."""
        self._next_maintain = time.monotonic() + MAINTAIN_EVERY
        tenants = self.intake.maintain()
        if tenants:
            self.dispatcher.notify_put(tenants)

    def _is_stopping(self) -> bool:
        return self.stopping

    def _loop(self) -> None:
        intake = self.intake
        while True:
            if self.stopping:  # close() moves or reports what is left itself
                notify_settled(self.dispatcher.settled)
                return
            if time.monotonic() >= self._next_maintain:
                self.maintain()
            others = self.others  # read first: a record of a bump after it is not moved yet
            if not intake.has_work():
                self._others_seen = others
                self.idle = True
                if not intake.has_work():
                    notify_settled(self.dispatcher.settled)
                    if self.stopping:
                        return
                    self._wake.wait(0.5)
                    self._wake.clear()
                self.idle = False
                self._gather()
                continue
            if self._yield_to_bulk():
                continue
            # Busy before the step takes records out of the inbox: while they are in
            # neither it nor the queue, flush() must not see an idle emitter.
            self.idle = False
            try:
                intake.step(self._is_stopping)
            except Exception:  # a bug must not stop acceptance; the records stay queued
                log.exception("encoder error", extra={"reason": "encoder_error"})
                self._wake.wait(0.5)  # not a hot loop of the same failure
                self._wake.clear()

    def _gather(self) -> None:
        """Woken by the first record after a quiet spell: let a burst gather for up to
        :data:`GATHER` seconds before encoding."""
        if self.intake.pending() < ENCODE_CHUNK and not self.stopping:
            time.sleep(min(GATHER, self.linger))

    def _yield_to_bulk(self) -> bool:
        """True when the encoder waited for a bulk call instead of working."""
        if not self.intake.durable:
            return False
        pending = self.intake.pending()
        if (
            not self.bulk_calls
            or self.stopping
            or self.others != self._others_seen
            or self.dispatcher.flushing
            or pending >= self.max_pending
        ):
            self._yielding_since = None
            return False
        now = time.monotonic()
        since = self._yielding_since
        if since is None:
            self._yielding_since = now
        elif pending == self._pending_seen or now - since >= BULK_YIELD_MAX:
            self._yielding_since = None  # a slow source, or long enough: a step first
            return False
        self._pending_seen = pending
        self.yielding = True
        if self.others == self._others_seen:  # else a bump came in between: no wait
            self._wake.wait(BULK_YIELD)
        self.yielding = False
        self._wake.clear()
        return True
