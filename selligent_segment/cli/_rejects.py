"""The ``--rejects`` file of ``send``: the invalid records exactly as they were read (a CSV
header first), and beside it ``FILE.reasons``, one ``FILE:LINE: field: reason`` a record."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Sequence
from typing import BinaryIO, TextIO

from selligent_segment.cli._base import OutputError, UsageError
from selligent_segment.cli._reader import Input, Line

__all__ = ["Rejects"]


_BOM = b"\xef\xbb\xbf"  # UTF-8's byte order mark, allowed at the start of a file only


def _same_file(a: str, b: str) -> bool:
    """Whether ``a`` and ``b`` are one file; ``-`` is standard input, whatever it is
    redirected from (``--rejects todo.jsonl - < todo.jsonl``)."""
    try:
        if a == "-":
            return os.path.samestat(os.fstat(sys.stdin.fileno()), os.stat(b))
        return os.path.samefile(a, b)
    except (OSError, ValueError):  # ValueError: stdin closed or replaced
        return False


class Rejects:
    """The ``--rejects`` file (invalid records, untouched) and its ``.reasons`` file."""

    def __init__(self, path: str, inputs: Sequence[Input]) -> None:
        formats = {i.format for i in inputs}
        if len(formats) > 1:
            raise UsageError(
                "--rejects: the inputs mix JSON Lines and CSV; send them in separate runs"
            )
        headers = {i.columns for i in inputs if i.columns is not None}
        if len(headers) > 1:
            raise UsageError(
                "--rejects: the CSV inputs have different headers; send them in separate runs"
            )
        self.path = path
        self.reasons_path = path + ".reasons"
        for i in inputs:
            if _same_file(i.path, path) or _same_file(i.path, self.reasons_path):
                raise UsageError(f"--rejects {path}: is also an input; choose another file")
        self._header = next((i.header for i in inputs if i.header is not None), None)
        try:
            self._data: BinaryIO = open(path, "wb")  # noqa: SIM115 - closed in close()
        except OSError as exc:
            raise UsageError(f"--rejects {path}: cannot write: {exc.strerror or exc}") from None
        try:
            self._reasons: TextIO = open(  # noqa: SIM115 - closed in close()
                self.reasons_path, "w", encoding="utf-8"
            )
        except OSError as exc:
            self._data.close()
            raise UsageError(
                f"--rejects {self.reasons_path}: cannot write: {exc.strerror or exc}"
            ) from None
        self.count = 0
        self._line = 1

    def add(self, line: Line, error: Exception) -> None:
        """Write ``line`` and its reason, both flushed (``count`` counts only records
        written); raises :class:`OutputError` naming the file when a write fails."""
        header = b""
        if self.count == 0 and self._header is not None:
            header = self._header if self._header.endswith(b"\n") else self._header + b"\n"
        raw = line.raw if line.raw.endswith(b"\n") else line.raw + b"\n"
        if raw.startswith(_BOM) and self.count:  # an input's first line, not the file's
            raw = raw[len(_BOM) :]
        at = self._line + header.count(b"\n")
        with self._writing(self.path):
            self._data.write(header + raw)
            self._data.flush()
        with self._writing(self.reasons_path):
            self._reasons.write(f"{self.path}:{at}: {error} (from {line.where})\n")
            self._reasons.flush()
        self._line = at + raw.count(b"\n")
        self.count += 1

    @staticmethod
    @contextlib.contextmanager
    def _writing(path: str) -> Iterator[None]:
        try:
            yield
        except OSError as exc:
            raise OutputError(f"--rejects {path}: cannot write: {exc.strerror or exc}") from None

    def close(self) -> None:
        """Close both files; never raises (what could not be written said so already)."""
        for stream in (self._data, self._reasons):
            with contextlib.suppress(OSError):
                stream.close()
