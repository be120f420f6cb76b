"""Simplification of rule trees, driven by tables of three-valued identities.

The identities hold in SQL's three-valued logic (see :mod:`bastion.rules.nodes`), so a simplified
rule gives the same answer as the original for every input, NULLs included:

=====================  ===========  ====================================================
node                   constant     effect
=====================  ===========  ====================================================
``And``                ``ALLOW``    identity: dropped            (A ∩ everything = A)
``And``                ``DENY``     absorbing: the whole is DENY (A ∩ ∅ = ∅)
``Or``                 ``DENY``     identity: dropped            (A ∪ ∅ = A)
``Or``                 ``ALLOW``    absorbing: the whole is ALLOW
``And()``/``Or()``     (empty)      the identity: ALLOW / DENY
``Not``                constant     ALLOW ↔ DENY, UNKNOWN stays UNKNOWN
``Not(Not(x))``                     ``x`` (¬¬UNKNOWN = UNKNOWN)
=====================  ===========  ====================================================

``UNKNOWN`` is neither identity nor absorbing for ``And``/``Or`` and stays in the tree. Nested
``And``/``Or`` of the same kind are flattened, and repeated items dropped (both idempotent).
A ``Related`` whose inner rule is ``DENY`` is ``DENY`` (no related object can satisfy it).
"""

from __future__ import annotations

from collections.abc import Callable

from bastion.rules.nodes import ALLOW, DENY, UNKNOWN, And, Const, Not, Or, Related, Rule

__all__ = ["ABSORBING", "IDENTITY", "NEGATION", "simplify"]

#: For ``And``/``Or``: the constant that is dropped from the items.
IDENTITY: dict[type[Rule], Const] = {And: ALLOW, Or: DENY}
#: For ``And``/``Or``: the constant that decides the whole node.
ABSORBING: dict[type[Rule], Const] = {And: DENY, Or: ALLOW}
#: ``Not`` of a constant.
NEGATION: dict[Const, Const] = {ALLOW: DENY, DENY: ALLOW, UNKNOWN: UNKNOWN}


def _simplify_junction(node: Rule) -> Rule:
    assert isinstance(node, (And, Or))  # dispatch guarantees it
    kind = type(node)
    items: list[Rule] = []
    for child in map(simplify, node.items):
        parts = child.items if type(child) is kind else (child,)
        for part in parts:
            if part == ABSORBING[kind]:
                return part
            if part != IDENTITY[kind] and part not in items:
                items.append(part)
    if not items:
        return IDENTITY[kind]
    return items[0] if len(items) == 1 else kind(tuple(items))


def _simplify_not(node: Rule) -> Rule:
    assert isinstance(node, Not)
    inner = simplify(node.item)
    if isinstance(inner, Const):
        return NEGATION[inner]
    if isinstance(inner, Not):
        return inner.item
    return Not(inner)


def _simplify_related(node: Rule) -> Rule:
    assert isinstance(node, Related)
    where = simplify(node.where)
    if where in (DENY, UNKNOWN):
        return DENY  # EXISTS needs a TRUE row
    return Related(node.scope, node.name, where)


_SIMPLIFIERS: dict[type[Rule], Callable[[Rule], Rule]] = {
    And: _simplify_junction,
    Or: _simplify_junction,
    Not: _simplify_not,
    Related: _simplify_related,
}


def simplify(rule: Rule) -> Rule:
    """Return an equivalent, smaller rule (same answer for every input, NULLs included)."""
    fn = _SIMPLIFIERS.get(type(rule))
    return fn(rule) if fn else rule
