"""bastion.rules.validate: rules are checked against their classes before they ever run."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.orm import aliased

from _unit_models import (
    Admin,
    Document,
    Invoice,
    Measure,
    Org,
    Principal,
    Tag,
    Unmapped,
    User,
)
from bastion import RuleNotTranslatable, UnknownAttribute, UnmappedClass
from bastion.errors import PolicyError
from bastion.rules.dsl import as_rule, ctx, it, subject, target
from bastion.rules.nodes import Compare, Literal, Related, Rule
from bastion.rules.validate import mapper_of, validate


def check(
    rule: object, subject_type: type | None = User, target_type: type | None = Document
) -> None:
    validate(as_rule(rule), subject_type, target_type)


# -- accepted ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "rule",
    [
        target.is_public,
        target.owner_id == subject.id,
        target.status.in_(["draft", "review"]),
        target.org_id.in_(subject.org_ids),  # a Python property of the mapped subject
        target.status == None,  # noqa: E711
        target.owner == subject,
        target.org.has(it.plan == "pro"),
        target.tags.any(it.name == "urgent"),
        target.org.has(members=subject),
        subject.memberships.any((it.org_id == target.org_id) & (it.role == "admin")),
        target.level <= ctx.clearance,
        target.level > 1,
        target.level.in_(ctx.levels),
        target == subject,
        target.org.has(it.members.any(it.id == target.owner_id)),
        ~target.comments.any(it.body == "x"),
    ],
    ids=str,
)
def test_valid_rules_pass(rule: object) -> None:
    check(rule)


def test_subclass_target_inherits_the_columns() -> None:
    check(target.owner == subject, Admin, Invoice)


def test_any_subject_reads_any_attribute() -> None:
    check(target.owner_id == subject.anything, object)
    check(subject.whatever, object, None)


def test_subject_only_rule_without_target() -> None:
    check(subject.is_admin & (subject.clearance > 3), User, None)
    check(subject.memberships.any(it.role == "admin"), User, None)


# -- refused -------------------------------------------------------------------------------


def test_unmapped_target() -> None:
    with pytest.raises(UnmappedClass) as info:
        check(target.id == 1, User, Unmapped)
    assert info.value.cls is Unmapped


@pytest.mark.parametrize(
    ("rule", "cls", "attribute"),
    [
        (target.colour == "blue", Document, "colour"),
        (target.nope, Document, "nope"),
        (target.tags.any(it.colour == "red"), Tag, "colour"),
        (target.org.has(it.title == "x"), Org, "title"),  # `it` is an Org here, not a Document
        (target.nothing.any(), Document, "nothing"),
        (subject.nope == target.id, User, "nope"),
        (target.id == subject.nope, Principal, "nope"),  # declared fields of a dataclass
    ],
    ids=str,
)
def test_unknown_attribute(rule: object, cls: type, attribute: str) -> None:
    subject_type = Principal if cls is Principal else User
    with pytest.raises(UnknownAttribute) as info:
        check(rule, subject_type)
    assert info.value.attribute == attribute
    assert info.value.cls is cls
    assert attribute in str(info.value)


def test_a_python_property_of_the_target_has_no_sql_form() -> None:
    # only mapped columns have a SQL form; a property of the target would run in Python only
    assert isinstance(Document.display_title, property)
    with pytest.raises(UnknownAttribute, match="not a mapped column"):
        check(target.display_title == "X")


@pytest.mark.parametrize(
    "rule",
    [
        target.owner == 1,
        target.org == None,  # noqa: E711
        target.tags.in_([1]),
        target.org,
        target.org.has(it.members == 3),
    ],
    ids=str,
)
def test_relationship_used_as_a_value(rule: object) -> None:
    with pytest.raises(UnknownAttribute, match="is a relationship"):
        check(rule)


@pytest.mark.parametrize(
    "rule",
    [
        target.title.any(),
        target.org_id.has(it.id == 1),
        subject.name.any(),
        target.owner_id == subject,
    ],
    ids=str,
)
def test_column_used_as_a_relationship(rule: object) -> None:
    with pytest.raises(UnknownAttribute, match="not a relationship"):
        check(rule)


@pytest.mark.parametrize(
    "rule",
    [it.name == "x", target.is_public & it.flag, ~(it == subject), it.tags.any()],
    ids=str,
)
def test_it_outside_any_or_has(rule: object) -> None:
    with pytest.raises(RuleNotTranslatable, match="'it'"):
        check(rule)


def test_target_in_a_rule_without_target() -> None:
    with pytest.raises(RuleNotTranslatable, match="without a target"):
        check(target.is_public, User, None)


@pytest.mark.parametrize(
    "rule",
    [
        target.level == "high",
        target.level > "3",
        target.level == 2.5,
        target.level == True,  # noqa: E712 - a bool is not an int column value
        target.is_public == 1,
        target.title == 5,
        target.org.has(it.plan == 1),
        Compare(Literal("x"), "<", target.level.node),  # literal on the left
    ],
    ids=str,
)
def test_literal_of_the_wrong_type(rule: object) -> None:
    with pytest.raises(RuleNotTranslatable, match="literal"):
        check(rule)


@pytest.mark.parametrize(
    "rule",
    [target.level.in_(["a", "b"]), target.status.in_([1, 2]), target.is_public.in_(["yes"])],
    ids=str,
)
def test_in_list_literals_of_the_wrong_type(rule: object) -> None:
    # the same check as for ==: on PostgreSQL `integer IN ('a')` is an error at query time,
    # while check() quietly says False
    with pytest.raises(RuleNotTranslatable, match="literal"):
        check(rule)


@pytest.mark.parametrize(
    "rule",
    [target.level == 3, target.level == None, target.status.in_(["a", None])],  # noqa: E711
    ids=str,
)
def test_literals_of_the_right_type_and_null(rule: object) -> None:
    check(rule)


def test_float_column_accepts_an_int() -> None:
    check(target.value > 1, object, Measure)
    check(target.value > 1.5, object, Measure)
    with pytest.raises(RuleNotTranslatable):
        check(target.value > "1", object, Measure)


@pytest.mark.parametrize("op", ["<", "<=", ">", ">="])
def test_ordering_comparison_with_none(op: str) -> None:
    rule = Compare(target.level.node, op, Literal(None))
    with pytest.raises(RuleNotTranslatable, match="compares with None"):
        check(rule)
    with pytest.raises(RuleNotTranslatable, match="compares with None"):
        check(Compare(Literal(None), op, target.level.node))


def test_in_values_from_the_target_are_refused() -> None:
    with pytest.raises(RuleNotTranslatable, match="in_\\(\\) takes"):
        check(target.level.in_(target.levels))


@pytest.mark.parametrize("subject_type", [object, Principal, None], ids=repr)
def test_same_needs_a_mapped_subject(subject_type: Any) -> None:
    with pytest.raises(RuleNotTranslatable, match="mapped subject type"):
        check(target.owner == subject, subject_type)
    with pytest.raises(RuleNotTranslatable, match="mapped subject type"):
        check(target == subject, subject_type)


@pytest.mark.parametrize("subject_type", [object, Principal], ids=repr)
def test_subject_relationship_needs_a_mapped_subject(subject_type: type) -> None:
    with pytest.raises(RuleNotTranslatable, match="must be a mapped class"):
        check(subject.memberships.any(it.role == "admin"), subject_type)


def test_errors_carry_the_whole_rule() -> None:
    rule = target.is_public | target.org.has(it.title == "x")
    with pytest.raises(PolicyError):
        check(rule)
    rule2 = target.is_public | (target.level == "x")
    with pytest.raises(RuleNotTranslatable) as info:
        check(rule2)
    assert info.value.rule == as_rule(rule2)


def test_nested_it_is_the_innermost_related_object() -> None:
    # inside target.org.has(...), `it` is an Org; inside its .members.any(...), a User
    check(target.org.has(it.members.any(it.is_admin)))
    with pytest.raises(UnknownAttribute):
        check(target.org.has(it.members.any(it.plan == "pro")))


def test_custom_node_kinds_are_walked() -> None:
    class Wrapper(Rule):
        __slots__ = ("inner",)

        def __init__(self, inner: Rule) -> None:
            self.inner = inner

        def children(self) -> tuple[Rule, ...]:
            return (self.inner,)

    with pytest.raises(UnknownAttribute):
        validate(Wrapper(as_rule(target.nope == 1)), User, Document)


def test_related_node_on_a_scope_the_rule_lacks() -> None:
    with pytest.raises(RuleNotTranslatable):
        validate(Related("it", "tags", as_rule(True)), User, Document)


# -- mapper_of -----------------------------------------------------------------------------


def test_mapper_of() -> None:
    assert mapper_of(Document) is not None
    assert mapper_of(Document).class_ is Document  # type: ignore[union-attr]
    assert mapper_of(aliased(Document)) is mapper_of(Document)
    assert mapper_of(Invoice).class_ is Invoice  # type: ignore[union-attr]
    assert mapper_of(Unmapped) is None
    assert mapper_of(int) is None
    assert mapper_of(Principal) is None
