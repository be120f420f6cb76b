"""Helpers for testing applications (and bastion itself) against real databases.

``bastion.testing.postgres``
    :class:`TemporaryPostgres`, a throw-away PostgreSQL server started from the local
    PostgreSQL binaries, with a fresh database per test in about 20 ms; :class:`PostgresAdmin`
    to create and drop databases on an existing server.

Nothing here is imported by the rest of the library; importing it needs only SQLAlchemy.
"""

from bastion.testing.postgres import PostgresAdmin, TemporaryPostgres, TemporaryPostgresError

__all__ = ["PostgresAdmin", "TemporaryPostgres", "TemporaryPostgresError"]
