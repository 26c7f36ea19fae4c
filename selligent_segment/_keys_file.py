"""The write-keys file: a JSON object ``{"tenant": "key"}``, read once, checked whole.

The one reader of the format, shared by :meth:`Emitter.from_env
<selligent_segment.Emitter.from_env>` (``SELLIGENT_SEGMENT_WRITE_KEYS``) and the
command line (``--write-keys``). The file holds secrets: no error names a key or shows
the file's content; errors name the file, the tenant where there is one, and the reason.
"""

from __future__ import annotations

import os

import orjson

from selligent_segment._errors import ConfigurationError, shown
from selligent_segment.delivery._keys import WriteKeys

__all__ = ["WriteKeysFileError", "load_write_keys"]

_EXPECTED = 'expected a JSON object {"tenant": "key"}'


class WriteKeysFileError(ConfigurationError):
    """The write-keys file cannot be used. ``path`` is the file, ``reason`` says why; the
    text is ``PATH: REASON`` and never holds a key. ``setting`` is ``"write_keys"``."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__("write_keys", reason)
        self.path = path
        self.args = (f"{path}: {reason}",)

    @classmethod
    def unreadable(cls, path: str, exc: OSError) -> WriteKeysFileError:
        """The file cannot be read. A value that names no file and does not look like a
        path (no ``/``, no ``.json``) may be a key given in its place: it is not shown."""
        if _looks_like_a_path(path) or os.path.lexists(path):
            return cls(path, f"cannot read: {exc.strerror or exc}")
        error = cls(_NOT_A_PATH, _NO_FILE)
        error.path = path
        return error


_NOT_A_PATH = "<the value, not shown: it may be a write key>"
_NO_FILE = "names no file (give the path of a JSON file of tenants and keys, not a key)"


def _looks_like_a_path(value: str) -> bool:
    text = value.strip()
    return not text.startswith("{") and (
        "/" in text or os.sep in text or text.lower().endswith(".json")
    )

    def __str__(self) -> str:
        return str(self.args[0])


def load_write_keys(path: str | os.PathLike[str]) -> dict[str, str]:
    """The tenants and write keys of the JSON file at ``path``: ``{"tenant": "key", ...}``.

    Guarantee: the result is a non-empty dict that ``Emitter(write_keys=...)`` accepts
    (tenant names and keys checked as the Emitter checks them). Otherwise
    :class:`WriteKeysFileError` (a :class:`~selligent_segment.ConfigurationError`) naming
    the file and the reason: cannot read, invalid JSON, not an object of strings, no
    tenant, a blank or spaced key (naming its tenant, never the key).
    """
    name = os.fspath(path)
    try:
        with open(name, "rb") as stream:
            data = orjson.loads(stream.read())
    except OSError as exc:
        raise WriteKeysFileError.unreadable(name, exc) from None
    except orjson.JSONDecodeError as exc:
        # orjson's message names a position and the kind of error, never the text.
        raise WriteKeysFileError(name, f"invalid JSON ({exc})") from None
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in data.items()
    ):
        raise WriteKeysFileError(name, _EXPECTED)
    if not data:
        raise WriteKeysFileError(name, "names no tenant (the object is empty)")
    for tenant, key in data.items():
        try:
            WriteKeys(None, {tenant: key})
        except ConfigurationError as exc:
            if exc.setting == "write_keys":  # the tenant's name: the reason shows it
                raise WriteKeysFileError(name, exc.reason) from None
            raise WriteKeysFileError(name, f"tenant {shown(tenant)}: {exc.reason}") from None
    return data
