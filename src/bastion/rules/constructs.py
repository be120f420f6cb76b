"""SQL constructs whose best spelling depends on the database.

``key_in(column, select)`` is "the row's key is among these keys". On PostgreSQL it compiles to
``column = ANY(ARRAY(SELECT ...))``: the subquery runs once and the outer table is read through
its primary-key index, where ``column IN (SELECT ...)`` (the spelling elsewhere, and for
composite keys) tends to become a hash semi-join that scans the whole table. Both mean the same
for a non-NULL key (and for a NULL one too: both are then UNKNOWN).

``per_dialect(default, postgresql=...)`` is one predicate written two ways: the filter of a
rule that is an OR of branches is ``pk IN (branch UNION ALL branch ...)`` on SQLite (each branch
uses its own index) but, on PostgreSQL, the plain ``a OR b OR col = ANY(ARRAY(...))`` when every
branch is a condition on the row's own columns (:func:`bitmap_friendly`): PostgreSQL then ORs
one bitmap index scan per branch and reads each matching row once, where the ``IN`` form reads
the table a second time through its primary key for every row the union found.

``rows_in(entity, key, select)`` is ``entity.key IN (select)`` where ``select`` lists keys of rows
that exist in ``entity``'s table (never NULL): the descendants CTE of ``ancestors()``. It
compiles like a plain ``IN``; what it adds is the promise, which lets a many-to-one step that
tests nothing but that key skip the related table (``documents.folder_id`` is among the keys:
no ``EXISTS`` over ``folders`` per document, see ``to_sql._through_foreign_key``).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql import util as sql_util
from sqlalchemy.sql.elements import ColumnElement, Grouping, Tuple
from sqlalchemy.sql.selectable import Exists, FromClause, ScalarSelect, SelectBase

__all__ = [
    "KeyIn",
    "PerDialect",
    "RowsIn",
    "bitmap_friendly",
    "key_in",
    "per_dialect",
    "rows_in",
]


class KeyIn(ColumnElement[bool]):
    """``column IN (select)``, spelled per dialect (see the module docstring)."""

    type = sa.Boolean()
    inherit_cache = True
    _is_implicitly_boolean = True  # a predicate: WHERE takes it as is (no "= 1" on SQLite)
    _traverse_internals = [
        ("column", sa.sql.visitors.InternalTraversal.dp_clauseelement),
        ("select", sa.sql.visitors.InternalTraversal.dp_clauseelement),
    ]

    def __init__(self, column: Any, select: Any) -> None:
        self.column = column
        self.select = select

    @property
    def _from_objects(self) -> list[Any]:
        return self.column._from_objects  # type: ignore[no-any-return]


def key_in(column: Any, select: Any) -> ColumnElement[bool]:
    """``column`` (a non-NULL key) is among the rows of ``select``."""
    return KeyIn(column, select)


@compiles(KeyIn)
def _key_in_default(element: KeyIn, compiler: Any, **kw: Any) -> str:
    return compiler.process(element.column.in_(element.select), **kw)  # type: ignore[no-any-return]


@compiles(KeyIn, "postgresql")
def _key_in_postgresql(element: KeyIn, compiler: Any, **kw: Any) -> str:
    if isinstance(element.column, Tuple):  # composite keys: an array of rows is no use here
        return _key_in_default(element, compiler, **kw)
    column = compiler.process(element.column, **kw)
    subquery = compiler.process(element.select, asfrom=False, **kw)
    return f"{column} = ANY(ARRAY({subquery}))"


class PerDialect(ColumnElement[bool]):
    """A predicate spelled ``postgresql`` on PostgreSQL and ``default`` elsewhere (both must mean
    the same: the differential tests run every filter on both databases)."""

    type = sa.Boolean()
    inherit_cache = True
    _is_implicitly_boolean = True
    _traverse_internals = [
        ("default", sa.sql.visitors.InternalTraversal.dp_clauseelement),
        ("postgresql", sa.sql.visitors.InternalTraversal.dp_clauseelement),
    ]

    def __init__(self, default: Any, postgresql: Any) -> None:
        self.default = default
        self.postgresql = postgresql

    @property
    def _from_objects(self) -> list[Any]:
        return self.default._from_objects  # type: ignore[no-any-return]


def per_dialect(default: Any, *, postgresql: Any) -> ColumnElement[bool]:
    """``postgresql`` on PostgreSQL, ``default`` on every other database."""
    return PerDialect(default, postgresql)


# The PostgreSQL spelling is parenthesised: the construct is one predicate wherever it lands
# (``... AND kind IN (...)`` after it must not bind to its last OR branch); the default one is
# grouped as SQLAlchemy groups it (``pk IN (...)`` needs no parentheses).
@compiles(PerDialect)
def _per_dialect_default(element: PerDialect, compiler: Any, **kw: Any) -> str:
    return compiler.process(element.default.self_group(), **kw)  # type: ignore[no-any-return]


@compiles(PerDialect, "postgresql")
def _per_dialect_postgresql(element: PerDialect, compiler: Any, **kw: Any) -> str:
    return compiler.process(Grouping(element.postgresql), **kw)  # type: ignore[no-any-return]


def bitmap_friendly(clause: Any, entity: Any) -> bool:
    """Whether ``clause`` (a filter branch on ``entity``) is a condition on ``entity``'s own
    columns that PostgreSQL can answer with bitmap index scans: no ``EXISTS``, and no subquery
    but uncorrelated :func:`key_in` sets (which run once, as an InitPlan). A correlated or
    ``EXISTS`` branch is not: ORed with others it would make the planner scan the whole table."""
    if isinstance(clause, KeyIn):
        own = sa_inspect(entity).selectable
        return own not in sql_util.find_tables(clause.select, include_aliases=True)
    if isinstance(clause, (Exists, ScalarSelect, SelectBase, FromClause)):
        return False
    return all(bitmap_friendly(child, entity) for child in clause.get_children())


def subquery_free(clause: Any) -> bool:
    """Whether ``clause`` reads only its row's columns and bound values (no subquery at all):
    every database can answer an OR of such branches with one index per branch (SQLite's
    multi-index OR, PostgreSQL's bitmap OR)."""
    if isinstance(clause, (KeyIn, Exists, ScalarSelect, SelectBase, FromClause)):
        return False
    return all(subquery_free(child) for child in clause.get_children())


class RowsIn(ColumnElement[bool]):
    """``entity.key IN (select)``, where ``select`` lists keys of existing rows (see the module
    docstring). ``entity`` and ``entity_key`` are kept for the compiler that may skip the related
    table; they do not change the SQL (the cache key is the column and the select)."""

    type = sa.Boolean()
    inherit_cache = True
    _is_implicitly_boolean = True
    _traverse_internals = [
        ("column", sa.sql.visitors.InternalTraversal.dp_clauseelement),
        ("select", sa.sql.visitors.InternalTraversal.dp_clauseelement),
    ]

    def __init__(self, entity: Any, key: str, select: Any) -> None:
        self.entity = entity
        self.entity_key = key
        self.column = getattr(entity, key).__clause_element__()
        self.select = select

    @property
    def _from_objects(self) -> list[Any]:
        return self.column._from_objects  # type: ignore[no-any-return]


def rows_in(entity: Any, key: str, select: Any) -> ColumnElement[bool]:
    """``entity.key IN (select)``, ``select`` listing keys of rows of ``entity``'s table."""
    return RowsIn(entity, key, select)


@compiles(RowsIn)
def _rows_in(element: RowsIn, compiler: Any, **kw: Any) -> str:
    return compiler.process(element.column.in_(element.select), **kw)  # type: ignore[no-any-return]
