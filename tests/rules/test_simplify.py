"""bastion.rules.simplify: every identity of the module's table, and meaning preserved in 3VL.

The second half checks the simplifier against an independent three-valued evaluator written
here: every small tree over the constants, two free variables (each TRUE, FALSE or UNKNOWN) and a
relationship whose related objects carry a TRUE/FALSE/UNKNOWN flag gives the same answer
before and after simplification, and the same answer through ``to_python``.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator, Sequence
from types import SimpleNamespace
from typing import Any

import pytest

from bastion.rules.nodes import (
    ALLOW,
    DENY,
    UNKNOWN,
    And,
    Attr,
    Compare,
    Const,
    Context,
    In,
    IsNull,
    Literal,
    Not,
    Or,
    Related,
    Rule,
    Same,
)
from bastion.rules.simplify import ABSORBING, IDENTITY, NEGATION, simplify
from bastion.rules.to_python import to_python

# free boolean variables: a context value compared with TRUE is that value, NULL included
X = Compare(Context("x"), "==", Literal(True))
Y = Compare(Context("y"), "==", Literal(True))
# a leaf that reads the related object (`it.flag`)
FLAG = Compare(Attr("it", "flag"), "==", Literal(True))


def rel(where: Rule) -> Related:
    return Related("target", "items", where)


# (rule, simplified)
TABLE: list[tuple[Rule, Rule]] = [
    # And: ALLOW is the identity, DENY absorbs
    (And((ALLOW, X)), X),
    (And((X, ALLOW)), X),
    (And((X, DENY)), DENY),
    (And((DENY, X)), DENY),
    (And((ALLOW, ALLOW)), ALLOW),
    (And((ALLOW, DENY)), DENY),
    (And((X, UNKNOWN, DENY)), DENY),
    # And: UNKNOWN is neither, and stays
    (And((X, UNKNOWN)), And((X, UNKNOWN))),
    (And((UNKNOWN, ALLOW)), UNKNOWN),
    (And((UNKNOWN, DENY)), DENY),
    (And((UNKNOWN, UNKNOWN)), UNKNOWN),
    # Or: DENY is the identity, ALLOW absorbs
    (Or((DENY, X)), X),
    (Or((X, DENY)), X),
    (Or((X, ALLOW)), ALLOW),
    (Or((ALLOW, X)), ALLOW),
    (Or((DENY, DENY)), DENY),
    (Or((DENY, ALLOW)), ALLOW),
    (Or((X, UNKNOWN, ALLOW)), ALLOW),
    (Or((X, UNKNOWN)), Or((X, UNKNOWN))),
    (Or((UNKNOWN, DENY)), UNKNOWN),
    (Or((UNKNOWN, ALLOW)), ALLOW),
    # empty junctions are their identity
    (And(()), ALLOW),
    (Or(()), DENY),
    # one item is that item
    (And((X,)), X),
    (Or((X,)), X),
    # flattening of the same kind (nested at any position)
    (And((X, And((Y, FLAG)))), And((X, Y, FLAG))),
    (And((And((X, Y)), FLAG)), And((X, Y, FLAG))),
    (Or((Or((X, Y)), Or((FLAG, UNKNOWN)))), Or((X, Y, FLAG, UNKNOWN))),
    (And((And((And((X,)),)),)), X),
    # ... but not across kinds
    (And((X, Or((Y, FLAG)))), And((X, Or((Y, FLAG))))),
    (Or((X, And((Y, FLAG)))), Or((X, And((Y, FLAG))))),
    # de-duplication (idempotence), first occurrence kept
    (And((X, X)), X),
    (Or((Y, X, Y)), Or((Y, X))),
    (And((X, And((X, Y)))), And((X, Y))),
    (Or((UNKNOWN, UNKNOWN, X)), Or((UNKNOWN, X))),
    # a simplified child is flattened and absorbed like a written one
    (Or((And((X, DENY)), Y)), Y),
    (And((Or((X, ALLOW)), Y)), Y),
    (And((Not(DENY), X)), X),
    # Not of constants
    (Not(ALLOW), DENY),
    (Not(DENY), ALLOW),
    (Not(UNKNOWN), UNKNOWN),
    (Not(And((X, DENY))), ALLOW),
    # double negation
    (Not(Not(X)), X),
    (Not(Not(Not(X))), Not(X)),
    (Not(Not(UNKNOWN)), UNKNOWN),
    (Not(Not(And((X, ALLOW)))), X),
    (Not(X), Not(X)),
    # Related: EXISTS needs a TRUE row
    (rel(DENY), DENY),
    (rel(UNKNOWN), DENY),
    (rel(And((FLAG, DENY))), DENY),
    (rel(And((FLAG, UNKNOWN))), rel(And((FLAG, UNKNOWN)))),
    (rel(ALLOW), rel(ALLOW)),
    (rel(And((ALLOW, FLAG))), rel(FLAG)),
    (Not(rel(DENY)), ALLOW),
    (Or((rel(UNKNOWN), X)), X),
    (rel(rel(DENY)), DENY),
    # leaves are returned as they are
    (X, X),
    (ALLOW, ALLOW),
    (In(Attr("target", "a"), Literal(())), In(Attr("target", "a"), Literal(()))),
    (IsNull(Attr("target", "a")), IsNull(Attr("target", "a"))),
    (Same("target"), Same("target")),
]


@pytest.mark.parametrize(("rule", "expected"), TABLE, ids=[str(r) for r, _ in TABLE])
def test_identity(rule: Rule, expected: Rule) -> None:
    assert simplify(rule) == expected


@pytest.mark.parametrize(("rule", "expected"), TABLE, ids=[str(r) for r, _ in TABLE])
def test_simplify_is_idempotent(rule: Rule, expected: Rule) -> None:
    assert simplify(simplify(rule)) == simplify(rule)


def test_the_tables_match_the_docstring() -> None:
    identity, absorbing = {And: ALLOW, Or: DENY}, {And: DENY, Or: ALLOW}
    assert identity == IDENTITY
    assert absorbing == ABSORBING
    assert {ALLOW: DENY, DENY: ALLOW, UNKNOWN: UNKNOWN} == NEGATION


def test_unknown_leaves_are_not_dropped() -> None:
    # And(x, UNKNOWN) is FALSE when x is FALSE and UNKNOWN otherwise: neither x nor UNKNOWN
    assert simplify(And((X, UNKNOWN))) not in (X, UNKNOWN, DENY)
    assert simplify(Or((X, UNKNOWN))) not in (X, UNKNOWN, ALLOW)


def test_simplify_does_not_mutate() -> None:
    rule = And((X, And((ALLOW, Y))))
    before = repr(rule)
    simplify(rule)
    assert repr(rule) == before


# -- meaning preserved: an independent three-valued evaluator -----------------------------

TV = (True, False, None)


def _and(values: Sequence[bool | None]) -> bool | None:
    if False in values:
        return False
    return None if None in values else True


def _or(values: Sequence[bool | None]) -> bool | None:
    if True in values:
        return True
    return None if None in values else False


def evaluate(rule: Rule, env: dict[str, Any], it: Any = None) -> bool | None:
    """SQL's three-valued logic, written out plainly for the shapes these trees use."""
    if isinstance(rule, Const):
        return rule.value
    if isinstance(rule, Compare):  # X, Y or FLAG, all `<value> == TRUE`
        value = env[rule.left.name] if isinstance(rule.left, Context) else it.flag
        return None if value is None else value is True
    if isinstance(rule, And):
        return _and([evaluate(i, env, it) for i in rule.items])
    if isinstance(rule, Or):
        return _or([evaluate(i, env, it) for i in rule.items])
    if isinstance(rule, Not):
        inner = evaluate(rule.item, env, it)
        return None if inner is None else not inner
    if isinstance(rule, Related):  # EXISTS: some related row makes the body TRUE
        return any(evaluate(rule.where, env, item) is True for item in env["items"])
    raise AssertionError(rule)


def _leaves(inside_related: bool) -> list[Rule]:
    leaves: list[Rule] = [ALLOW, DENY, UNKNOWN, X, Y]
    return [*leaves, FLAG] if inside_related else leaves


def trees(depth: int, inside_related: bool = False) -> Iterator[Rule]:
    """Every tree up to ``depth`` whose junctions have 0 to 2 items, at least one of them a leaf
    (both sides of every identity are still covered; the full square grows too fast)."""
    leaves = _leaves(inside_related)
    yield from leaves
    if depth == 0:
        return
    smaller = list(trees(depth - 1, inside_related))
    for item in smaller:
        yield Not(item)
    for kind in (And, Or):
        yield kind(())
        for a, b in itertools.product(smaller, leaves):
            yield kind((a, b))
            if a not in leaves:
                yield kind((b, a))
    for item in trees(depth - 1, inside_related=True):
        yield rel(item)


def random_tree(rng: random.Random, depth: int, inside_related: bool = False) -> Rule:
    if depth == 0 or rng.random() < 0.25:
        return rng.choice(_leaves(inside_related))
    shape = rng.choice(("and", "or", "not", "related"))
    if shape == "not":
        return Not(random_tree(rng, depth - 1, inside_related))
    if shape == "related":
        return rel(random_tree(rng, depth - 1, inside_related=True))
    kind = And if shape == "and" else Or
    n = rng.randint(0, 4)
    return kind(tuple(random_tree(rng, depth - 1, inside_related) for _ in range(n)))


ITEM_SETS: list[list[SimpleNamespace]] = [
    [],
    [SimpleNamespace(flag=True)],
    [SimpleNamespace(flag=False)],
    [SimpleNamespace(flag=None)],
    [SimpleNamespace(flag=None), SimpleNamespace(flag=False)],
    [SimpleNamespace(flag=False), SimpleNamespace(flag=True)],
]
ENVIRONMENTS = [
    {"x": x, "y": y, "items": items}
    for x, y in itertools.product(TV, repeat=2)
    for items in ITEM_SETS
]


def _check_preserved(rule: Rule) -> None:
    simple = simplify(rule)
    original_predicate, simple_predicate = to_python(rule), to_python(simple)
    for env in ENVIRONMENTS:
        expected = evaluate(rule, env)
        assert evaluate(simple, env) is expected, (rule, simple, env)
        target, context = SimpleNamespace(items=env["items"]), {"x": env["x"], "y": env["y"]}
        assert original_predicate(None, target, context, None) is expected, (rule, env)
        assert simple_predicate(None, target, context, None) is expected, (simple, env)


def _check_shape(rule: Rule) -> None:
    """A simplified tree has no identity/absorbing constant in a junction, no nested junction of
    the same kind, no repeated item, no double negation and no Not/Related of a constant."""
    for node in _walk(rule):
        if isinstance(node, (And, Or)):
            kind = type(node)
            assert len(node.items) >= 2, node
            assert IDENTITY[kind] not in node.items, node
            assert ABSORBING[kind] not in node.items, node
            assert not any(type(i) is kind for i in node.items), node
            assert len(set(node.items)) == len(node.items), node
        if isinstance(node, Not):
            assert not isinstance(node.item, (Not, Const)), node
        if isinstance(node, Related):
            assert node.where not in (DENY, UNKNOWN), node


def _walk(rule: Rule) -> Iterator[Rule]:
    yield rule
    for child in rule.children():
        yield from _walk(child)


def test_every_tree_of_depth_two_keeps_its_meaning() -> None:
    count = 0
    for rule in trees(2):
        _check_preserved(rule)
        _check_shape(simplify(rule))
        count += 1
    assert count > 1400  # the enumeration really ran


def test_random_deeper_trees_keep_their_meaning() -> None:
    rng = random.Random(20261122)
    for _ in range(1000):
        rule = random_tree(rng, depth=4)
        _check_preserved(rule)
        _check_shape(simplify(rule))
