"""bastion.rules.nodes: frozen, hashable nodes; no truth value; readable str; left-flattening."""

from __future__ import annotations

import dataclasses

import pytest

from bastion.rules.nodes import (
    ALLOW,
    COMPARISON_OPERATORS,
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
    junction,
)

X = Compare(Attr("target", "x"), "==", Literal(1))
Y = Compare(Attr("subject", "y"), "<", Context("c"))
Z = IsNull(Attr("it", "z"))

NODES: list[Rule] = [
    ALLOW,
    DENY,
    UNKNOWN,
    X,
    Y,
    Z,
    IsNull(Attr("target", "z"), negated=True),
    In(Attr("target", "x"), Literal((1, 2))),
    In(Attr("target", "x"), Attr("subject", "xs")),
    And((X, Y)),
    Or((X, Y)),
    Not(X),
    Related("target", "tags", Z),
    Same("target"),
]


def test_constants() -> None:
    assert (ALLOW.value, DENY.value, UNKNOWN.value) == (True, False, None)
    assert (str(ALLOW), str(DENY), str(UNKNOWN)) == ("ALLOW", "DENY", "UNKNOWN")
    assert Const(True) == ALLOW


def test_comparison_operators_are_the_sql_six() -> None:
    assert COMPARISON_OPERATORS == ("==", "!=", "<", "<=", ">", ">=")


@pytest.mark.parametrize("node", NODES, ids=str)
def test_nodes_are_frozen(node: Rule) -> None:
    field = dataclasses.fields(node)[0].name  # type: ignore[arg-type]
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(node, field, None)


@pytest.mark.parametrize("node", NODES, ids=str)
def test_nodes_are_hashable_and_equal_by_value(node: Rule) -> None:
    twin = dataclasses.replace(node)  # type: ignore[type-var]
    assert twin == node
    assert twin is not node or isinstance(node, Const)
    assert hash(twin) == hash(node)
    assert {node: 1}[twin] == 1


@pytest.mark.parametrize("node", NODES, ids=str)
def test_nodes_have_no_truth_value(node: Rule) -> None:
    with pytest.raises(TypeError, match="no truth value"):
        bool(node)


def test_operands_are_hashable_values() -> None:
    assert Attr("target", "x") == Attr("target", "x")
    assert Attr("target", "x") != Attr("subject", "x")
    assert {Context("c"), Context("c"), Literal((1, 2)), Literal((1, 2))} == {
        Context("c"),
        Literal((1, 2)),
    }


def test_children() -> None:
    assert And((X, Y)).children() == (X, Y)
    assert Or((X, Y, Z)).children() == (X, Y, Z)
    assert Not(X).children() == (X,)
    assert Related("target", "tags", Z).children() == (Z,)
    for leaf in (ALLOW, X, Z, Same("it"), In(Attr("target", "x"), Literal(()))):
        assert leaf.children() == ()


@pytest.mark.parametrize(
    ("node", "text"),
    [
        (X, "(target.x == 1)"),
        (Compare(Attr("target", "s"), "!=", Literal("a")), "(target.s != 'a')"),
        (Y, "(subject.y < ctx.c)"),
        (Z, "(it.z == None)"),
        (IsNull(Attr("target", "z"), negated=True), "(target.z != None)"),
        (In(Attr("target", "x"), Literal((1, 2))), "target.x.in_((1, 2))"),
        (In(Attr("target", "x"), Attr("subject", "xs")), "target.x.in_(subject.xs)"),
        (And((X, Y)), "((target.x == 1) & (subject.y < ctx.c))"),
        (Or((X, Y)), "((target.x == 1) | (subject.y < ctx.c))"),
        (Not(X), "~(target.x == 1)"),
        (Related("target", "tags", Z), "target.tags.any((it.z == None))"),
        (Related("target", "owner", Same("it")), "(target.owner == subject)"),
        (Same("target"), "(target == subject)"),
    ],
)
def test_str(node: Rule, text: str) -> None:
    assert str(node) == text


def test_operators_build_nodes() -> None:
    assert And((X, Y)) == X & Y
    assert Or((X, Y)) == X | Y
    assert Not(X) == ~X
    assert And((ALLOW, X)) == True & X
    assert Or((X, DENY)) == X | False


def test_junction_flattens_the_left_operand_of_the_same_kind() -> None:
    assert Or((X, Y, Z)) == X | Y | Z
    assert And((X, Y, Z)) == X & Y & Z
    assert junction(Or, Or((X, Y)), Z) == Or((X, Y, Z))
    # only a left operand of the same kind: other shapes stay as written
    assert Or((And((X, Y)), Z)) == (X & Y) | Z
    assert Or((X, Or((Y, Z)))) == X | (Y | Z)


def test_combining_with_a_non_rule_is_refused() -> None:
    from bastion.errors import RuleNotTranslatable

    with pytest.raises(RuleNotTranslatable):
        X & 1
    with pytest.raises(RuleNotTranslatable):
        None | X
