"""A one-line progress bar for the command line, drawn only on a terminal.

The bar lives on the last line of its stream (stderr): it is redrawn in place with ``\\r``
at most every ``interval`` seconds, messages printed through :meth:`Progress.message`
appear above it, and :meth:`Progress.close` erases it. When disabled (the stream is not a
terminal) every method but :meth:`message` does nothing, so output piped to a file or a
log holds no control characters.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from typing import TextIO

__all__ = ["Progress", "human_bytes", "is_terminal", "render"]

_CLEAR = "\r\x1b[K"
_BAR_WIDTH = 24


def is_terminal(stream: object) -> bool:
    """True when ``stream`` is a terminal (False for a closed stream or one without a
    file descriptor)."""
    try:
        return bool(stream.isatty())  # type: ignore[attr-defined]
    except (AttributeError, ValueError):
        return False


def human_bytes(n: float) -> str:
    """``1536`` -> ``'1.5 KB'`` (powers of 1000, as file managers show sizes)."""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError  # pragma: no cover - the loop always returns


def render(label: str, done: float, total: float | None, detail: str, width: int) -> str:
    """The bar's text: ``label [#####-----]  42%  detail``, cut to ``width`` characters.

    Without a ``total`` (or with a zero one) there is no bar, only ``label  detail``.
    """
    if total:
        fraction = min(max(done / total, 0.0), 1.0)
        filled = int(fraction * _BAR_WIDTH)
        bar = "#" * filled + "-" * (_BAR_WIDTH - filled)
        text = f"{label} [{bar}] {int(fraction * 100):3d}%  {detail}"
    else:
        text = f"{label}  {detail}"
    return text[: max(width, 1)]


class Progress:
    """A throttled progress line on ``stream``; see the module docstring."""

    def __init__(
        self,
        stream: TextIO,
        *,
        enabled: bool | None = None,
        interval: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
        width: int | None = None,
    ) -> None:
        self._stream = stream
        self.enabled = is_terminal(stream) if enabled is None else enabled
        self._interval = interval
        self._clock = clock
        self._width = width
        self._next = float("-inf")
        self._shown = False

    def due(self) -> bool:
        """True when a redraw would be shown now (enabled and ``interval`` has passed)."""
        return self.enabled and self._clock() >= self._next

    def show(self, label: str, done: float, total: float | None, detail: str) -> None:
        """Redraw the line now (when enabled), whatever the interval."""
        if not self.enabled:
            return
        width = self._width or shutil.get_terminal_size((80, 24)).columns
        self._stream.write(_CLEAR + render(label, done, total, detail, width - 1))
        self._stream.flush()
        self._shown = True
        self._next = self._clock() + self._interval

    def message(self, text: str) -> None:
        """Print ``text`` as a line of its own, above the bar (which is redrawn later)."""
        if self._shown:
            self._stream.write(_CLEAR)
            self._shown = False
        self._stream.write(text + "\n")
        self._stream.flush()

    def close(self) -> None:
        """Erase the bar; later output starts on a clean line."""
        if self._shown:
            self._stream.write(_CLEAR)
            self._stream.flush()
            self._shown = False
