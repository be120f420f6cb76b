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
    And,
    Attr,
    Compare,
    Const,
    In,
    IsNull,
    Not,
    Or,
    Related,
    Reroot,
    Rule,
    Same,
)

__all__ = ["target_reads"]

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
