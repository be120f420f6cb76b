"""``make_link``: KegBouncer's many-to-many link table builder."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from bastion.errors import InvalidArgument

__all__ = ["TableConstructor", "as_column", "link_columns", "make_link"]

#: ``table_constructor(name, *columns)``: ``op.create_table``, ``db.Table``, a ``functools.partial``
#: of ``sa.Table`` with a MetaData ...
TableConstructor = Callable[..., Any]


def as_column(column: Any) -> sa.Column[Any]:
    """A ``Column`` from a ``Column`` or a mapped attribute (``User.id``)."""
    if isinstance(column, sa.Column):
        return column
    columns = getattr(getattr(column, "property", None), "columns", None)
    if columns and isinstance(columns[0], sa.Column):
        return columns[0]
    raise InvalidArgument(f"expected a Column or a mapped column attribute, got {column!r}")


def link_columns(
    from_column_name: str,
    from_type: Any,
    from_ref: Any,
    to_column_name: str,
    to_type: Any,
    to_ref: Any,
) -> list[sa.Column[Any]]:
    """The two columns of a link table: NOT NULL, primary key, ``ON DELETE CASCADE``."""
    return [
        sa.Column(
            name,
            type_,
            sa.ForeignKey(ref, ondelete="CASCADE"),
            nullable=False,
            primary_key=True,
        )
        for name, type_, ref in (
            (from_column_name, from_type, from_ref),
            (to_column_name, to_type, to_ref),
        )
    ]


def make_link(
    name: str,
    from_column_name: str,
    from_column: Any,
    to_column_name: str,
    to_column: Any,
    table_constructor: TableConstructor | None = None,
) -> Any:
    """Makes a many-to-many linking table named ``name`` with columns named ``from_column_name``
    and ``to_column_name`` linking ``from_column`` and ``to_column`` as ``ForeignKey``\\ s
    (``ON DELETE CASCADE``); both columns form the primary key.

    ``from_column``/``to_column`` are ``Column`` objects or mapped attributes. ``table_constructor``
    is called as ``table_constructor(name, *columns)``: ``op.create_table`` in a migration. By
    default (KegBouncer used Keg's ``db.Table``) the table is added to the MetaData of
    ``from_column``'s table, or to Keg's ``db`` when ``from_column`` has no table yet."""
    left, right = as_column(from_column), as_column(to_column)
    columns = link_columns(from_column_name, left.type, left, to_column_name, right.type, right)
    return (table_constructor or _default_constructor(left))(name, *columns)


def _default_constructor(column: sa.Column[Any]) -> TableConstructor:
    table = getattr(column, "table", None)
    if isinstance(table, sa.Table):
        metadata = table.metadata
        return lambda name, *columns: sa.Table(name, metadata, *columns)
    try:
        from keg.db import db  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        raise InvalidArgument(
            f"{column!r} belongs to no table yet: pass table_constructor= (e.g. op.create_table)"
        ) from None
    return db.Table  # type: ignore[no-any-return, unused-ignore]
