"""The test harness: every database test runs on SQLite and on a real PostgreSQL.

Fixtures
    ``engine``         a SQLAlchemy ``Engine`` on a fresh, empty database, parametrized with the
                       ids ``sqlite`` (a file in ``tmp_path``, foreign keys ON) and
                       ``postgresql`` (a ``CREATE DATABASE`` per test, dropped afterwards).
    ``session``        ``sqlalchemy.orm.Session(engine)``, closed afterwards.
    ``async_engine``   the same, as an ``AsyncEngine`` (aiosqlite / asyncpg);
                       ``async_session`` its ``AsyncSession``.
    ``backend``        the backend name of the current test (``"sqlite"`` / ``"postgresql"``).
    ``postgres``       the session's PostgreSQL server (create/drop databases, ``url``).

Only tests that use ``engine``, ``session``, ``async_engine``, ``async_session``, ``db_url``
or ``backend`` (directly or through their fixtures) are parametrized. ``@pytest.mark.backends
("postgresql")`` restricts a test to the named backends.

PostgreSQL is a :class:`bastion.testing.postgres.TemporaryPostgres` started once per session,
or the server of ``BASTION_TEST_PG_URL`` (a URL of a maintenance database, such as
``postgresql://postgres@localhost/postgres``) if that is set. If the server cannot start, the
``postgresql`` tests **error**: a missing PostgreSQL must not look like a green run. A
developer without PostgreSQL sets ``BASTION_TEST_SKIP_PG=1`` to skip them instead.

Hypothesis profiles: ``ci`` (the default) and ``dev`` (fewer examples); choose with
``HYPOTHESIS_PROFILE=dev``.
"""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, settings
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.orm import Session

from bastion.testing.postgres import PostgresAdmin, TemporaryPostgres

BACKENDS = ("sqlite", "postgresql")

# -- hypothesis ----------------------------------------------------------------------------

settings.register_profile(
    "ci",
    deadline=None,  # database round trips make timings noisy
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    print_blob=True,
)
settings.register_profile(
    "dev",
    parent=settings.get_profile("ci"),
    max_examples=25,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# -- parametrization -----------------------------------------------------------------------


def _skip_pg() -> bool:
    return os.environ.get("BASTION_TEST_SKIP_PG", "") not in ("", "0")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run every test that (transitively) uses ``backend`` once per backend."""
    if "backend" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("backends")
    names = tuple(marker.args) if marker is not None else BACKENDS
    unknown = set(names) - set(BACKENDS)
    if unknown or not names:
        raise pytest.UsageError(f"@pytest.mark.backends: unknown or no backends {names!r}")
    metafunc.parametrize("backend", names, ids=names)


# -- PostgreSQL server ---------------------------------------------------------------------


class DatabaseServer(Protocol):
    """What the tests need from a PostgreSQL server."""

    @property
    def url(self) -> str: ...
    def create_database(self, name: str) -> str: ...
    def drop_database(self, name: str) -> None: ...


@pytest.fixture(scope="session")
def postgres() -> Iterator[DatabaseServer]:
    """The session's PostgreSQL: ``BASTION_TEST_PG_URL``'s server, or a throw-away one."""
    if _skip_pg():
        pytest.skip("PostgreSQL skipped: BASTION_TEST_SKIP_PG is set")
    external = os.environ.get("BASTION_TEST_PG_URL")
    if external:
        with PostgresAdmin(external) as admin:
            yield admin
        return
    # A failure to start raises here, and every postgresql test reports it as an error.
    with TemporaryPostgres() as server:
        yield server


_counter = itertools.count()


def _database_name() -> str:
    # Unique across runs, so that a shared BASTION_TEST_PG_URL server never collides.
    return f"bastion_test_{next(_counter)}_{uuid.uuid4().hex[:10]}"


@pytest.fixture
def db_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of a fresh, empty database on ``backend``, removed after the test."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'test.sqlite'}"
        return
    server: DatabaseServer = request.getfixturevalue("postgres")
    name = _database_name()
    url = server.create_database(name)
    try:
        yield url
    finally:
        server.drop_database(name)


def _enable_sqlite_foreign_keys(engine: Engine) -> None:
    if engine.dialect.name != "sqlite":
        return

    @sa.event.listens_for(engine, "connect")
    def _pragma(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()


# -- sync ----------------------------------------------------------------------------------


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """An ``Engine`` on a fresh database; parametrized ``sqlite`` / ``postgresql``."""
    engine = sa.create_engine(db_url)
    _enable_sqlite_foreign_keys(engine)
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    """A ``Session`` on ``engine``, closed after the test."""
    with Session(engine) as session:
        yield session


# -- async ---------------------------------------------------------------------------------

_ASYNC_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg"}


@pytest.fixture
async def async_engine(db_url: str, backend: str) -> AsyncIterator[AsyncEngine]:
    """An ``AsyncEngine`` on a fresh database (aiosqlite / asyncpg)."""
    url = make_url(db_url).set(drivername=_ASYNC_DRIVERS[backend])
    engine = create_async_engine(url)
    _enable_sqlite_foreign_keys(engine.sync_engine)
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
async def async_session(async_engine: AsyncEngine) -> AsyncIterator[AsyncSession]:
    """An ``AsyncSession`` on ``async_engine``, closed after the test."""
    async with AsyncSession(async_engine) as session:
        yield session
