"""Check a rule against the classes it will run on, before it is ever evaluated.

``validate(rule, subject_type, target_type)`` walks the tree with the mapped class of every scope in
hand and raises a :class:`~bastion.errors.PolicyError` for anything that could give a wrong answer
or fail later: attributes the class does not have, relationships used as values, columns used as
relationships, ``it`` outside ``.any()``/``.has()``, literals of the wrong type for their column,
ordering comparisons with ``None``, and target attributes in a rule that has no target.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.orm import ColumnProperty, Mapper, RelationshipProperty

from bastion.errors import RuleNotTranslatable, UnknownAttribute, UnmappedClass
from bastion.rules.nodes import (
    Ancestors,
    Attr,
    Compare,
    Context,
    In,
    IsNull,
    Literal,
    Operand,
    Related,
    Reroot,
    Rule,
    Same,
)

__all__ = ["mapper_of", "validate"]

_Scopes = dict[str, Any]  # scope -> Mapper | type | None


def mapper_of(cls: Any) -> Mapper[Any] | None:
    """The SQLAlchemy mapper of a class or alias, or None when it is not mapped."""
    info = sa_inspect(cls, raiseerr=False)
    if info is None:
        return None
    return getattr(info, "mapper", None)


def validate(rule: Rule, subject_type: type | None, target_type: type | None) -> None:
    """Raise a ``PolicyError`` if ``rule`` cannot run for these subject and target types."""
    target_mapper = None
    if target_type is not None:
        target_mapper = mapper_of(target_type)
        if target_mapper is None:
            raise UnmappedClass(target_type)
    _walk(rule, {"subject": subject_type, "target": target_mapper, "it": None}, rule)


#: ``(ctx name, column property, as a collection?)`` found by :func:`context_columns`
_Found = list[tuple[str, ColumnProperty[Any], bool]]


def _walk(node: Rule, scopes: _Scopes, top: Rule, found: _Found | None = None) -> None:
    """Check ``node`` (and below); with ``found``, also collect the ``ctx`` values compared
    with columns (:func:`context_columns`)."""
    if isinstance(node, Compare):
        _check_compare(node, scopes, top, found)
    elif isinstance(node, In):
        prop = _operand(node.left, scopes, top)
        if isinstance(node.values, Attr) and node.values.scope != "subject":
            raise RuleNotTranslatable(
                top,
                f"in_() takes a literal list, a subject attribute or ctx value, not {node.values}",
            )
        if _operand(node.values, scopes, top) is not None:
            # Fix: a subject *column* is one value: Python iterated it (a string's characters,
            # TypeError for an int), SQL raised. A collection it must be.
            raise RuleNotTranslatable(
                top, f"in_({node.values}) reads one column value, not a collection: use =="
            )
        if prop is not None:
            _check_collation(prop, top)
            if found is not None and isinstance(node.values, Context):
                found.append((node.values.name, prop, True))
        if prop is not None and isinstance(node.values, Literal):
            for value in node.values.value:
                _check_literal(prop, value, top)
    elif isinstance(node, IsNull):
        _operand(node.operand, scopes, top)
    elif isinstance(node, Related):
        related = _related_mapper(node, scopes, top)
        _walk(node.where, {**scopes, "it": related}, top, found)
        return
    elif isinstance(node, Reroot):
        related = _related_mapper(Related(node.scope, node.name, node.rule), scopes, top)
        _walk(node.rule, {"subject": scopes["subject"], "target": related, "it": None}, top, found)
        return
    elif isinstance(node, Ancestors):
        _check_tree(node, scopes, top)
        _walk(node.rule, {**scopes, "it": None}, top, found)
        return
    elif isinstance(node, Same):
        _check_same(node, scopes, top)
    else:  # node kinds added by other modules: check what they read
        for operand in node.operands():
            prop = _operand(operand, scopes, top)
            column_type = prop.columns[0].type if prop is not None and prop.columns else None
            enum_column = isinstance(column_type, sa.Enum) and column_type.enum_class is not None
            if prop is not None and enum_column:
                # Fix: a role read from an Enum column is an enum member in Python and its
                # stored name in SQL: compared with role names, the answers differed
                members = column_type.enum_class.__name__  # type: ignore[union-attr]
                raise RuleNotTranslatable(
                    top,
                    f"{prop.key} is an Enum column: its Python values are {members} members, "
                    "its SQL values strings; store the names in a String column",
                )
    for child in node.children():
        _walk(child, scopes, top, found)


def _scope_class(scope: str, scopes: _Scopes, top: Rule) -> Any:
    owner = scopes[scope]
    if owner is None and scope != "subject":
        where = (
            "outside .any()/.has()" if scope == "it" else "in a rule registered without a target"
        )
        raise RuleNotTranslatable(top, f"'{scope}' is used {where}")
    return owner


def _operand(operand: Operand, scopes: _Scopes, top: Rule) -> ColumnProperty[Any] | None:
    """Check an operand; return the column property it reads, if it reads one."""
    if isinstance(operand, (Literal, Context)):
        return None
    owner = _scope_class(operand.scope, scopes, top)
    if operand.scope == "subject":
        return _subject_attribute(owner, operand.name)
    prop = owner.attrs.get(operand.name)
    if isinstance(prop, ColumnProperty):
        return prop
    reason = (
        "is a relationship: use .has()/.any(), or == subject"
        if isinstance(prop, RelationshipProperty)
        else "is not a mapped column (only mapped columns have a SQL form)"
    )
    raise UnknownAttribute(owner.class_, operand.name, reason)


def _subject_attribute(cls: Any, name: str) -> ColumnProperty[Any] | None:
    if cls is None or cls is object:
        return None  # any subject: nothing to check against
    mapper = mapper_of(cls)
    if mapper is not None:
        prop = mapper.attrs.get(name)
        if isinstance(prop, ColumnProperty):
            return prop
        if prop is not None or hasattr(cls, name):
            return None
        raise UnknownAttribute(cls, name)
    known = _declared_names(cls)
    if known is not None and name not in known and not hasattr(cls, name):
        raise UnknownAttribute(cls, name)
    return None


def _declared_names(cls: type) -> set[str] | None:
    """Attribute names an unmapped class declares, or None when it declares none we can see."""
    names: set[str] = set()
    for klass in cls.__mro__:
        names.update(getattr(klass, "__annotations__", {}))
        slots = getattr(klass, "__slots__", ())
        names.update((slots,) if isinstance(slots, str) else slots)
    if dataclasses.is_dataclass(cls):
        names.update(f.name for f in dataclasses.fields(cls))
    return names or None


def _check_compare(node: Compare, scopes: _Scopes, top: Rule, found: _Found | None) -> None:
    left, right = _operand(node.left, scopes, top), _operand(node.right, scopes, top)
    for prop, other in ((left, node.right), (right, node.left)):
        if prop is not None:
            _check_collation(prop, top)
            if found is not None and isinstance(other, Context):
                found.append((other.name, prop, False))
        if prop is not None and isinstance(other, Literal):
            _check_literal(prop, other.value, top)
    if left is not None and right is not None:
        _check_columns(left, right, top)
    if node.op not in ("==", "!=") and any(
        isinstance(o, Literal) and o.value is None for o in (node.left, node.right)
    ):
        raise RuleNotTranslatable(top, f"{node} compares with None: that is always UNKNOWN")


def _check_literal(prop: ColumnProperty[Any], value: Any, top: Rule) -> None:
    problem = value_mismatch(prop, value)
    if problem is not None:
        raise RuleNotTranslatable(top, f"the literal {problem}")


def value_mismatch(prop: ColumnProperty[Any], value: Any) -> str | None:
    """Why ``value`` cannot be compared with the column of ``prop`` alike in Python and SQL
    (``"'1' is a str, but level holds int values"``), or None when it can."""
    if value is None:
        return None
    column_type = prop.columns[0].type if prop.columns else None
    try:
        expected = column_type.python_type  # type: ignore[union-attr]
    except (NotImplementedError, AttributeError):
        return None
    ok = isinstance(value, expected) or (expected is float and isinstance(value, int))
    if expected is int and isinstance(value, bool):
        ok = False
    holds = f"{prop.key} holds {expected.__name__} values"
    if not ok:
        return f"{value!r} is a {type(value).__name__}, but {holds}"
    # Fix: a datetime is a date (a Date column compared with a datetime: never equal in
    # Python, equal in SQL), and an aware datetime is no naive one (Python raised TypeError)
    if expected is datetime.date and isinstance(value, datetime.datetime):
        return f"{value!r} is a datetime, but {holds}"
    aware = isinstance(value, datetime.datetime) and value.tzinfo is not None
    if (
        isinstance(value, datetime.datetime)
        and isinstance(column_type, sa.DateTime)
        and aware != bool(column_type.timezone)
    ):
        was = "timezone-aware" if aware else "naive"
        kind = "timezone-aware" if column_type.timezone else "naive"
        return f"{value!r} is {was}, but {prop.key} holds {kind} datetimes"
    return None


def _check_collation(prop: ColumnProperty[Any], top: Rule) -> None:
    """Fix: a column with a collation (``COLLATE NOCASE``) compares in SQL unlike Python's
    exact comparison: the answer depended on whether the object was loaded."""
    column_type = prop.columns[0].type if prop.columns else None
    collation = getattr(column_type, "collation", None)
    if collation is not None:
        raise RuleNotTranslatable(
            top,
            f"{prop.key} has the collation {collation!r}: SQL would compare it unlike Python "
            "(exactly); compare a column without one, or a lower()-ed copy",
        )


def _kind(prop: ColumnProperty[Any]) -> str | None:
    try:
        python_type = prop.columns[0].type.python_type
    except (NotImplementedError, AttributeError, IndexError):
        return None
    for kind in (bool, int, float, decimal.Decimal, str, datetime.datetime, datetime.date):
        if issubclass(python_type, kind):
            return kind.__name__
    return python_type.__name__


#: kinds Python and SQL compare alike even though they differ
_COMPATIBLE = {frozenset({"int", "float"}), frozenset({"int", "Decimal"})}


def _check_columns(left: ColumnProperty[Any], right: ColumnProperty[Any], top: Rule) -> None:
    """Fix: two columns of different kinds were compared (``1 == '1'`` is False in Python and
    true in SQLite; a float and a Decimal likewise): refused, as a literal of the wrong type is."""
    a, b = _kind(left), _kind(right)
    if a is None or b is None or a == b or frozenset({a, b}) in _COMPATIBLE:
        return
    raise RuleNotTranslatable(
        top,
        f"{left.key} holds {a} values and {right.key} {b} values: Python and SQL compare them "
        "differently",
    )


def _related_mapper(node: Related, scopes: _Scopes, top: Rule) -> Mapper[Any]:
    owner = _scope_class(node.scope, scopes, top)
    if node.scope == "subject":
        mapper = mapper_of(owner) if owner is not None else None
        if mapper is None:
            raise RuleNotTranslatable(
                top, f"subject.{node.name}: the subject type {owner!r} must be a mapped class"
            )
        owner = mapper
    prop = owner.attrs.get(node.name)
    if not isinstance(prop, RelationshipProperty):
        raise UnknownAttribute(owner.class_, node.name, "is not a relationship")
    return prop.mapper


def _check_same(node: Same, scopes: _Scopes, top: Rule) -> None:
    subject_type = scopes["subject"]
    if subject_type is None or subject_type is object or mapper_of(subject_type) is None:
        raise RuleNotTranslatable(
            top,
            f"'{node}' needs a mapped subject type (to compare primary keys), not {subject_type!r}",
        )
    if node.scope != "subject":
        _scope_class(node.scope, scopes, top)


def _check_tree(node: Ancestors, scopes: _Scopes, top: Rule) -> None:
    owner = _scope_class("target", scopes, top)
    prop = owner.attrs.get(node.parent)
    if not isinstance(prop, RelationshipProperty) or prop.uselist:
        raise UnknownAttribute(owner.class_, node.parent, "is not a many-to-one relationship")
    if prop.mapper.base_mapper is not owner.base_mapper:
        raise RuleNotTranslatable(top, f"{node.parent!r} does not lead to the same class (a tree)")
    if len(owner.primary_key) != 1 or len(prop.local_remote_pairs) != 1:
        raise RuleNotTranslatable(top, "trees need a single-column primary and foreign key")


def context_columns(
    rule: Rule, subject_type: type | None, target_type: type | None
) -> tuple[tuple[str, ColumnProperty[Any], bool], ...]:
    """``(ctx name, column property, as a collection?)`` for every ``ctx`` value ``rule``
    compares with a column (``target.level <= ctx.level``, ``target.org_id.in_(ctx.orgs)``):
    the types a call's context values must have (``Authorizer`` checks them per call). The
    registration walk, collecting (the rule was validated when it was registered)."""
    found: _Found = []
    target_mapper = None if target_type is None else mapper_of(target_type)
    _walk(rule, {"subject": subject_type, "target": target_mapper, "it": None}, rule, found)
    return tuple(found)
