"""``who_can``: the rules read from the subject's side, on SQLite and PostgreSQL.

``who_can(P, obj)`` must list exactly the subjects ``s`` with ``check(s, P, obj)``: tier by tier
(each on its own policy, with the expected subjects written out), on the combined scenario of
``_pages_world``, and on random data. It is a ``Select`` (paginate it, count it); a rule that
cannot be read backwards raises ``RuleNotTranslatable``: when called, and when registered for a
permission declared ``who_can=True``.

The data is ``_pages_world.WHO`` (its table is in that module's docstring).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, selectinload

from _pages_strategies import EXAMPLES, scenarios
from _pages_world import (
    GRANTS,
    ORG_ROLES,
    SITE_ROLES,
    WHO,
    Comment,
    Data,
    Document,
    Folder,
    Robot,
    Seat,
    User,
    build_policy,
    create_schema,
    flag,
    load,
)
from bastion import (
    Authorizer,
    InvalidArgument,
    Policy,
    Role,
    RolePolicy,
    RuleNotTranslatable,
    UnmappedClass,
    ancestors,
    it,
    subject,
    target,
)
from bastion.grants import holds

POLICY = build_policy()


@pytest.fixture
def db(engine: Engine) -> Iterator[Session]:
    create_schema(engine)
    with Session(engine) as session:
        yield session


@pytest.fixture
def who(db: Session) -> Session:
    load(db, WHO)
    return db


def ids(session: Session, stmt: sa.Select[Any]) -> set[Any]:
    return set(session.scalars(stmt.with_only_columns(User.id)))


def checked(session: Session, authz: Authorizer, permission: str, obj: Any = None) -> set[int]:
    users = session.scalars(sa.select(User).options(selectinload(User.memberships))).all()
    return {u.id for u in users if authz.check(u, permission, obj)}


# -- tier by tier ----------------------------------------------------------------------------


def _grants(p: Policy) -> None:
    rule = holds(GRANTS, "doc.read", scope=("org", target.org_id))
    p.allow("doc.read", subject=User, target=Document, when=rule)


def _object_grants(p: Policy) -> None:
    rule = holds(GRANTS, "doc.edit", on_target=True)
    p.allow("doc.edit", subject=User, target=Document, when=rule)


def _role_column(p: Policy) -> None:
    SITE_ROLES.register(p, subject=User, target=Document, role=subject.role)


def _membership_roles(p: Policy) -> None:
    rule = subject.memberships.any(
        (it.org_id == target.org_id) & ORG_ROLES.grants(it.role, "doc.delete")
    )
    p.allow("doc.delete", subject=User, target=Document, when=rule)


def _comparison(p: Policy) -> None:
    p.allow("doc.read", subject=User, target=Document, when=target.level <= subject.level)


def _not_with_nulls(p: Policy) -> None:
    rule = ~(target.status == "published") & (target.owner_id == subject.id)
    p.allow("doc.delete", subject=User, target=Document, when=rule)


def _from_target(p: Policy) -> None:
    p.allow("doc.edit", subject=User, target=Document, when=target.owner == subject)


def _from_subject(p: Policy) -> None:
    rule = subject.memberships.any(it.org_id == target.org_id)
    p.allow("doc.read", subject=User, target=Document, when=rule)


def _deferral(p: Policy) -> None:
    _from_subject(p)
    p.defer("comment.read", attributes="document", bearer=User, target=Comment, to="doc.read")


def _tree(p: Policy) -> None:
    rule = (target.owner_id == subject.id) | holds(GRANTS, "folder.view", on_target=True)
    p.allow("folder.view", subject=User, target=Folder, when=ancestors(target.parent, rule))


def _deferral_to_tree(p: Policy) -> None:
    _tree(p)
    p.defer("doc.manage", attributes="folder", bearer=User, target=Document, to="folder.view")


def _objectless(p: Policy) -> None:
    p.allow("reports.view", subject=User, when=holds(GRANTS, "reports.view") | subject.is_staff)


E = set[int]
TIERS: list[Any] = [
    # name, permission, target class, setup, {object id: expected user ids}
    ("grants: direct, bundle, group, group bundle", "doc.read", Document, _grants,
     {1: {1, 4}, 2: {2, 4}, 3: {3, 4}, 4: {4}, 5: {2, 4}}),
    ("grants on one object", "doc.edit", Document, _object_grants,
     {1: set(), 2: {1}, 3: {3}, 4: set(), 5: set()}),
    ("static roles on a column", "doc.edit", Document, _role_column,
     {1: {1, 2}, 2: {1, 7}, 3: {1}, 4: {1}, 5: {1, 2}}),
    ("static roles on a column, conditional", "doc.read", Document, _role_column,
     {1: {1, 3, 8}, 2: {1}, 3: {1}, 4: {1}, 5: {1, 3, 8}}),
    ("static roles on membership rows", "doc.delete", Document, _membership_roles,
     {1: {1}, 2: {5}, 3: {4}, 4: set(), 5: {5}}),
    ("target rule: comparison with NULLs", "doc.read", Document, _comparison,
     {1: {1, 3, 5, 7, 8}, 2: set(), 3: {5}, 4: {1, 3, 4, 5, 7, 8}, 5: {1, 5, 8}}),
    ("target rule: NOT with NULLs", "doc.delete", Document, _not_with_nulls,
     {1: {2}, 2: set(), 3: set(), 4: {1}, 5: {2}}),
    ("relationship from the target", "doc.edit", Document, _from_target,
     {1: {2}, 2: {7}, 3: set(), 4: {1}, 5: {2}}),
    ("relationship from the subject", "doc.read", Document, _from_subject,
     {1: {1, 3}, 2: {2, 5}, 3: {4, 7}, 4: set(), 5: {2, 5}}),
    ("deferral", "comment.read", Comment, _deferral, {1: {1, 3}, 2: {2, 5}, 3: set()}),
    ("trees (a cycle 4 <-> 5; a grant on folder 4)", "folder.view", Folder, _tree,
     {1: {1, 4}, 2: {1, 4}, 3: {1, 3, 4}, 4: {4, 5, 8}, 5: {4, 5, 8}}),
    ("deferral to a tree", "doc.manage", Document, _deferral_to_tree,
     {1: {1, 4}, 2: {1, 3, 4}, 3: {4, 5, 8}, 4: set(), 5: {1, 4}}),
]  # fmt: skip


def _tier_policy(setup: Callable[[Policy], None]) -> Policy:
    policy = Policy(
        ["doc.read", "doc.edit", "doc.delete", "doc.manage", "comment.read", "folder.view"]
    )
    policy.declare("reports.view")
    setup(policy)
    return policy


@pytest.mark.parametrize(("tier", "permission", "cls", "setup", "expected"), TIERS)
def test_who_can_lists_exactly_whom_check_allows(
    who: Session,
    tier: str,
    permission: str,
    cls: type,
    setup: Callable[[Policy], None],
    expected: dict[int, E],
) -> None:
    policy = _tier_policy(setup)
    policy.declare(permission, who_can=True)  # every rule of the tier reads backwards
    authz = Authorizer(policy, who)
    for obj in who.scalars(sa.select(cls)):
        allowed = checked(who, authz, permission, obj)
        assert allowed == expected[obj.id], (tier, obj)  # the check agrees with the table
        assert ids(who, authz.who_can(permission, obj)) == allowed, (tier, obj)


def test_who_can_without_an_object(who: Session) -> None:
    authz = Authorizer(_tier_policy(_objectless), who)
    stmt = authz.who_can("reports.view")
    assert ids(who, stmt) == checked(who, authz, "reports.view") == {4, 6}  # 5's has expired


# -- the combined scenario -------------------------------------------------------------------

#: the scenario's permissions whose rules read backwards, by target class
REVERSIBLE = {
    Document: ("doc.read", "doc.edit", "doc.delete", "doc.manage"),
    Comment: ("comment.read",),
    Folder: ("folder.view",),
    Seat: ("seat.use",),
}


def _assert_who_can_agrees(session: Session, authz: Authorizer, permissions: Any) -> None:
    # everything the rules read is loaded, so that the reference checks run in Python
    users = session.scalars(sa.select(User).options(selectinload(User.memberships))).all()
    loaded = {
        Folder: session.scalars(sa.select(Folder).options(selectinload(Folder.parent))).all(),
        Document: session.scalars(
            sa.select(Document).options(selectinload(Document.owner), selectinload(Document.folder))
        ).all(),
        Comment: session.scalars(sa.select(Comment).options(selectinload(Comment.document))).all(),
        Seat: session.scalars(sa.select(Seat)).all(),
    }
    for cls, names in permissions.items():
        for obj in loaded[cls]:
            for permission in names:
                allowed = {u.id for u in users if authz.check(u, permission, obj)}
                listed = ids(session, authz.who_can(permission, obj))
                assert listed == allowed, (permission, obj)
    allowed = {u.id for u in users if authz.check(u, "reports.view")}
    assert ids(session, authz.who_can("reports.view")) == allowed


def test_who_can_agrees_with_check_on_every_rule_kind_combined(who: Session) -> None:
    _assert_who_can_agrees(who, Authorizer(POLICY, who), REVERSIBLE)


@settings(max_examples=EXAMPLES)
@given(data=scenarios())
def test_who_can_agrees_with_check_on_random_data(db: Session, data: Data) -> None:
    load(db, data)
    _assert_who_can_agrees(db, Authorizer(POLICY, db), REVERSIBLE)


# -- the statement ---------------------------------------------------------------------------


def test_the_result_is_a_select_to_paginate_and_count(who: Session) -> None:
    authz = Authorizer(POLICY, who)
    doc = who.get(Document, 1)
    stmt = authz.who_can("doc.read", doc)
    assert isinstance(stmt, sa.Select)
    everyone = list(who.scalars(stmt.order_by(User.id)))
    assert [u.id for u in everyone] == sorted(checked(who, authz, "doc.read", doc))
    assert len(everyone) >= 4
    page = who.scalars(stmt.order_by(User.id).limit(2).offset(1)).all()
    assert page == everyone[1:3]
    count = who.scalar(sa.select(sa.func.count()).select_from(stmt.subquery()))
    assert count == len(everyone)
    senior = who.scalars(stmt.where(User.level >= 2).order_by(User.id)).all()
    assert senior == [u for u in everyone if (u.level or 0) >= 2]


def test_several_subject_types_need_subject_type(who: Session) -> None:
    policy = build_policy()
    policy.allow("doc.read", subject=Robot, target=Document, when=target.level <= subject.level)
    who.add_all([Robot(id=1, level=0), Robot(id=2, level=5), Robot(id=3, level=None)])
    who.commit()
    authz = Authorizer(policy, who)
    doc = who.get(Document, 1)  # level 1
    with pytest.raises(InvalidArgument, match=r"subject_type=.*Robot, User"):
        authz.who_can("doc.read", doc)
    robots = who.scalars(authz.who_can("doc.read", doc, subject_type=Robot)).all()
    assert [r.id for r in robots] == [2]
    users = ids(who, authz.who_can("doc.read", doc, subject_type=User))
    assert users == ids(who, Authorizer(POLICY, who).who_can("doc.read", doc))
    with pytest.raises(UnmappedClass):
        authz.who_can("doc.read", doc, subject_type=object)


def test_who_can_needs_a_persistent_object(who: Session) -> None:
    with pytest.raises(InvalidArgument, match="persistent"):
        Authorizer(POLICY, who).who_can("doc.read", Document(id=99))


# -- rules that cannot be read backwards -----------------------------------------------------


class _Clearance:
    """``subject.clearance`` is a Python property of ``User``, not a column."""

    @staticmethod
    def setup(p: Policy) -> None:
        p.allow("doc.read", subject=User, target=Document, when=target.level <= subject.clearance)


@pytest.mark.parametrize(
    ("permission", "message"),
    [
        ("doc.flag", "Python callable"),  # check_only=True
        ("doc.archive", "SQL-only rule"),  # policy.sql_rule
    ],
)
def test_untranslatable_rules_raise_when_called(
    who: Session, permission: str, message: str
) -> None:
    authz = Authorizer(POLICY, who)
    doc = who.get(Document, 1)
    assert isinstance(authz.check(who.get(User, 1), permission, doc), bool)  # check still works
    with pytest.raises(RuleNotTranslatable, match=message):
        authz.who_can(permission, doc)


def test_a_subject_attribute_that_is_not_a_column_raises_when_called(who: Session) -> None:
    policy = _tier_policy(_Clearance.setup)
    authz = Authorizer(policy, who)
    doc = who.get(Document, 1)  # level 1: clearance = level + 1
    assert checked(who, authz, "doc.read", doc) == set(range(1, 9))  # all have clearance >= 1
    with pytest.raises(RuleNotTranslatable, match=r"User\.clearance is not a mapped column"):
        authz.who_can("doc.read", doc)


def _python_only(p: Policy) -> None:
    p.allow("doc.read", subject=User, target=Document, when=flag, check_only=True)


def _sql_only(p: Policy) -> None:
    @p.sql_rule("doc.read", bearer=User, target=Document)
    def mine(query: Any, bearer: Any, target: Any, permission: Any) -> Any:
        return query.where(target.owner_id == bearer.id)


def _python_role(p: Policy) -> None:
    class Boss(Role):
        def check(self, identity: Any, permission: Any, *args: Any, **kwargs: Any) -> bool:
            return True

    roles = RolePolicy([Boss("boss", ["doc.read"]), Role("reader", ["doc.read"])])
    roles.register(p, subject=User, target=Document, role=subject.role, check_only=True)


def _unmapped_bearer(p: Policy) -> None:
    p.allow("doc.read", subject=object, target=Document, when=target.is_public)


def _all_permissions(p: Policy) -> None:
    p.allow(subject=User, target=Document, when=flag, check_only=True)


@pytest.mark.parametrize(
    ("register", "message"),
    [
        (_python_only, "Python callable"),
        (_sql_only, "SQL-only rule"),
        (_Clearance.setup, "not a mapped column"),
        (_python_role, "override check/filter in Python"),
        (_unmapped_bearer, "mapped subject class"),
        (_all_permissions, "Python callable"),  # a rule for every permission on the target
    ],
)
def test_declared_who_can_refuses_untranslatable_rules_at_registration(
    register: Callable[[Policy], None], message: str
) -> None:
    policy = Policy(["doc.edit"])
    policy.declare("doc.read", who_can=True)
    _from_subject(policy)  # a rule that reads backwards is accepted
    before = policy.rules()
    with pytest.raises(RuleNotTranslatable, match=message):
        register(policy)
    assert policy.rules() == before  # nothing registered
    assert policy.permissions == ("doc.edit", "doc.read")


@pytest.mark.parametrize("register", [_python_only, _sql_only, _Clearance.setup])
def test_declaring_who_can_after_untranslatable_rules_raises(
    register: Callable[[Policy], None],
) -> None:
    policy = Policy(["doc.read"])
    register(policy)
    with pytest.raises(RuleNotTranslatable):
        policy.declare("doc.read", who_can=True)
    register(Policy(["doc.read"]))  # the promise was not recorded: the rules stay allowed
    policy.allow("doc.read", subject=User, target=Document, when=flag, check_only=True, name="2")


def test_other_permissions_are_not_held_to_the_promise() -> None:
    policy = Policy(["doc.read", "doc.flag"])
    policy.declare("doc.read", who_can=True)
    policy.allow("doc.flag", subject=User, target=Document, when=flag, check_only=True)
    assert len(policy.rules()) == 1


def test_a_refused_sql_rule_registers_nothing() -> None:
    policy = Policy(["doc.archive", "doc.read"])
    policy.declare("doc.read", who_can=True)
    with pytest.raises(RuleNotTranslatable):

        @policy.sql_rule("doc.archive", "doc.read", bearer=User, target=Document)
        def mine(query: Any, bearer: Any, target: Any, permission: Any) -> Any:
            return query.where(target.owner_id == bearer.id)

    assert policy.rules() == ()


@pytest.mark.parametrize("order", ["deferral first", "related rule first"])
def test_a_deferral_to_a_python_only_rule_is_refused_at_registration(order: str) -> None:
    policy = Policy(["comment.read", "doc.read"])
    policy.declare("comment.read", who_can=True)

    def defer() -> None:
        policy.defer(
            "comment.read", attributes="document", bearer=User, target=Comment, to="doc.read"
        )

    if order == "deferral first":
        defer()
        with pytest.raises(RuleNotTranslatable):
            _python_only(policy)
    else:
        _python_only(policy)
        with pytest.raises(RuleNotTranslatable):
            defer()


# -- subclasses of the subject type with rules of their own ------------------------------------


class _KindBase(DeclarativeBase):
    pass


class _Person(_KindBase):
    __tablename__ = "k_people"
    id: Mapped[int] = mapped_column(primary_key=True)
    level: Mapped[int | None]
    kind: Mapped[str] = mapped_column(sa.String(10), default="person")
    __mapper_args__ = {"polymorphic_on": "kind", "polymorphic_identity": "person"}


class _Boss(_Person):
    __mapper_args__ = {"polymorphic_identity": "boss"}


class _Intern(_Person):  # no rules of its own: _Person's apply
    __mapper_args__ = {"polymorphic_identity": "intern"}


class _Paper(_KindBase):
    __tablename__ = "k_papers"
    id: Mapped[int] = mapped_column(primary_key=True)
    level: Mapped[int | None]


def test_subclasses_with_their_own_rules_are_judged_by_them(engine: Engine) -> None:
    """The nearest class's rules judge a subject: ``who_can(subject_type=_Person)`` judged
    ``_Boss`` rows by ``_Person``'s rule and listed bosses ``check`` denied."""
    _KindBase.metadata.create_all(engine)
    policy = Policy(["read"])
    policy.allow("read", subject=_Person, target=_Paper, when=target.level <= subject.level)
    policy.allow("read", subject=_Boss, target=_Paper, when=target.level == 0)
    with Session(engine) as s:
        s.add_all([_Person(id=1, level=5), _Boss(id=2, level=5), _Boss(id=3, level=0)])
        s.add_all([_Intern(id=4, level=9), _Person(id=5, level=1)])
        s.add_all([_Paper(id=1, level=3), _Paper(id=2, level=0)])
        s.commit()
        authz = Authorizer(policy, s)
        people = s.scalars(sa.select(_Person).order_by(_Person.id)).all()
        for paper in s.scalars(sa.select(_Paper)).all():
            listed = set(s.scalars(authz.who_can("read", paper, subject_type=_Person)))
            assert {p.id for p in listed} == {p.id for p in people if authz.check(p, "read", paper)}
            bosses = set(s.scalars(authz.who_can("read", paper, subject_type=_Boss)))
            assert {p.id for p in bosses} == {
                p.id for p in people if isinstance(p, _Boss) and authz.check(p, "read", paper)
            }
        assert {
            p.id for p in s.scalars(authz.who_can("read", s.get(_Paper, 1), subject_type=_Person))
        } == {1, 4}


class _Member(_KindBase):
    __tablename__ = "j_members"
    id: Mapped[int] = mapped_column(primary_key=True)
    level: Mapped[int | None]
    kind: Mapped[str] = mapped_column(sa.String(10))
    __mapper_args__ = {"polymorphic_on": "kind", "polymorphic_identity": "member"}


class _Officer(_Member):  # joined inheritance: its own table and column
    __tablename__ = "j_officers"
    id: Mapped[int] = mapped_column(sa.ForeignKey("j_members.id"), primary_key=True)
    clearance: Mapped[int | None]
    __mapper_args__ = {"polymorphic_identity": "officer"}


def test_subclasses_with_their_own_rules_across_tables(engine: Engine) -> None:
    """Joined inheritance: the subclass's rule reads its own table's column."""
    _KindBase.metadata.create_all(engine)
    policy = Policy(["read"])
    policy.allow("read", subject=_Member, target=_Paper, when=target.level <= subject.level)
    policy.allow("read", subject=_Officer, target=_Paper, when=target.level <= subject.clearance)
    with Session(engine) as s:
        s.add_all([_Member(id=1, level=5), _Member(id=2, level=0)])
        s.add_all([_Officer(id=3, level=9, clearance=0), _Officer(id=4, level=0, clearance=9)])
        s.add_all([_Paper(id=1, level=3), _Paper(id=2, level=0)])
        s.commit()
        authz = Authorizer(policy, s)
        members = s.scalars(sa.select(_Member).order_by(_Member.id)).all()
        for paper in s.scalars(sa.select(_Paper)).all():
            listed = s.scalars(authz.who_can("read", paper, subject_type=_Member)).all()
            assert {m.id for m in listed} == {
                m.id for m in members if authz.check(m, "read", paper)
            }
        first = authz.who_can("read", s.get(_Paper, 1), subject_type=_Member)
        assert sorted(m.id for m in s.scalars(first)) == [1, 4]
