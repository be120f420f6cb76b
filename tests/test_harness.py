"""The harness itself: both backends answer, PostgreSQL is real, databases come and go."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import Session

from bastion.testing.postgres import (
    PostgresAdmin,
    TemporaryPostgres,
    TemporaryPostgresError,
    validate_database_name,
)

needs_pg = pytest.mark.skipif(
    os.environ.get("BASTION_TEST_SKIP_PG", "") not in ("", "0"),
    reason="PostgreSQL skipped: BASTION_TEST_SKIP_PG is set",
)
external_pg = bool(os.environ.get("BASTION_TEST_PG_URL"))


def test_engine_answers_select_1(engine: Engine, backend: str) -> None:
    assert engine.dialect.name == backend
    with engine.connect() as connection:
        assert connection.execute(sa.text("SELECT 1")).scalar_one() == 1


def test_session_is_bound_to_engine(session: Session, engine: Engine) -> None:
    assert session.get_bind() is engine
    assert session.execute(sa.text("SELECT 1")).scalar_one() == 1


def test_each_test_gets_an_empty_database(engine: Engine) -> None:
    # Runs after other engine tests in the same session: nothing may be left over.
    assert sa.inspect(engine).get_table_names() == []
    with engine.begin() as connection:
        connection.execute(sa.text("CREATE TABLE leftover (id INTEGER PRIMARY KEY)"))


@pytest.mark.backends("sqlite")
def test_sqlite_enforces_foreign_keys(engine: Engine) -> None:
    with engine.connect() as connection:
        assert connection.execute(sa.text("PRAGMA foreign_keys")).scalar_one() == 1


@pytest.mark.backends("postgresql")
def test_postgresql_is_a_real_postgresql_15_or_later(engine: Engine) -> None:
    with engine.connect() as connection:
        version = int(connection.execute(sa.text("SHOW server_version_num")).scalar_one())
        address = connection.execute(sa.text("SELECT host(inet_server_addr())")).scalar_one()
        database = connection.execute(sa.text("SELECT current_database()")).scalar_one()
    assert version >= 150000
    assert database.startswith("bastion_test_")
    if not external_pg:
        assert address == "127.0.0.1"


async def test_async_engine_answers_select_1(
    async_engine: AsyncEngine, async_session: AsyncSession, backend: str
) -> None:
    assert async_engine.dialect.name == backend
    assert async_session.bind is async_engine
    assert (await async_session.execute(sa.text("SELECT 1"))).scalar_one() == 1


def test_tests_without_engine_are_not_parametrized(request: pytest.FixtureRequest) -> None:
    assert "[" not in request.node.name


@pytest.mark.parametrize(
    "name",
    ['x"; drop', "", "X", "1abc", "a-b", "a b", "a" * 64, "é", "a\x00"],
)
def test_database_names_are_validated(name: str) -> None:
    with pytest.raises(ValueError, match="invalid database name"):
        validate_database_name(name)
    # Validation happens before any connection: no server is needed to refuse a name.
    with pytest.raises(ValueError, match="invalid database name"):
        TemporaryPostgres(bin_dir="/nonexistent").create_database(name)
    with pytest.raises(ValueError, match="invalid database name"):
        PostgresAdmin("postgresql://nobody@127.0.0.1:1/postgres").drop_database(name)


@pytest.mark.parametrize("name", ["a", "_", "bastion_test_1_abc", "a" * 63])
def test_plain_identifiers_are_accepted(name: str) -> None:
    assert validate_database_name(name) == name


@needs_pg
def test_create_and_drop_database_round_trip(postgres: TemporaryPostgres | PostgresAdmin) -> None:
    name = "bastion_harness_round_trip"
    postgres.drop_database(name)  # left over from an interrupted run, if any
    url = postgres.create_database(name)
    assert sa.make_url(url).database == name

    def databases() -> set[str]:
        engine = sa.create_engine(postgres.url)
        try:
            with engine.connect() as connection:
                rows = connection.execute(sa.text("SELECT datname FROM pg_database"))
                return set(rows.scalars())
        finally:
            engine.dispose()

    assert name in databases()
    # DROP ... WITH (FORCE): an open connection does not block the drop.
    engine = sa.create_engine(url)
    connection = engine.connect()
    try:
        postgres.drop_database(name)
    finally:
        connection.invalidate()
        engine.dispose()
    assert name not in databases()


@needs_pg
@pytest.mark.slow
def test_temporary_postgres_lifecycle() -> None:
    server = TemporaryPostgres()
    with server:
        base = server.data_dir.parent
        assert (server.data_dir / "PG_VERSION").exists()
        assert server.url.startswith("postgresql+psycopg://postgres@127.0.0.1:")
        url = server.create_database("lifecycle")
        engine = sa.create_engine(url)
        try:
            with engine.connect() as connection:
                assert connection.execute(sa.text("SELECT 1")).scalar_one() == 1
        finally:
            engine.dispose()
        server.drop_database("lifecycle")
    assert not base.exists()
    server.stop()  # idempotent
    with pytest.raises(TemporaryPostgresError, match="not started"):
        _ = server.url


def test_missing_binaries_are_a_clear_error(tmp_path: Path) -> None:
    server = TemporaryPostgres(bin_dir=str(tmp_path))
    with pytest.raises(TemporaryPostgresError, match="initdb not found"):
        server.start()


def test_a_failing_server_reports_its_output() -> None:
    # Fake binaries that fail: the error carries what the program said. Not in tmp_path: when
    # root, the programs run as the postgres user, who cannot enter pytest's private tmp_path.
    bin_dir = Path(tempfile.mkdtemp(prefix="bastion-fake-pg-"))
    try:
        bin_dir.chmod(0o755)
        for program in ("initdb", "pg_ctl", "postgres"):
            script = bin_dir / program
            script.write_text("#!/bin/sh\necho 'FATAL: something specific' >&2\nexit 3\n")
            script.chmod(0o755)
        server = TemporaryPostgres(bin_dir=str(bin_dir))
        with pytest.raises(TemporaryPostgresError, match="something specific"):
            server.start()
        with pytest.raises(TemporaryPostgresError, match="not started"):
            _ = server.url
    finally:
        shutil.rmtree(bin_dir)
