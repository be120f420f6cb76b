"""Fixtures of the grants tests: ``world`` (schema, data, store, authorizer) on every backend."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.engine import Engine

from .schema import World, create_permissions, world


@pytest.fixture
def w(engine: Engine) -> Iterator[World]:
    """A populated database with the stored permissions created, on SQLite and PostgreSQL."""
    with world(engine) as built:
        with built.session.begin():  # one commit (each is an fsync on SQLite)
            create_permissions(built.store)
        yield built
