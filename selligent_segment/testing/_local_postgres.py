"""A real PostgreSQL server for tests: ``with LocalPostgres() as pg: pg.url``.

One job: a throw-away cluster in a temporary directory, listening on a free loopback port,
started with the server binaries already on the machine (``initdb``, ``pg_ctl``: PostgreSQL
15 here), and removed afterwards. PostgreSQL refuses to run as root, so when the tests run
as root (CI does) the cluster belongs to the ``postgres`` system user and every server
command runs as that user (``runuser``); otherwise it runs as the current user.

Guarantees: :meth:`LocalPostgres.start` returns only once the server accepts connections
(``pg_ctl start -w``) or raises :class:`PostgresUnavailable` saying why (binaries missing,
``initdb`` or start failed, with the server log's tail), having stopped the server and
removed the directory it made; it never skips. :meth:`restart` runs ``pg_ctl restart``
with the mode given (``fast``, or ``immediate``: a crash as far as the database is
concerned) and returns once the server accepts connections again. The cluster is for
tests: ``fsync`` is off (an operating-system crash is not simulated; a server crash is,
and committed data survives it), authentication is ``trust`` on loopback.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from selligent_segment._context import StartedOnEnter
from selligent_segment._errors import SelligentSegmentError

__all__ = ["LocalPostgres", "PostgresUnavailable", "find_server_binaries"]

_SEARCH = ("/usr/lib/postgresql/*/bin", "/usr/local/pgsql/bin", "/usr/local/bin", "/usr/bin")
_SERVER_USER = "postgres"


class PostgresUnavailable(SelligentSegmentError, RuntimeError):
    """The test server could not be started; the text says why."""


def find_server_binaries() -> Path:
    """The directory holding ``initdb`` and ``pg_ctl`` (the newest major version first);
    raises :class:`PostgresUnavailable` naming where it looked."""
    found = shutil.which("pg_ctl")
    candidates: list[Path] = []
    for pattern in _SEARCH:
        root = Path(pattern.split("*")[0])
        if "*" in pattern:
            if root.is_dir():
                versions = sorted(
                    (p for p in root.iterdir() if p.name.isdigit()),
                    key=lambda p: int(p.name),
                    reverse=True,
                )
                candidates.extend(v / "bin" for v in versions)
        else:
            candidates.append(root)
    if found:
        candidates.append(Path(found).resolve().parent)
    for directory in candidates:
        if (directory / "initdb").is_file() and (directory / "pg_ctl").is_file():
            return directory
    raise PostgresUnavailable(
        "PostgreSQL server binaries (initdb, pg_ctl) not found in "
        + ", ".join(_SEARCH)
        + " or on PATH: install them (Debian: apt-get install postgresql)"
    )


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


class LocalPostgres(StartedOnEnter):
    """A throw-away PostgreSQL cluster on loopback; a context manager.

    ``url`` is a ``postgresql://`` URL for the database ``database`` (created at start),
    user ``user``, no password (``trust`` on loopback only).
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        database: str = "selligent",
        settings: Sequence[tuple[str, str]] = (),
    ) -> None:
        self.host = host
        self._port = port
        self.database = database
        self._settings = tuple(settings)
        self._bin: Path | None = None
        self._root: Path | None = None
        self._as_root = os.geteuid() == 0
        self._options: list[str] = []
        self.user = _SERVER_USER if self._as_root else _current_user()

    def __repr__(self) -> str:
        state = f"{self.host}:{self._port}" if self._root else "stopped"
        return f"<LocalPostgres {state}>"

    @property
    def port(self) -> int:
        """The TCP port the server listens on (after :meth:`start`)."""
        return self._port

    @property
    def url(self) -> str:
        """``postgresql://user@host:port/database``."""
        return f"postgresql://{self.user}@{self.host}:{self._port}/{self.database}"

    @property
    def data_dir(self) -> Path:
        """The cluster's data directory."""
        assert self._root is not None, "start() first"
        return self._root / "data"

    def _command(self, *argv: str) -> list[str]:
        if self._as_root:
            return ["runuser", "-u", _SERVER_USER, "--", *argv]
        return list(argv)

    def _run(self, *argv: str, what: str) -> None:
        try:
            subprocess.run(  # noqa: S603 (the server binaries found by find_server_binaries)
                self._command(*argv),
                check=True,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=120,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            detail = ""
            if isinstance(exc, subprocess.CalledProcessError):
                detail = (exc.stderr or b"").decode(errors="replace").strip()[-2000:]
            raise PostgresUnavailable(f"{what} failed: {exc}\n{detail}{self._log_tail()}") from None

    def _log_tail(self) -> str:
        if self._root is None:
            return ""
        try:
            text = (self._root / "server.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\nserver log:\n" + text[-2000:]

    def start(self) -> LocalPostgres:
        """Create the cluster and start the server; returns once it accepts connections.

        When any step fails (or is interrupted) once the directory exists, the server is
        stopped and the directory removed (:meth:`stop`) before the error is re-raised."""
        self._bin = find_server_binaries()
        root = Path(tempfile.mkdtemp(prefix="selligent-pg-"))
        self._root = root
        try:
            if self._as_root:
                os.chmod(root, 0o755)  # noqa: S103 (the postgres user must reach its data dir)
                shutil.chown(root, _SERVER_USER)
            if self._port == 0:
                self._port = _free_port(self.host)
            self._run(
                str(self._bin / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                self.user,
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
                what="initdb",
            )
            self._options = [
                f"-c listen_addresses={self.host}",
                f"-p {self._port}",
                f"-c unix_socket_directories={root}",
                "-c fsync=off",
                "-c full_page_writes=off",
                "-c max_connections=200",
                *(f"-c {name}={value}" for name, value in self._settings),
            ]
            self.start_server()
            self._run(
                str(self._bin / "createdb"),
                "-h",
                self.host,
                "-p",
                str(self._port),
                "-U",
                self.user,
                self.database,
                what="createdb",
            )
        except BaseException:
            self.stop()
            raise
        return self

    def _pg_ctl(self, action: str, *extra: str) -> None:
        assert self._bin is not None
        assert self._root is not None
        self._run(
            str(self._bin / "pg_ctl"),
            action,
            "-D",
            str(self.data_dir),
            "-l",
            str(self._root / "server.log"),
            "-w",
            "-t",
            "60",
            *extra,
            what=f"pg_ctl {action}",
        )

    def start_server(self) -> None:
        """Start the server of the existing cluster; returns once it accepts connections."""
        self._pg_ctl("start", "-o", " ".join(self._options))

    def stop_server(self, mode: str = "fast") -> None:
        """Stop the server, keeping the cluster (:meth:`start_server` starts it again)."""
        self._pg_ctl("stop", "-m", mode)

    def restart(self, mode: str = "fast") -> None:
        """``pg_ctl restart -m MODE`` (``smart``, ``fast`` or ``immediate``); returns once
        the server accepts connections again. Open client connections are cut."""
        if mode not in ("smart", "fast", "immediate"):
            raise ValueError(f"mode: expected smart, fast or immediate, got {mode!r}")
        self._pg_ctl("restart", "-m", mode)

    def stop(self) -> None:
        """Stop the server (immediately) and remove the cluster; safe to call twice."""
        root = self._root
        if root is None:
            return
        with contextlib.suppress(PostgresUnavailable):
            self._pg_ctl("stop", "-m", "immediate")  # needs self._root
        self._root = None
        shutil.rmtree(root, ignore_errors=True)


def _current_user() -> str:
    import getpass

    return getpass.getuser()
