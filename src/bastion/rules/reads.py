"""Which attributes of the target a rule's Python predicate can read.

``check_many`` and ``allowed_actions`` decide every object whose rule inputs are loaded in Python,
and send the others to one query. Trying the predicate on each object of a page of unloaded
objects, only to catch ``NotLoaded`` once per object and action, cost more than the query itself.

:func:`target_reads` names the target attributes (columns and relationships, as keys of the
instance ``__dict__``) through which the predicate reads the target. A persistent object none
of whose named attributes is loaded is *blind*: the predicate's first read of it raises
``NotLoaded``, and everything it reads before that (subject, context, literals) is the same for
every object of the page. So one evaluation answers for every blind object: ``NotLoaded`` (all
go to the query) or the same truth value (decided without reading the target).

That holds only for node kinds whose only access to the target is through those attributes.
Any other kind (a ``Same`` on the target, which compares its identity; a Python or SQL-only
rule; stored grants scoped to the object; a parent walk; kinds registered by other packages)
makes :func:`target_reads` return ``None``: every object is then tried on its own, as before.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm.exc import UnmappedColumnError

from bastion.rules.nodes import (
    Ancestors,
    And,
    Attr,
    Compare,
    Const,
    Deferred,
    In,
    IsNull,
    Not,
    Or,
    Related,
    Reroot,
    Rule,
    Same,
)
from bastion.rules.validate import mapper_of

__all__ = ["related_classes", "target_reads"]

#: node kinds that read nothing but their operands
_OPERAND_ONLY = frozenset({Const, And, Or, Not, Compare, In, IsNull})


def target_reads(rule: Rule, mapper: Any) -> frozenset[str] | None:
    """The ``__dict__`` keys of the target (mapped by ``mapper``) that ``rule`` reads, or None
    when the rule may read the target otherwise (see the module docstring)."""
    keys: set[str] = set()
    stack = [rule]
    while stack:
        node = stack.pop()
        if not _collect(node, mapper, keys):
            return None
        stack.extend(node.children())
    return frozenset(keys)


def _collect(node: Rule, mapper: Any, keys: set[str]) -> bool:
    """Add what ``node`` itself reads of the target to ``keys``; False if it is not known."""
    kind = type(node)
    if isinstance(node, (Related, Reroot)) and kind in (Related, Reroot):
        if node.scope == "target" and not _relationship(node, mapper, keys):
            return False
    elif isinstance(node, Same) and kind is Same:
        # the target's identity is no attribute; Same("it") is read through Related above.
        # Inside a Reroot, "target" is the related object: refused too (conservative).
        if node.scope == "target":
            return False
    elif kind not in _OPERAND_ONLY:
        return False
    for operand in node.operands():
        if isinstance(operand, Attr) and operand.scope == "target":
            if operand.name not in mapper.attrs:  # a Python property: it reads anything
                return False
            keys.add(operand.name)
    return True


def _relationship(node: Related | Reroot, mapper: Any, keys: set[str]) -> bool:
    """A relationship of the target: its key, and for ``target.rel == subject`` also the foreign
    key columns (the predicate compares those when the relationship is not loaded)."""
    prop = mapper.relationships.get(node.name)
    if prop is None:
        return False
    keys.add(node.name)
    if isinstance(node, Related) and node.where == Same("it"):
        for local, _ in prop.local_remote_pairs:
            try:
                keys.add(mapper.get_property_by_column(local).key)
            except UnmappedColumnError:
                return False
    return True


def related_classes(
    rule: Rule, subject_type: type | None, target_type: type | None
) -> frozenset[type] | None:
    """The mapped classes ``rule``'s Python predicate reaches through relationships (of the
    subject, the target and the objects they lead to), or None when that is not known.

    An authorized session (``bastion.sessions``) hides rows of the classes it protects from the
    relationships it loads: a predicate reading such a relationship would decide from a
    partial view, so the Authorizer asks the database instead."""
    found: set[type] = set()
    start: dict[str, type | None] = {"subject": subject_type, "target": target_type, "it": None}
    stack: list[tuple[Rule, dict[str, type | None]]] = [(rule, start)]
    while stack:
        node, scopes = stack.pop()
        kind = type(node)
        if kind is Deferred:
            return None  # (resolved by the policy before a plan is made; unknown here)
        if kind in (Related, Reroot, Ancestors):
            scope = "target" if kind is Ancestors else node.scope  # type: ignore[attr-defined]
            name = node.parent if kind is Ancestors else node.name  # type: ignore[attr-defined]
            related = _related_class(mapper_of, scopes.get(scope), name)
            if related is None:
                return None
            found.add(related)
            if kind is Related:
                inner = {**scopes, "it": related}
            elif kind is Reroot:
                inner = {"subject": scopes["subject"], "target": related, "it": None}
            else:
                inner = scopes
            stack.extend((child, inner) for child in node.children())
            continue
        for operand in node.operands():
            if isinstance(operand, Attr):
                owner = scopes.get(operand.scope)
                mapper = None if owner is None else mapper_of(owner)
                prop = None if mapper is None else mapper.relationships.get(operand.name)
                if prop is not None:
                    found.add(prop.mapper.class_)
        stack.extend((child, scopes) for child in node.children())
    return frozenset(found)


def _related_class(mapper_of: Any, owner: type | None, name: str) -> type | None:
    mapper = None if owner is None else mapper_of(owner)
    prop = None if mapper is None else mapper.relationships.get(name)
    return None if prop is None else prop.mapper.class_
