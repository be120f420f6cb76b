"""A throw-away PostgreSQL server for tests and benchmarks.

:class:`TemporaryPostgres` runs ``initdb`` into a fresh temporary directory, starts a server on a
free port of ``127.0.0.1`` with durability switched off (nothing it holds is meant to survive),
and removes everything again on :meth:`~TemporaryPostgres.stop`::

    with TemporaryPostgres() as pg:
        url = pg.create_database("demo")  # postgresql+psycopg://postgres@127.0.0.1:PORT/demo
        engine = create_engine(url)
        ...
        engine.dispose()
        pg.drop_database("demo")

Starting takes about half a second; a fresh database per test about 20 ms.

Why not pytest-postgresql: it cannot run as root (``pg_ctl: cannot be run as root``), and CI
runs as root. Here, when the process is root, ``initdb`` and ``pg_ctl`` run as the ``postgres``
system user, and the temporary directory is handed over to that user (``tmp_path`` from pytest
would not do: its parents are private to root).

The module needs only the standard library and SQLAlchemy to import; the ``psycopg`` driver is
needed when a database is created or dropped (``pip install bastion[postgres]``).

Binaries are looked up in this order: the ``bin_dir`` argument, the ``BASTION_PG_BIN``
environment variable, ``/usr/lib/postgresql/15/bin``, ``pg_config --bindir``, the newest
``/usr/lib/postgresql/*/bin``, and finally ``initdb`` on ``PATH``.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import weakref
from pathlib import Path
from types import TracebackType
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url

__all__ = [
    "PostgresAdmin",
    "TemporaryPostgres",
    "TemporaryPostgresError",
    "validate_database_name",
]

#: Where Debian 12 puts the PostgreSQL 15 server binaries.
DEFAULT_BIN_DIR = "/usr/lib/postgresql/15/bin"

#: The system user that owns the server when this process is root.
POSTGRES_USER = "postgres"

#: Database names this module accepts: plain lower-case SQL identifiers, so that the name in a
#: URL and the name in ``CREATE DATABASE`` are the same string, quoted or not.
_DATABASE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")

#: Server settings for a disposable cluster: no fsync, no full-page writes, no waiting for the
#: WAL on commit. A crash loses data, which is the point.
_SERVER_OPTIONS = ("-F", "-c", "synchronous_commit=off", "-c", "full_page_writes=off")

_START_TIMEOUT_SECONDS = 60
_PORT_ATTEMPTS = 3
_LOG_TAIL_LINES = 30


class TemporaryPostgresError(RuntimeError):
    """The throw-away server could not be set up, started, used or stopped.

    The message ends with the tail of the server log (or of the failing command's output),
    which is where PostgreSQL explains itself.
    """


def validate_database_name(name: str) -> str:
    """Return ``name`` if it is a plain lower-case identifier, else raise :class:`ValueError`.

    Accepted: ``[a-z_][a-z0-9_]*``, at most 63 characters (PostgreSQL's limit).
    """
    if _DATABASE_NAME.fullmatch(name) is None:
        raise ValueError(
            f"invalid database name {name!r}: use lower-case letters, digits and '_', "
            "starting with a letter or '_', at most 63 characters"
        )
    return name


class PostgresAdmin:
    """Creates and drops databases through a server's maintenance database.

    ``url`` is a SQLAlchemy URL of a database to connect to for ``CREATE DATABASE`` (usually
    ``.../postgres``) as a user allowed to create databases. A bare ``postgresql://`` URL is
    read as ``postgresql+psycopg://``. One autocommit connection is opened lazily and kept
    until :meth:`close`.
    """

    def __init__(self, url: str) -> None:
        parsed = make_url(url)
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        #: The maintenance database's URL, with its driver spelled out.
        self.url: str = parsed.render_as_string(hide_password=False)
        self._engine: Engine | None = None

    def database_url(self, name: str) -> str:
        """Return the URL of database ``name`` on this server (it need not exist)."""
        parsed = make_url(self.url).set(database=validate_database_name(name))
        return parsed.render_as_string(hide_password=False)

    def create_database(self, name: str) -> str:
        """Create database ``name`` and return its URL."""
        self._execute(f'CREATE DATABASE "{validate_database_name(name)}"')
        return self.database_url(name)

    def drop_database(self, name: str) -> None:
        """Drop database ``name`` if it exists, disconnecting whoever is still connected."""
        self._execute(f'DROP DATABASE IF EXISTS "{validate_database_name(name)}" WITH (FORCE)')

    def close(self) -> None:
        """Close the maintenance connection (the next call opens a new one)."""
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def __enter__(self) -> PostgresAdmin:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _execute(self, statement: str) -> None:
        # CREATE/DROP DATABASE cannot run inside a transaction block: autocommit.
        if self._engine is None:
            self._engine = sa.create_engine(
                self.url, isolation_level="AUTOCOMMIT", pool_size=1, max_overflow=0
            )
        with self._engine.connect() as connection:
            connection.exec_driver_sql(statement)


class TemporaryPostgres:
    """A PostgreSQL server in a temporary directory, on ``127.0.0.1`` and a free port.

    Use it as a context manager, or call :meth:`start` and :meth:`stop`. ``url`` points at the
    ``postgres`` maintenance database as the ``postgres`` superuser (trust authentication, no
    password). If the object is garbage-collected or the interpreter exits while the server
    runs, the server is stopped and its directory removed.
    """

    def __init__(self, bin_dir: str | None = None) -> None:
        #: Directory holding ``initdb``, ``pg_ctl`` and ``postgres``.
        self.bin_dir: str = bin_dir if bin_dir is not None else find_bin_dir()
        #: The port the server listens on (0 until started).
        self.port: int = 0
        self._base_dir: Path | None = None
        self._admin: PostgresAdmin | None = None
        self._finalizer: weakref.finalize[Any, Any] | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Create a cluster and start the server; raise :class:`TemporaryPostgresError` if not."""
        if self._base_dir is not None:
            raise TemporaryPostgresError("the server is already started")
        self._check_binaries()
        base = Path(tempfile.mkdtemp(prefix="bastion-pg-"))
        self._base_dir = base
        self._finalizer = weakref.finalize(self, _cleanup, self.bin_dir, base)
        try:
            if _as_root():
                shutil.chown(base, POSTGRES_USER, POSTGRES_USER)
            self._initdb()
            self._start_server()
        except BaseException:
            self.stop()
            raise
        self._admin = PostgresAdmin(self.url)

    def stop(self) -> None:
        """Stop the server at once (``-m immediate``) and remove its directory. Idempotent."""
        if self._admin is not None:
            self._admin.close()
            self._admin = None
        if self._finalizer is not None:
            self._finalizer()
            self._finalizer = None
        self._base_dir = None
        self.port = 0

    def __enter__(self) -> TemporaryPostgres:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- use ---------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the ``postgres`` maintenance database."""
        if not self.port:
            raise TemporaryPostgresError("the server is not started")
        return f"postgresql+psycopg://{POSTGRES_USER}@127.0.0.1:{self.port}/postgres"

    @property
    def data_dir(self) -> Path:
        """The cluster's data directory (inside a temporary directory removed on stop)."""
        return self._base_or_raise() / "data"

    @property
    def log_file(self) -> Path:
        """The server log."""
        return self._base_or_raise() / "server.log"

    def create_database(self, name: str) -> str:
        """Create database ``name`` (a plain lower-case identifier) and return its URL."""
        validate_database_name(name)
        return self._admin_or_raise().create_database(name)

    def drop_database(self, name: str) -> None:
        """Drop database ``name``, with ``FORCE`` so open connections do not block it."""
        validate_database_name(name)
        self._admin_or_raise().drop_database(name)

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """The last ``lines`` lines of the server log, or ``""`` if there is none yet."""
        try:
            text = self.log_file.read_text(errors="replace")
        except (OSError, TemporaryPostgresError):
            return ""
        return "\n".join(text.splitlines()[-lines:])

    # -- internals ---------------------------------------------------------------------------

    def _base_or_raise(self) -> Path:
        if self._base_dir is None:
            raise TemporaryPostgresError("the server is not started")
        return self._base_dir

    def _admin_or_raise(self) -> PostgresAdmin:
        if self._admin is None:
            raise TemporaryPostgresError("the server is not started")
        return self._admin

    def _check_binaries(self) -> None:
        for program in ("initdb", "pg_ctl", "postgres"):
            if not os.access(Path(self.bin_dir) / program, os.X_OK):
                raise TemporaryPostgresError(
                    f"{program} not found in {self.bin_dir!r}: install the PostgreSQL server "
                    "(Debian: apt-get install postgresql) or set BASTION_PG_BIN"
                )
        if _as_root():
            try:
                pwd.getpwnam(POSTGRES_USER)
            except KeyError:
                raise TemporaryPostgresError(
                    f"running as root, but there is no {POSTGRES_USER!r} user to run "
                    "PostgreSQL as (initdb and pg_ctl refuse root)"
                ) from None

    def _initdb(self) -> None:
        args = ["-D", str(self.data_dir), "-U", POSTGRES_USER, "--auth=trust", "-E", "UTF8"]
        args += ["--no-locale", "--no-sync"]
        _run(self.bin_dir, "initdb", args, cwd=self._base_or_raise())

    def _start_server(self) -> None:
        # A port found free may be taken before the server binds it: try a few.
        for attempt in range(1, _PORT_ATTEMPTS + 1):
            port = _free_port()
            options = ["-h", "127.0.0.1", "-p", str(port), "-k", str(self._base_or_raise())]
            args = ["-D", str(self.data_dir), "-l", str(self.log_file), "-w"]
            args += ["-t", str(_START_TIMEOUT_SECONDS)]
            args += ["-o", " ".join([*options, *_SERVER_OPTIONS]), "start"]
            try:
                _run(self.bin_dir, "pg_ctl", args, cwd=self._base_or_raise(), log=self.log_file)
            except TemporaryPostgresError:
                if attempt < _PORT_ATTEMPTS and "could not bind" in self.log_tail():
                    continue
                raise
            self.port = port
            return

    def __repr__(self) -> str:
        state = f"port={self.port}" if self.port else "stopped"
        return f"<TemporaryPostgres {state} bin_dir={self.bin_dir!r}>"


def find_bin_dir() -> str:
    """Find the directory of the PostgreSQL server binaries (see the module docstring)."""
    from_env = os.environ.get("BASTION_PG_BIN")
    if from_env:
        return from_env
    if Path(DEFAULT_BIN_DIR, "initdb").exists():
        return DEFAULT_BIN_DIR
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        result = subprocess.run(
            [pg_config, "--bindir"], capture_output=True, text=True, check=False
        )
        candidate = result.stdout.strip()
        if result.returncode == 0 and Path(candidate, "initdb").exists():
            return candidate
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if versions:
        return str(versions[-1].parent)
    initdb = shutil.which("initdb")
    if initdb is not None:
        return str(Path(initdb).parent)
    # Let start() explain what is missing where.
    return DEFAULT_BIN_DIR


def _as_root() -> bool:
    return os.geteuid() == 0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _run(
    bin_dir: str, program: str, args: list[str], *, cwd: Path, log: Path | None = None
) -> None:
    """Run a PostgreSQL program (as the postgres user when root); raise with its output."""
    command = [str(Path(bin_dir) / program), *args]
    kwargs: dict[str, Any] = {}
    if _as_root():
        kwargs = {"user": POSTGRES_USER, "group": POSTGRES_USER, "extra_groups": []}
    try:
        result = subprocess.run(
            command,
            cwd=cwd,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            check=False,
            **kwargs,
        )
    except OSError as error:
        raise TemporaryPostgresError(f"could not run {program}: {error}") from error
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip()
        if log is not None and log.exists():
            output += "\n--- server log ---\n" + _tail(log.read_text(errors="replace"))
        raise TemporaryPostgresError(
            f"{program} failed with exit status {result.returncode}: {' '.join(command)}\n"
            + _tail(output)
        )


def _tail(text: str, lines: int = _LOG_TAIL_LINES) -> str:
    return "\n".join(text.splitlines()[-lines:])


def _cleanup(bin_dir: str, base: Path) -> None:
    """Stop the server in ``base`` if it runs, then delete ``base``.

    A module-level function (not a method) so that :func:`weakref.finalize` holds no reference
    to the :class:`TemporaryPostgres` it cleans up after.
    """
    data = base / "data"
    if (data / "postmaster.pid").exists():
        with contextlib.suppress(TemporaryPostgresError):
            _run(bin_dir, "pg_ctl", ["-D", str(data), "-m", "immediate", "-w", "stop"], cwd=base)
    shutil.rmtree(base, ignore_errors=True)
