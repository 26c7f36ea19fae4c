"""Process life: what every live Emitter needs at interpreter exit, at ``fork`` and on
``SIGTERM``, in one registry.

- **Exit**: an ``atexit`` hook closes every live Emitter, each bounded by its
  ``exit_timeout``; what a memory spool could not deliver is reported ``unsent_at_close``.
- **Fork**: the child rebuilds each live Emitter's locks, threads and connections and
  starts empty, so nothing is sent twice. A child of multiprocessing or billiard (Celery's
  prefork pool), which leaves through ``os._exit`` and so skips ``atexit``, closes them
  in its own exit function; an Emitter closed (or closing) at the fork is the parent's
  alone: the child forgets it.
- **SIGTERM** (what deploys, systemd and Kubernetes send): unless the application set its
  own handler first, or asked not to (``Emitter(handle_sigterm=False)``), the first
  Emitter made in the main thread installs one that turns SIGTERM into a clean exit:
  ``SystemExit(143)`` is raised in the main thread, so ``finally`` blocks and the exit
  hook above run, with the same bounded flush and report as a normal exit. A second
  SIGTERM kills at once (the default action is restored first). With no live Emitter
  left, SIGTERM takes its default action, as if the handler were not there.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import sys
import threading
import weakref
from collections.abc import Callable
from types import FrameType, ModuleType
from typing import Protocol

__all__ = ["EXIT_ON_SIGTERM", "install_sigterm_handler", "register", "unregister"]

log = logging.getLogger("selligent_segment")

#: The exit status after a handled SIGTERM: 128 + 15, what a shell reports for a process
#: killed by SIGTERM and what process supervisors expect.
EXIT_ON_SIGTERM = 128 + signal.SIGTERM


class _Member(Protocol):
    """What the registry needs of an Emitter."""

    _exit_timeout: float

    def close(self, timeout: float | None = ...) -> bool: ...

    def _after_fork_in_child(self) -> None: ...

    def _unusable_after_fork(self) -> None: ...


_live: weakref.WeakSet[_Member] = weakref.WeakSet()
_installed = False
_install_lock = threading.Lock()


def register(member: _Member) -> None:
    """Close ``member`` at exit and rebuild it after fork, while it lives."""
    _live.add(member)


def unregister(member: _Member) -> None:
    """Forget a closed ``member``."""
    _live.discard(member)


def install_sigterm_handler() -> bool:
    """Install the SIGTERM handler described above, once per process; True when it is
    installed (now or before). Does nothing, and returns False, off the main thread or
    when SIGTERM already has a handler other than the default (the application owns it:
    its handler should call ``Emitter.close``)."""
    global _installed
    with _install_lock:
        if _installed:
            return True
        if threading.current_thread() is not threading.main_thread():
            log.debug("not in the main thread: SIGTERM left as it is")
            return False
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            log.debug("SIGTERM has a handler already: left as it is")
            return False
        signal.signal(signal.SIGTERM, _on_sigterm)
        _installed = True
        return True


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    global _installed
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM kills at once
    _installed = False
    if not _live:
        os.kill(os.getpid(), signal.SIGTERM)  # nothing to flush: the default action
        return
    log.warning(
        "SIGTERM: closing %d emitter(s), each for up to its exit_timeout",
        len(_live),
    )
    raise SystemExit(EXIT_ON_SIGTERM)


#: The signals a library thread never takes: the kernel gives a process's signal to any
#: thread that does not block it, and Python runs the handler only in the main thread,
#: when it next runs Python; a SIGTERM taken by a sender blocked in a socket call then
#: waits for the main thread to wake, for ever if it sleeps in a lock (an application
#: whose main thread waits on an Event never stopped).
MAIN_THREAD_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT})


def in_library_thread(target: Callable[[], object]) -> Callable[[], None]:
    """``target`` run with :data:`MAIN_THREAD_SIGNALS` blocked in its thread, for every
    thread the library starts: SIGTERM and Ctrl-C then reach the main thread, where
    Python's handlers run, whatever the library's threads are doing."""

    def run() -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, MAIN_THREAD_SIGNALS)
        _library.thread = True
        target()

    return run


_library = threading.local()


def is_library_thread() -> bool:
    """True in a thread the library started (see :func:`in_library_thread`)."""
    return bool(getattr(_library, "thread", False))


def _close_all_at_exit() -> None:
    for member in list(_live):
        try:
            member.close(member._exit_timeout)
        except Exception:  # pragma: no cover - exit must go on
            log.exception("close at exit failed")


def _after_fork_in_child() -> None:
    # Each member on its own: CPython ignores what an at-fork hook raises, so one failure
    # would leave every member after it with the parent's state and no threads.
    for member in list(_live):
        try:
            member._after_fork_in_child()
        except Exception:
            log.exception("an emitter could not be rebuilt in the forked child: closed there")
            member._unusable_after_fork()
            unregister(member)


class _ChildExit:
    """What multiprocessing's (and billiard's, Celery's) after-fork registry holds: their
    children leave through ``os._exit``, which skips ``atexit``, after running their own
    exit function, which runs ``Finalize`` callbacks. The registry is run in the child
    after it cleared the parent's finalizers: there it registers the close at exit."""

    def __init__(self, util: ModuleType) -> None:
        self.util = util

    def __call__(self, _: object) -> None:
        self.util.Finalize(None, _close_all_at_exit, exitpriority=10)


# The hooks registered, by module name; each holds its registry's entry alive (it is weak).
_child_exits: dict[str, _ChildExit] = {}


def _before_fork() -> None:
    """Before a fork: hook the process pools' children (see :class:`_ChildExit`) once
    their module is imported, which is before they fork."""
    if not _live:
        return
    for name in ("multiprocessing.util", "billiard.util"):
        util = sys.modules.get(name)
        if util is not None and name not in _child_exits:
            hook = _child_exits[name] = _ChildExit(util)
            util.register_after_fork(hook, hook)


atexit.register(_close_all_at_exit)
os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)
