"""A private throw-away PostgreSQL, used only when ``bastion.testing.postgres`` is unavailable.

Follows ``shared/INFRA.md``: ``initdb``/``pg_ctl`` as the ``postgres`` user when root, a data
directory whose parent that user owns, loopback only, fsync off.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import sqlalchemy as sa


def _bindir() -> Path:
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (candidate / "pg_ctl").exists():
            return candidate
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    raise RuntimeError("PostgreSQL server binaries (pg_ctl) not found")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Server:
    """Database create/drop on a server reachable at ``base_url``."""

    base_url: sa.URL

    def create_database(self, name: str) -> str:
        self.drop_database(name)
        self._admin(f'CREATE DATABASE "{name}"')
        return self.base_url.set(database=name).render_as_string(hide_password=False)

    def drop_database(self, name: str) -> None:
        self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def _admin(self, sql: str) -> None:
        engine = sa.create_engine(self.base_url.set(database="postgres"))
        try:
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.exec_driver_sql(sql)
        finally:
            engine.dispose()


class ExistingPostgres(_Server):
    def __init__(self, url: str) -> None:
        self.base_url = sa.make_url(url)


class TemporaryPostgres(_Server):
    def __init__(self) -> None:
        self._root = Path(tempfile.mkdtemp(prefix="bastion-bench-pg-"))
        self._data = self._root / "data"
        self._port = _free_port()
        self._bin = _bindir()
        self._as_root = os.geteuid() == 0
        self.base_url = sa.URL.create(
            "postgresql+psycopg", username="postgres", host="127.0.0.1", port=self._port
        )

    def _run(self, *args: str) -> None:
        kwargs: dict[str, Any] = {}
        if self._as_root:
            kwargs = {"user": "postgres", "group": "postgres", "extra_groups": []}
        subprocess.run(args, check=True, capture_output=True, **kwargs)

    def __enter__(self) -> TemporaryPostgres:
        if self._as_root:
            shutil.chown(self._root, "postgres", "postgres")
        self._run(
            str(self._bin / "initdb"),
            *("-D", str(self._data), "-U", "postgres", "--auth=trust", "-E", "UTF8"),
            *("--no-locale", "--no-sync"),
        )
        opts = (
            f"-h 127.0.0.1 -p {self._port} -k {self._root} -F "
            "-c synchronous_commit=off -c full_page_writes=off"
        )
        log = str(self._root / "log")
        self._run(
            str(self._bin / "pg_ctl"), "-D", str(self._data), "-l", log, "-w", "-o", opts, "start"
        )
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._run(
                str(self._bin / "pg_ctl"), "-D", str(self._data), "-m", "immediate", "-w", "stop"
            )
        finally:
            shutil.rmtree(self._root, ignore_errors=True)
