"""bastion.rules.to_python: SQL's three-valued logic in Python, read from loaded state only.

Truth tables use context values as operands (plain Python values), so they test the logic alone;
the tests further down read mapped instances in every state (transient, pending, persistent,
expired) and count the statements the session sends: a predicate never lazy-loads.
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, defer

from _unit_models import Base, Document, Org, Principal, Tag, User
from bastion import MissingContext, RuleNotTranslatable
from bastion.rules.dsl import as_rule, ctx, it, subject, target
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
    Rule,
)
from bastion.rules.to_python import PYTHON_COMPILERS, NotLoaded, register_python, to_python

TV = (True, False, None)


def run(rule: object, subject: Any = None, target: Any = None, **context: Any) -> bool | None:
    return to_python(as_rule(rule))(subject, target, context, None)


# -- truth tables ---------------------------------------------------------------------------

OPS: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
PAIRS = [(1, 2), (2, 2), (3, 2), ("a", "b"), (None, 2), (2, None), (None, None)]


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize(("a", "b"), PAIRS)
def test_compare_operands(op: str, a: Any, b: Any) -> None:
    expected = None if a is None or b is None else OPS[op](a, b)
    assert run(Compare(Context("a"), op, Context("b")), a=a, b=b) is expected


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize(("a", "b"), PAIRS)
def test_compare_with_a_literal_on_either_side(op: str, a: Any, b: Any) -> None:
    expected = None if a is None or b is None else OPS[op](a, b)
    assert run(Compare(Context("a"), op, Literal(b)), a=a) is expected
    assert run(Compare(Literal(a), op, Context("b")), b=b) is expected
    assert run(Compare(Literal(a), op, Literal(b))) is expected


@pytest.mark.parametrize("op", OPS)
def test_compare_with_none_is_unknown_even_for_equality(op: str) -> None:
    # naive Python says None == None is True and None != 1 is True; SQL says UNKNOWN
    assert run(Compare(Context("a"), op, Context("b")), a=None, b=None) is None
    assert run(Compare(Context("a"), op, Literal(1)), a=None) is None


@pytest.mark.parametrize(
    ("value", "values", "expected"),
    [
        (1, (1, 2), True),
        (3, (1, 2), False),
        (1, (), False),
        (None, (), False),  # an empty list: FALSE, whatever the value
        (None, (1, 2), None),
        (1, (1, None), True),
        (3, (1, None), None),  # no match and a NULL member: UNKNOWN
        (None, (None,), None),
        ("a", ("a", "b"), True),
        (True, (1,), True),  # SQL and Python agree that TRUE = 1
    ],
)
def test_in(value: Any, values: tuple[Any, ...], expected: bool | None) -> None:
    # a literal list (the set lookup), a context list and a list the subject carries
    assert run(In(Context("v"), Literal(values)), v=value) is expected
    assert run(In(Context("v"), Context("vs")), v=value, vs=list(values)) is expected
    holder = Principal(org_ids=values)
    assert run(In(Context("v"), Attr("subject", "org_ids")), holder, v=value) is expected


def test_in_with_a_null_list_is_unknown() -> None:
    assert run(In(Context("v"), Context("vs")), v=1, vs=None) is None


def test_in_with_unhashable_members_and_values() -> None:
    assert run(In(Context("v"), Literal(([1], [2]))), v=[1]) is True
    assert run(In(Context("v"), Literal((1, 2))), v=[1]) is False
    assert run(In(Context("v"), Literal((1, None))), v=[1]) is None


@pytest.mark.parametrize("value", [None, 0, "", False, "x"])
def test_is_null_is_two_valued(value: Any) -> None:
    assert run(IsNull(Context("v")), v=value) is (value is None)
    assert run(IsNull(Context("v"), negated=True), v=value) is (value is not None)


@pytest.mark.parametrize(("value", "expected"), [(True, False), (False, True), (None, None)])
def test_not(value: bool | None, expected: bool | None) -> None:
    assert run(Not(Const(value))) is expected
    assert run(Not(Compare(Context("v"), "==", Literal(True))), v=value) is expected


def _and(a: bool | None, b: bool | None) -> bool | None:
    if a is False or b is False:
        return False
    return None if a is None or b is None else True


def _or(a: bool | None, b: bool | None) -> bool | None:
    if a is True or b is True:
        return True
    return None if a is None or b is None else False


@pytest.mark.parametrize(("a", "b"), list(itertools.product(TV, repeat=2)))
def test_and_or_tables(a: bool | None, b: bool | None) -> None:
    x, y = Compare(Context("a"), "==", Literal(True)), Compare(Context("b"), "==", Literal(True))
    assert run(And((x, y)), a=a, b=b) is _and(a, b)
    assert run(Or((x, y)), a=a, b=b) is _or(a, b)
    assert run(And((Const(a), Const(b)))) is _and(a, b)
    assert run(Or((Const(a), Const(b)))) is _or(a, b)


def test_empty_junctions_and_constants() -> None:
    assert run(And(())) is True
    assert run(Or(())) is False
    assert (run(ALLOW), run(DENY), run(UNKNOWN)) == (True, False, None)


def test_the_docstring_example_not_colour_blue_denies_null() -> None:
    rule = ~(target.colour == "blue")
    assert run(rule, target=_Obj(colour=None)) is None
    assert run(rule, target=_Obj(colour="red")) is True
    assert run(rule, target=_Obj(colour="blue")) is False


def test_short_circuit_does_not_change_answers() -> None:
    # FALSE AND <anything> is FALSE; TRUE OR <anything> is TRUE, UNKNOWN first or not
    x = Compare(Context("x"), "==", Literal(True))
    assert run(And((UNKNOWN, DENY, x)), x=None) is False
    assert run(Or((UNKNOWN, ALLOW, x)), x=None) is True


class _Obj:
    """An unmapped object: read with getattr."""

    def __init__(self, **values: Any) -> None:
        self.__dict__.update(values)


# -- relationships and the subject ----------------------------------------------------------


def test_related_many_to_one_and_collections_on_transient_objects() -> None:
    rule = target.org.has(it.plan == "pro")
    assert run(rule, target=Document(org=Org(plan="pro"))) is True
    assert run(rule, target=Document(org=Org(plan=None))) is False  # UNKNOWN inside: FALSE
    assert run(rule, target=Document(org=None)) is False
    assert run(~rule, target=Document(org=None)) is True  # EXISTS is two-valued

    tags = target.tags.any(it.name == "urgent")
    assert run(tags, target=Document(tags=[])) is False
    assert run(tags, target=Document(tags=[Tag(name="misc"), Tag(name="urgent")])) is True
    assert run(tags, target=Document(tags=[Tag(name=None)])) is False
    assert run(target.tags.any(), target=Document(tags=[Tag(name="x")])) is True


def test_related_to_an_unmapped_object_and_a_mapping() -> None:
    rule = target.items.any(it.n > 1)
    assert run(rule, target=_Obj(items=[_Obj(n=1), _Obj(n=2)])) is True
    assert run(rule, target=_Obj(items={"a": _Obj(n=0)})) is False
    assert run(rule, target=_Obj(items=None)) is False


def test_same_and_relationship_is_subject_on_transient_objects() -> None:
    alice, bob = User(id=1), User(id=2)
    assert run(target == subject, alice, alice) is True
    assert run(target == subject, alice, bob) is False
    assert run(target == subject, None, None) is False  # no subject is nobody
    assert run(target.owner == subject, alice, Document(owner=alice)) is True
    assert run(target.owner == subject, alice, Document(owner=bob)) is False
    assert run(target.owner == subject, alice, Document(owner=None)) is False
    assert run(target.owner != subject, alice, Document(owner=None)) is True


def test_unmapped_subject_is_read_with_getattr() -> None:
    rule = (target.owner_id == subject.id) | subject.is_admin
    assert run(rule, Principal(id=1), Document(owner_id=1)) is True
    assert run(rule, Principal(id=2), Document(owner_id=1)) is False
    assert run(rule, Principal(id=2, is_admin=None), Document(owner_id=1)) is None
    assert run(rule, Principal(id=2, is_admin=True), Document(owner_id=None)) is True


def test_absent_subject_has_only_null_attributes() -> None:
    assert run(target.owner_id == subject.id, None, Document(owner_id=1)) is None
    assert run(subject.id == None, None) is True  # noqa: E711


# -- context ---------------------------------------------------------------------------------


def test_missing_context_value() -> None:
    with pytest.raises(MissingContext) as info:
        run(target.level <= ctx.clearance, target=Document(level=1))
    assert info.value.name == "clearance"
    with pytest.raises(MissingContext):
        run(target.level.in_(ctx.levels), target=Document(level=1))
    assert run(target.level <= ctx.clearance, target=Document(level=1), clearance=None) is None


# -- reading persistent instances: __dict__ only, never a lazy load ------------------------


@pytest.fixture
def memory_session() -> Iterator[Session]:
    engine = sa.create_engine("sqlite://")
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        org = Org(id=1, plan="pro")
        alice = User(id=1, name="alice")
        doc = Document(id=1, title="t", owner_id=1, org=org, level=3, is_public=True)
        doc.tags = [Tag(id=1, name="urgent")]
        session.add_all([alice, doc])
        session.commit()
        session.expunge_all()
        yield session
    engine.dispose()


@pytest.fixture
def statements(memory_session: Session) -> Iterator[list[str]]:
    sent: list[str] = []
    engine = memory_session.get_bind()

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        sent.append(statement)

    sa.event.listen(engine, "before_cursor_execute", record)
    yield sent
    sa.event.remove(engine, "before_cursor_execute", record)


def _load(session: Session, cls: type[Any], pk: int, sent: list[str], **options: Any) -> Any:
    obj = session.get(cls, pk, **options)
    sent.clear()
    return obj


@pytest.mark.parametrize(
    "rule",
    [
        target.level > 1,
        target.level.in_([3]),
        target.level == None,  # noqa: E711
        target.org.has(it.plan == "pro"),
        target.tags.any(it.name == "urgent"),
        target == subject,
    ],
    ids=str,
)
def test_loaded_persistent_object_is_read_without_sql(
    memory_session: Session, statements: list[str], rule: Rule
) -> None:
    doc = memory_session.get(Document, 1)
    assert doc is not None
    _ = doc.org, doc.tags  # load the relationships the rules read
    alice = memory_session.get(User, 1)
    statements.clear()
    assert run(rule, alice, doc) in (True, False)
    assert statements == []


def test_expired_attribute_raises_not_loaded_without_sql(
    memory_session: Session, statements: list[str]
) -> None:
    doc = _load(memory_session, Document, 1, statements)
    memory_session.expire(doc, ["level"])
    with pytest.raises(NotLoaded):
        run(target.level > 1, target=doc)
    assert statements == []
    assert "level" not in doc.__dict__  # nothing was loaded behind our back


def test_fully_expired_object_raises_not_loaded(
    memory_session: Session, statements: list[str]
) -> None:
    doc = _load(memory_session, Document, 1, statements)
    memory_session.expire(doc)
    with pytest.raises(NotLoaded):
        run(target.is_public, target=doc)
    assert statements == []


def test_deferred_column_raises_not_loaded(memory_session: Session, statements: list[str]) -> None:
    doc = _load(memory_session, Document, 1, statements, options=[defer(Document.level)])
    with pytest.raises(NotLoaded):
        run(target.level > 1, target=doc)
    assert statements == []


@pytest.mark.parametrize(
    "rule",
    [target.org.has(it.plan == "pro"), target.tags.any(), target.comments.any()],
    ids=str,
)
def test_unloaded_relationship_raises_not_loaded(
    memory_session: Session, statements: list[str], rule: Rule
) -> None:
    doc = _load(memory_session, Document, 1, statements)
    with pytest.raises(NotLoaded):
        run(rule, target=doc)
    assert statements == []


def test_unloaded_related_object_attribute_raises_not_loaded(
    memory_session: Session, statements: list[str]
) -> None:
    doc = _load(memory_session, Document, 1, statements)
    org = doc.org
    assert org is not None
    memory_session.expire(org, ["plan"])
    statements.clear()
    with pytest.raises(NotLoaded):
        run(target.org.has(it.plan == "pro"), target=doc)
    assert statements == []


def test_expired_subject_attribute_raises_not_loaded(
    memory_session: Session, statements: list[str]
) -> None:
    alice = _load(memory_session, User, 1, statements)
    memory_session.expire(alice, ["is_admin"])
    with pytest.raises(NotLoaded):
        run(subject.is_admin, alice)
    assert statements == []


def test_unloaded_many_to_one_is_subject_uses_the_foreign_key(
    memory_session: Session, statements: list[str]
) -> None:
    # `target.owner == subject` with `owner` not loaded is decided from owner_id, like SQL does
    doc = _load(memory_session, Document, 1, statements)
    alice = memory_session.get(User, 1)
    bob = User(id=2)
    statements.clear()
    assert "owner" not in doc.__dict__
    assert run(target.owner == subject, alice, doc) is True
    assert run(target.owner == subject, bob, doc) is False  # transient: no row
    assert statements == []


def test_transient_object_is_read_with_getattr(statements: list[str]) -> None:
    doc = Document(title="new")  # level never set: None, no SQL
    assert run(target.level == None, target=doc) is True  # noqa: E711
    assert run(target.title == "new", target=doc) is True
    assert run(target.tags.any(), target=doc) is False
    assert statements == []


def test_pending_object_is_read_with_getattr(
    memory_session: Session, statements: list[str]
) -> None:
    doc = Document(id=7, title="pending", level=4)
    memory_session.add(doc)
    statements.clear()
    assert run(target.level > 3, target=doc) is True
    assert run(target.org_id == None, target=doc) is True  # noqa: E711
    assert statements == []


# -- a column mapped under another attribute name --------------------------------------------


def test_column_mapped_under_another_name(memory_session: Session, statements: list[str]) -> None:
    # Document.owner_id is the column "owner_user_id": the rule reads the attribute, not the
    # column name (sqla-authz's getattr(obj, column.key) reads the wrong name)
    doc = _load(memory_session, Document, 1, statements)
    assert "owner_user_id" not in doc.__dict__
    alice = memory_session.get(User, 1)
    statements.clear()
    assert run(target.owner_id == subject.id, alice, doc) is True
    assert run(target.owner_id == 2, alice, doc) is False
    assert run(target.owner_id != None, alice, doc) is True  # noqa: E711
    assert statements == []


# -- the registry ----------------------------------------------------------------------------


class _Custom(Rule):
    __slots__ = ()


class _CustomChild(_Custom):
    __slots__ = ()


@pytest.fixture
def custom_node() -> Iterator[type[_Custom]]:
    try:
        yield _Custom
    finally:
        PYTHON_COMPILERS.pop(_Custom, None)


def test_registry_refuses_double_registration(custom_node: type[_Custom]) -> None:
    register_python(custom_node)(lambda node: lambda s, t, c, i: True)
    with pytest.raises(ValueError, match="already registered"):
        register_python(custom_node)(lambda node: lambda s, t, c, i: False)
    assert to_python(custom_node())(None, None, {}, None) is True


def test_registry_replaces_with_replace_true(custom_node: type[_Custom]) -> None:
    register_python(custom_node)(lambda node: lambda s, t, c, i: True)
    register_python(custom_node, replace=True)(lambda node: lambda s, t, c, i: False)
    assert to_python(custom_node())(None, None, {}, None) is False


def test_registry_looks_up_the_mro(custom_node: type[_Custom]) -> None:
    register_python(custom_node)(lambda node: lambda s, t, c, i: None)
    assert to_python(_CustomChild())(None, None, {}, None) is None


def test_unknown_node_kind_is_not_translatable() -> None:
    with pytest.raises(RuleNotTranslatable, match="no Python compiler"):
        to_python(_CustomChild())


def test_builtin_kinds_are_registered() -> None:
    for kind in (Const, And, Or, Not, Compare, In, IsNull):
        assert kind in PYTHON_COMPILERS
    with pytest.raises(ValueError, match="already registered"):
        register_python(Compare)(lambda node: lambda s, t, c, i: True)
