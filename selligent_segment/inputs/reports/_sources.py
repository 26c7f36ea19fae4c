"""Where report messages are read from: one ``.eml`` file, an mbox, or a Maildir, each
message with its location (``FILE`` for a single message, ``FILE:MESSAGE-N`` in an mbox or
a Maildir, counted from 1 in file order, Maildir messages in name order)."""

from __future__ import annotations

import itertools
import mailbox
import os
import stat
from collections.abc import Iterable, Iterator

from selligent_segment.inputs._result import InputError, InputProblem

__all__ = ["check_path", "read_messages"]


def check_path(path: str) -> str:
    """``eml``, ``mbox``, ``maildir`` or ``stream`` (a pipe, nothing read from it yet) for
    ``path``; InputError naming it when it cannot be read as any of them."""
    if os.path.isdir(path):
        if os.path.isdir(os.path.join(path, "cur")) and os.path.isdir(os.path.join(path, "new")):
            return "maildir"
        raise InputError(path, "path", "a directory but not a Maildir (no cur/ and new/)")
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return "stream"  # a pipe: read once, by read_messages (a check would lose data)
        with open(path, "rb") as stream:
            start = stream.read(5)
    except OSError as exc:
        raise InputError(path, "path", f"cannot read: {exc.strerror or exc}") from None
    return "mbox" if start == b"From " else "eml"


def _mbox_messages(lines: Iterable[bytes]) -> Iterator[bytes]:
    """The messages of an mbox read line by line (``\\n`` ends a line, as for
    :class:`mailbox.mbox`), as it gives them: each without its ``From `` line and the blank
    line before the next one; each handed out once read, so that an mbox through a pipe
    is held one message at a time."""
    current: list[bytes] | None = None
    for line in lines:
        if line.startswith(b"From "):
            if current is not None:
                yield _without_separator(b"".join(current))
            current = []
        elif current is not None:
            current.append(line)
    if current is not None:
        yield _without_separator(b"".join(current))


def _without_separator(message: bytes) -> bytes:
    for end in (b"\r\n", b"\n"):
        if message.endswith(end * 2):
            return message[: -len(end)]
    return message


def read_messages(path: str) -> Iterator[tuple[str, bytes | InputProblem]]:
    """Every message at ``path`` as ``(location, bytes)``, in order; a message that cannot
    be read (removed or damaged meanwhile) as ``(location, InputProblem)``.

    Raises :class:`InputError` naming ``path`` when it cannot be read at all (missing,
    unreadable, a directory that is not a Maildir).
    """
    kind = check_path(path)
    if kind in ("eml", "stream"):
        try:
            with open(path, "rb") as stream:
                start = stream.read(5)
                if kind == "eml" or start != b"From ":
                    yield path, start + stream.read()
                    return
                lines = itertools.chain([start + stream.readline()], stream)
                for number, message in enumerate(_mbox_messages(lines), 1):  # through a pipe
                    yield f"{path}:MESSAGE-{number}", message
        except OSError as exc:
            raise InputError(path, "path", f"cannot read: {exc.strerror or exc}") from None
        return
    box: mailbox.Mailbox[mailbox.Message]
    try:
        if kind == "mbox":
            box = mailbox.mbox(path, factory=None, create=False)
        else:
            box = mailbox.Maildir(path, factory=None, create=False)
        keys = sorted(box.keys()) if kind == "maildir" else list(box.keys())
    except (OSError, mailbox.Error) as exc:
        raise InputError(path, "path", f"cannot read: {exc}") from None
    try:
        for number, key in enumerate(keys, 1):
            try:
                data = box.get_bytes(key)
            except (OSError, KeyError, mailbox.Error) as exc:  # gone or damaged meanwhile
                where = f"{path}:MESSAGE-{number}"
                yield where, InputProblem(where, "message", f"cannot read: {exc}")
                continue
            if kind == "mbox" and data.endswith(b"\r\n\r\n"):
                # mailbox.mbox drops the blank line before the next "From " only when it is
                # a bare "\n": drop a CRLF one too, as the pipe reader does (the same bytes,
                # the same event ids, whichever way the mbox is read).
                data = data[:-2]
            yield f"{path}:MESSAGE-{number}", data
    finally:
        box.close()
