"""SQL constructs whose best spelling depends on the database.

``key_in(column, select)`` is "the row's key is among these keys". On PostgreSQL it compiles to
``column = ANY(ARRAY(SELECT ...))``: the subquery runs once and the outer table is read through
its primary-key index, where ``column IN (SELECT ...)`` (the spelling elsewhere, and for
composite keys) tends to become a hash semi-join that scans the whole table. Both mean the same
for a non-NULL key.

``rows_in(entity, key, select)`` is ``entity.key IN (select)`` where ``select`` lists keys of rows
that exist in ``entity``'s table (never NULL): the descendants CTE of ``ancestors()``. It
compiles like a plain ``IN``; what it adds is the promise, which lets a many-to-one step that
tests nothing but that key skip the related table (``documents.folder_id`` is among the keys:
no ``EXISTS`` over ``folders`` per document, see ``to_sql._through_foreign_key``).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.elements import ColumnElement, Tuple

__all__ = ["KeyIn", "RowsIn", "key_in", "rows_in"]


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
