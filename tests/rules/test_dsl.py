"""bastion.rules.dsl: every spelling of the module docstring builds the expected nodes."""

from __future__ import annotations

from typing import Any

import pytest

from bastion import RuleNotTranslatable
from bastion.rules import dsl
from bastion.rules.dsl import AttrExpr, as_rule, ctx, it, subject, target
from bastion.rules.nodes import (
    ALLOW,
    DENY,
    And,
    Attr,
    Compare,
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


def tattr(name: str) -> Attr:
    return Attr("target", name)


def sattr(name: str) -> Attr:
    return Attr("subject", name)


def iattr(name: str) -> Attr:
    return Attr("it", name)


def _doc_spellings() -> list[tuple[str, Rule]]:
    """The examples of dsl.py's docstring, each with the node it must build."""
    return [
        ("target.is_public", Compare(tattr("is_public"), "==", Literal(True))),
        ("target.owner_id == subject.id", Compare(tattr("owner_id"), "==", sattr("id"))),
        (
            'target.status.in_(["draft", "review"])',
            In(tattr("status"), Literal(("draft", "review"))),
        ),
        ("target.org_id.in_(subject.org_ids)", In(tattr("org_id"), sattr("org_ids"))),
        ("target.deleted_at == None", IsNull(tattr("deleted_at"))),
        ("target.owner == subject", Related("target", "owner", Same("it"))),
        (
            'target.org.has(it.plan == "pro")',
            Related("target", "org", Compare(iattr("plan"), "==", Literal("pro"))),
        ),
        (
            'target.tags.any(it.name == "urgent")',
            Related("target", "tags", Compare(iattr("name"), "==", Literal("urgent"))),
        ),
        (
            "target.org.has(members=subject)",
            Related("target", "org", Related("it", "members", Same("it"))),
        ),
        (
            'subject.memberships.any((it.org_id == target.org_id) & (it.role == "admin"))',
            Related(
                "subject",
                "memberships",
                And(
                    (
                        Compare(iattr("org_id"), "==", tattr("org_id")),
                        Compare(iattr("role"), "==", Literal("admin")),
                    )
                ),
            ),
        ),
        ("target.level <= ctx.clearance", Compare(tattr("level"), "<=", Context("clearance"))),
    ]


def _docstring_examples() -> list[str]:
    doc = dsl.__doc__ or ""
    block = doc.split("::", 1)[1].split("``it``", 1)[0]
    lines = [line.strip() for line in block.splitlines() if line.startswith("    ")]
    return [line.split("  #", 1)[0].strip() for line in lines if not line.startswith("from ")]


def test_every_docstring_example_is_covered() -> None:
    covered = {source for source, _ in _doc_spellings()}
    assert set(_docstring_examples()) == covered


@pytest.mark.parametrize(("source", "expected"), _doc_spellings(), ids=lambda v: str(v))
def test_docstring_spelling_builds_node(source: str, expected: Rule) -> None:
    namespace = {"target": target, "subject": subject, "it": it, "ctx": ctx}
    built = as_rule(eval(source, namespace))
    assert built == expected
    assert hash(built) == hash(expected)


# -- comparisons ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "op"),
    [
        (target.level == 3, "=="),
        (target.level != 3, "!="),
        (target.level < 3, "<"),
        (target.level <= 3, "<="),
        (target.level > 3, ">"),
        (target.level >= 3, ">="),
    ],
)
def test_comparison_operators(expr: Rule, op: str) -> None:
    assert expr == Compare(tattr("level"), op, Literal(3))


def test_reflected_comparisons_put_the_attribute_left() -> None:
    # Python reflects `3 < x` to `x > 3`
    assert (3 < target.level) == Compare(tattr("level"), ">", Literal(3))  # noqa: SIM300
    assert (3 >= target.level) == Compare(tattr("level"), "<=", Literal(3))  # noqa: SIM300
    assert (3 == target.level) == Compare(  # type: ignore[comparison-overlap]  # noqa: SIM300
        tattr("level"), "==", Literal(3)
    )


def test_comparing_two_attributes_and_context() -> None:
    assert (target.a != subject.b) == Compare(tattr("a"), "!=", sattr("b"))
    assert (ctx.ip == subject.ip) == Compare(Context("ip"), "==", sattr("ip"))
    assert (it.a > target.b) == Compare(iattr("a"), ">", tattr("b"))


def test_none_means_is_null() -> None:
    assert (target.x == None) == IsNull(tattr("x"))  # noqa: E711 - the spelling under test
    assert (target.x != None) == IsNull(tattr("x"), negated=True)  # noqa: E711
    assert target.x.is_(None) == IsNull(tattr("x"))
    assert target.x.is_not(None) == IsNull(tattr("x"), negated=True)
    assert (ctx.x == None) == IsNull(Context("x"))  # noqa: E711


@pytest.mark.parametrize("value", [0, False, "", "None", [], object()])
def test_is_and_is_not_only_accept_none(value: Any) -> None:
    with pytest.raises(TypeError, match="only accepts None"):
        target.x.is_(value)
    with pytest.raises(TypeError, match="only accepts None"):
        target.x.is_not(value)


def test_collections_become_tuples() -> None:
    assert (target.x == [1, 2]) == Compare(tattr("x"), "==", Literal((1, 2)))
    assert hash(target.x == [1, 2]) == hash(target.x == (1, 2))


@pytest.mark.parametrize("bad", [target, it], ids=repr)
def test_a_root_is_not_a_value(bad: Any) -> None:
    with pytest.raises(TypeError, match="compare"):
        target.x < bad  # noqa: B015 - the comparison is what raises
    with pytest.raises(TypeError):
        target.x == bad  # noqa: B015


def test_a_rule_is_not_a_value() -> None:
    with pytest.raises(TypeError, match="a rule cannot be used as a value"):
        target.x == (target.y == 1)  # noqa: B015


# -- the subject itself --------------------------------------------------------------------


def test_relationship_equals_subject() -> None:
    assert (target.owner == subject) == Related("target", "owner", Same("it"))
    assert (target.owner != subject) == Not(Related("target", "owner", Same("it")))
    assert (it.author == subject) == Related("it", "author", Same("it"))


def test_root_equals_subject() -> None:
    assert (target == subject) == Same("target")
    assert (subject == target) == Same("target")
    assert (it == subject) == Same("it")
    assert (subject == it) == Same("it")


@pytest.mark.parametrize(
    "pair", [(target, it), (subject, subject), (target, target), (target, 1)], ids=repr
)
def test_root_compares_only_with_subject(pair: tuple[Any, Any]) -> None:
    left, right = pair
    with pytest.raises(TypeError, match="only be compared with subject"):
        left == right  # noqa: B015


def test_root_is_hashable_and_reprs_as_its_scope() -> None:
    assert {target: 1, subject: 2, it: 3}[target] == 1
    assert (repr(target), repr(subject), repr(it), repr(ctx)) == ("target", "subject", "it", "ctx")
    assert repr(target.owner_id) == "<target.owner_id>"


# -- IN ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "values",
    [[1, 2], (1, 2), range(1, 3), (v for v in (1, 2)), {1: "a", 2: "b"}],
    ids=["list", "tuple", "range", "generator", "dict"],
)
def test_in_takes_any_collection(values: Any) -> None:
    assert target.x.in_(values) == In(tattr("x"), Literal((1, 2)))


def test_in_with_a_set() -> None:
    assert target.x.in_({5}) == In(tattr("x"), Literal((5,)))
    assert target.x.in_(frozenset()) == In(tattr("x"), Literal(()))


def test_in_with_equal_sets_gives_equal_rules() -> None:
    # 0 and 8 collide in a small set's hash table, so these equal sets iterate in different
    # orders; equal rules matter: a rule's default name is its str, and DuplicateRule and
    # the simplifier's de-duplication compare nodes.
    first, second = {0, 8}, {8, 0}
    assert first == second
    assert target.x.in_(first) == target.x.in_(second)
    assert str(target.x.in_(first)) == str(target.x.in_(second))


def test_in_takes_subject_attribute_and_context() -> None:
    assert target.x.in_(subject.xs) == In(tattr("x"), sattr("xs"))
    assert target.x.in_(ctx.allowed) == In(tattr("x"), Context("allowed"))


@pytest.mark.parametrize(
    "bad",
    ["abc", b"abc", "", 3, 3.5, None, True, target, target.x == 1, object()],
    ids=repr,
)
def test_in_rejects_strings_and_non_collections(bad: Any) -> None:
    with pytest.raises(TypeError, match="in_\\(\\) takes a collection"):
        target.x.in_(bad)


def test_not_in_is_not_of_in() -> None:
    assert target.x.not_in([1]) == Not(In(tattr("x"), Literal((1,))))
    with pytest.raises(TypeError):
        target.x.not_in("abc")


# -- relationships -------------------------------------------------------------------------


def test_any_and_has() -> None:
    cond = it.name == "a"
    assert target.tags.any(cond) == Related("target", "tags", cond)
    assert target.org.has(cond) == Related("target", "org", cond)
    assert target.tags.any() == Related("target", "tags", ALLOW)
    assert target.tags.any(cond, it.x) == Related(
        "target", "tags", And((cond, Compare(iattr("x"), "==", Literal(True))))
    )


def test_any_keywords_mean_it_equals() -> None:
    assert target.tags.any(name="a") == Related(
        "target", "tags", Compare(iattr("name"), "==", Literal("a"))
    )
    assert target.tags.any(deleted=None) == Related("target", "tags", IsNull(iattr("deleted")))
    both = target.tags.any(it.x, name="a")
    assert isinstance(both, Related)
    assert both.where == And(
        (Compare(iattr("x"), "==", Literal(True)), Compare(iattr("name"), "==", Literal("a")))
    )


def test_nested_relationships() -> None:
    rule = target.org.has(it.members.any(it.id == target.owner_id))
    assert rule == Related(
        "target", "org", Related("it", "members", Compare(iattr("id"), "==", tattr("owner_id")))
    )


def test_relationship_of_a_context_value_is_refused() -> None:
    with pytest.raises(TypeError, match="not a relationship"):
        ctx.x.any()
    with pytest.raises(TypeError, match="not a relationship"):
        ctx.x == subject  # noqa: B015


def test_reading_through_a_relationship_says_how() -> None:
    with pytest.raises(AttributeError, match=r"has\(it\.name == \.\.\.\)"):
        target.owner.name  # noqa: B018


def test_dunder_lookups_are_not_attributes() -> None:
    assert not hasattr(target, "__iter__")
    assert not hasattr(ctx, "__len__")
    assert not hasattr(target.x, "__iter__")


# -- combining -----------------------------------------------------------------------------


def test_bare_attributes_combine_as_rules() -> None:
    pub = Compare(tattr("is_public"), "==", Literal(True))
    staff = Compare(sattr("is_staff"), "==", Literal(True))
    assert (target.is_public & subject.is_staff) == And((pub, staff))
    assert (target.is_public | subject.is_staff) == Or((pub, staff))
    assert ~target.is_public == Not(pub)
    assert (True & target.is_public) == And((ALLOW, pub))
    assert (False | target.is_public) == Or((DENY, pub))
    assert ((target.x == 1) & target.is_public) == And((Compare(tattr("x"), "==", Literal(1)), pub))


def test_chains_are_flat() -> None:
    a, b, c = target.a == 1, target.b == 2, target.c == 3
    assert a | b | c == Or((a, b, c))
    assert a & b & c == And((a, b, c))


def test_as_rule() -> None:
    rule = target.x == 1
    assert as_rule(rule) is rule
    assert as_rule(True) is ALLOW
    assert as_rule(False) is DENY
    assert as_rule(target.flag) == Compare(tattr("flag"), "==", Literal(True))


@pytest.mark.parametrize(
    "value",
    [None, 1, 0, "target.x", target, ctx, [target.x == 1], lambda s, t: True, print],
    ids=repr,
)
def test_as_rule_refuses_non_rules(value: Any) -> None:
    with pytest.raises(RuleNotTranslatable):
        as_rule(value)


def test_as_rule_names_a_lambda() -> None:
    with pytest.raises(RuleNotTranslatable, match="Python callable has no SQL form") as info:
        as_rule(lambda user, doc: doc.owner is user)
    assert "lambda" in str(info.value.rule)


@pytest.mark.parametrize(
    "use",
    [
        lambda a, b: a and b,
        lambda a, b: a or b,
        lambda a, b: not a,
        lambda a, b: bool(a),
        lambda a, b: 1 if a else 0,
    ],
    ids=["and", "or", "not", "bool", "if"],
)
@pytest.mark.parametrize(
    "left",
    [target.x == 1, target.flag, target.owner == subject, ALLOW],
    ids=["rule", "attribute", "related", "const"],
)
def test_python_boolean_operators_raise(use: Any, left: Any) -> None:
    with pytest.raises(TypeError, match="no truth value"):
        use(left, target.y == 2)


def test_chained_comparison_raises() -> None:
    # `1 < x < 5` is `(1 < x) and (x < 5)`: Python asks the first for its truth value
    with pytest.raises(TypeError, match="no truth value"):
        1 < target.level < 5  # noqa: B015


def test_attribute_expressions_are_not_hashable() -> None:
    # __eq__ builds a rule, so hashing by value would be a lie
    with pytest.raises(TypeError):
        hash(target.x)
    assert isinstance(target.x, AttrExpr)
