"""Primary keys taken from URLs, checked before they reach the database.

A key that cannot be one of the model's (not a number for an integer key, out of the column's
range, not a UUID) is answered like a missing row: the integrations turn ``None`` into 404.
Without this check the database was asked anyway, and answered with an error: SQLite's driver
raised ``OverflowError`` for an integer beyond 64 bits, PostgreSQL ``DataError`` for ``integer out
of range`` or ``invalid input syntax`` (and aborted the request's transaction): a 500 where the
README promises 404.
"""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy import inspect as sa_inspect

__all__ = ["coerce_key"]


def coerce_key(model: type[Any], ident: Any, dialect: str) -> Any:
    """``ident`` as ``model``'s primary key (a tuple for a composite key), or None when it
    cannot be one."""
    columns = list(sa_inspect(model).mapper.primary_key)
    values = ident if isinstance(ident, tuple) else (ident,)
    if len(values) != len(columns):
        return None
    out = []
    for column, value in zip(columns, values, strict=True):
        coerced = _coerce(column.type, value, dialect)
        if coerced is None:
            return None
        out.append(coerced)
    return tuple(out) if isinstance(ident, tuple) else out[0]


def _coerce(column_type: Any, value: Any, dialect: str) -> Any:
    if value is None:
        return None
    if isinstance(column_type, sa.Integer):
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            return None
        try:
            number = int(value)
        except (TypeError, ValueError):
            return None
        bits = _integer_bits(column_type, dialect)
        return number if -(2 ** (bits - 1)) <= number < 2 ** (bits - 1) else None
    if isinstance(column_type, sa.Uuid):
        if isinstance(value, uuid.UUID):
            return value
        try:
            return uuid.UUID(str(value))
        except ValueError:
            return None
    return value


def _integer_bits(column_type: Any, dialect: str) -> int:
    if isinstance(column_type, sa.SmallInteger):
        return 16
    if isinstance(column_type, sa.BigInteger) or dialect != "postgresql":
        return 64  # SQLite's integers are 64-bit whatever the declared type
    return 32
