"""Where report messages are read from: one ``.eml`` file, an mbox, or a Maildir, each
message with its location (``FILE`` for a single message, ``FILE:MESSAGE-N`` in an mbox or
a Maildir, counted from 1 in file order, Maildir messages in name order)."""

from __future__ import annotations

import mailbox
import os
from collections.abc import Iterator

from selligent_segment.inputs._result import InputError, InputProblem

__all__ = ["check_path", "read_messages"]


def check_path(path: str) -> str:
    """``eml``, ``mbox`` or ``maildir`` for ``path``; InputError naming it when it cannot
    be read as any of them."""
    if os.path.isdir(path):
        if os.path.isdir(os.path.join(path, "cur")) and os.path.isdir(os.path.join(path, "new")):
            return "maildir"
        raise InputError(path, "path", "a directory but not a Maildir (no cur/ and new/)")
    try:
        with open(path, "rb") as stream:
            start = stream.read(5)
    except OSError as exc:
        raise InputError(path, "path", f"cannot read: {exc.strerror or exc}") from None
    return "mbox" if start == b"From " else "eml"


def read_messages(path: str) -> Iterator[tuple[str, bytes | InputProblem]]:
    """Every message at ``path`` as ``(location, bytes)``, in order; a message that cannot
    be read (removed or damaged meanwhile) as ``(location, InputProblem)``.

    Raises :class:`InputError` naming ``path`` when it cannot be read at all (missing,
    unreadable, a directory that is not a Maildir).
    """
    kind = check_path(path)
    if kind == "eml":
        try:
            with open(path, "rb") as stream:
                data = stream.read()
        except OSError as exc:
            raise InputError(path, "path", f"cannot read: {exc.strerror or exc}") from None
        yield path, data
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
            yield f"{path}:MESSAGE-{number}", data
    finally:
        box.close()
