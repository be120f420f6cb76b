"""Pages of objects none of whose rule inputs is loaded ("blind"), and the cached page statement.

``check_many``/``allowed_actions`` run each action's predicate once for all blind objects of a
class (``bastion.rules.reads``) and reuse one statement per (class, actions, rule inputs). These
tests pin what must not change: the answers equal one ``check`` per object whatever each object's
loading state, a blind page decided by the subject alone costs no query, and a cached statement is
never shared by two subjects nor tied to one page's keys.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, load_only, selectinload

from _pages_world import (
    Data,
    Document,
    Membership,
    Seat,
    StatementCounter,
    User,
    create_schema,
    load,
)
from bastion import Authorizer, Policy, it, subject, target
from bastion.rules import nodes
from bastion.rules.reads import related_classes, target_reads

ACTIONS = ("read", "edit", "own", "seat")


def _policy() -> Policy:
    policy = Policy()
    policy.declare(*ACTIONS)
    policy.allow(
        "read",
        subject=User,
        target=Document,
        when=(subject.is_staff == True)  # noqa: E712 - a rule, not a Python comparison
        | target.is_public
        | subject.memberships.any(it.org_id == target.org_id),
    )
    policy.allow(
        "edit",
        subject=User,
        target=Document,
        when=(target.owner_id == subject.id)
        | ((target.level <= subject.level) & ~target.is_public),
    )
    policy.allow("own", subject=User, target=Document, when=target.owner == subject)
    policy.allow("seat", subject=User, target=Seat, when=target.holder_id == subject.id)
    return policy


DATA = Data(
    users=[
        {"id": 1, "level": 2, "role": None, "is_staff": True},
        {"id": 2, "level": 1, "role": None, "is_staff": False},
        {"id": 3, "level": None, "role": None, "is_staff": None},
    ],
    memberships=[{"user_id": 2, "org_id": 1, "role": "member"}],
    folders=[],
    documents=[
        {
            "id": n,
            "org_id": (None, 1, 2)[n % 3],
            "owner_id": (None, 1, 2, 3)[n % 4],
            "level": (None, 0, 1, 2, 3)[n % 5],
            "is_public": (None, True, False)[n % 3],
        }
        for n in range(1, 41)
    ],
    seats=[{"org_id": n % 2, "number": n, "holder_id": n % 3} for n in range(1, 9)],
)


@pytest.fixture
def db(engine: Engine) -> Iterator[Session]:
    create_schema(engine)
    with Session(engine) as session:
        load(session, DATA)
        yield session


def _truth(authz: Authorizer, session: Session) -> dict[tuple[int, Any], set[str]]:
    """One ``check`` per (user, object, action), on fully loaded objects (Python only)."""
    session.expunge_all()
    users = session.scalars(sa.select(User).options(selectinload(User.memberships))).all()
    docs = session.scalars(sa.select(Document).options(selectinload(Document.owner))).all()
    seats = session.scalars(sa.select(Seat)).all()
    out = {}
    for u in users:
        for d in docs:
            out[u.id, d.id] = {a for a in ("read", "edit", "own") if authz.check(u, a, d)}
        for s in seats:
            out[u.id, (s.org_id, s.number)] = {"seat"} if authz.check(u, "seat", s) else set()
    return out


def _mixed_page(session: Session) -> list[Any]:
    """Documents in every loading state: blind (expired), key only, partly and fully loaded,
    and one transient object (decided from its own values)."""
    session.expunge_all()
    docs = list(session.scalars(sa.select(Document).order_by(Document.id)))
    for d in docs[:10]:
        session.expire(d)
    partly = sa.select(Document).options(load_only(Document.owner_id, Document.level))
    session.scalars(partly.where(Document.id.between(11, 20))).all()
    for d in docs[10:20]:
        session.expire(d, ["org_id", "is_public"])
    keys_only = sa.select(Document).options(load_only(Document.id))
    session.scalars(keys_only.where(Document.id > 30)).all()
    for d in docs[30:]:
        session.expire(d)
    session.scalars(keys_only.where(Document.id > 30)).all()
    return docs


@pytest.mark.parametrize("user_id", [1, 2, 3])
def test_pages_in_every_loading_state_agree_with_checks(db: Session, user_id: int) -> None:
    policy = _policy()
    authz = Authorizer(policy, db)
    truth = _truth(authz, db)
    for memberships_loaded in (False, True):
        docs = _mixed_page(db)
        user = db.get(User, user_id)
        assert user is not None
        if memberships_loaded:
            db.refresh(user, ["memberships"])
        transient = Document(id=99, org_id=1, owner_id=user_id, level=0, is_public=False)
        got = authz.allowed_actions(user, [*docs, transient], actions=["read", "edit", "own"])
        want = {d.id: truth[user_id, d.id] for d in docs}
        want[99] = {a for a in ("read", "edit", "own") if authz.check(user, a, transient)}
        assert got == want
        for action in ("read", "edit", "own"):
            docs = _mixed_page(db)
            user = db.get(User, user_id)
            many = authz.check_many(user, action, docs)
            assert many == {d.id: action in truth[user_id, d.id] for d in docs}, action


def test_a_blind_page_decided_by_the_subject_alone_costs_no_query(
    engine: Engine, db: Session
) -> None:
    authz = Authorizer(_policy(), db)
    staff = db.get(User, 1)
    docs = db.scalars(sa.select(Document)).all()
    for d in docs:
        db.expire(d)
    with StatementCounter(engine) as counter:
        assert set(authz.check_many(staff, "read", docs).values()) == {True}
    assert counter.count == 0, counter.statements
    other = db.get(User, 2)
    with StatementCounter(engine) as counter:
        authz.allowed_actions(other, docs, actions=["read", "edit", "own"])
    assert counter.count == 1, counter.statements


def _page_statements(policy: Policy) -> list[Any]:
    return [
        value
        for plan in policy.plans_by_call_key.values()
        for key, value in plan.sql_cache.items()
        if isinstance(key, tuple) and key[:1] == ("page",)
    ]


def test_the_page_statement_is_cached_per_subject_never_per_page(
    engine: Engine, db: Session
) -> None:
    policy = _policy()
    authz = Authorizer(policy, db)
    truth = _truth(authz, db)
    users = {u.id: u for u in db.scalars(sa.select(User))}
    docs = db.scalars(sa.select(Document).order_by(Document.id)).all()
    for round_ in range(2):
        for user_id, user in users.items():
            for page in (docs[:15], docs[15:], docs[::3]):  # different keys, same statement
                for d in page:
                    db.expire(d)
                with StatementCounter(engine) as counter:
                    got = authz.allowed_actions(user, list(page), actions=["edit", "own"])
                assert counter.count == 1
                assert got == {d.id: truth[user_id, d.id] & {"edit", "own"} for d in page}
        # one statement per subject (its id is bound in the rule), none per page
        assert len(_page_statements(policy)) == len(users), round_
    assert len({id(s.statement) for s in _page_statements(policy)}) == len(users)


def test_composite_keys_go_through_the_cached_statement(engine: Engine, db: Session) -> None:
    authz = Authorizer(_policy(), db)
    truth = _truth(authz, db)
    seats = db.scalars(sa.select(Seat)).all()
    for user in db.scalars(sa.select(User)).all():
        for seat in seats:
            db.expire(seat)
        with StatementCounter(engine) as counter:
            got = authz.check_many(user, "seat", seats)
        assert counter.count == 1
        assert got == {
            (s.org_id, s.number): "seat" in truth[user.id, (s.org_id, s.number)] for s in seats
        }


def test_target_reads_names_what_the_predicate_reads_of_the_target() -> None:
    mapper = sa.inspect(Document)
    policy = _policy()
    plans = {a: policy.plan(a, User, Document) for a in ("read", "edit", "own")}
    assert plans["read"].target_reads == {"is_public", "org_id"}
    assert plans["edit"].target_reads == {"owner_id", "level", "is_public"}
    # ``target.owner == subject`` compares the foreign key when the relationship is not loaded
    assert plans["own"].target_reads == {"owner", "owner_id"}
    # the target's identity, or a Python function, is read otherwise: no blind objects
    assert target_reads(nodes.Same("target"), mapper) is None
    assert target_reads(nodes.PythonRule(lambda s, t: True, "f"), mapper) is None
    unmapped = nodes.Compare(nodes.Attr("target", "not_mapped"), "==", nodes.Literal(1))
    assert target_reads(unmapped, mapper) is None


def test_related_classes_names_the_classes_reached_through_relationships() -> None:
    """What an authorized session may have loaded partially (``Authorizer._censored``)."""
    policy = _policy()
    plans = {a: policy.plan(a, User, Document) for a in ("read", "edit", "own")}
    assert related_classes(plans["read"].rule, User, Document) == {Membership}
    assert related_classes(plans["edit"].rule, User, Document) == frozenset()
    assert related_classes(plans["own"].rule, User, Document) == {User}
    # unknown: a relationship that does not exist, an unresolved deferral
    missing = nodes.Related("target", "nowhere", nodes.Const(True))
    assert related_classes(missing, User, Document) is None
    assert related_classes(nodes.Deferred("owner"), User, Document) is None


def test_more_actions_than_one_mask_column_holds(engine: Engine, db: Session) -> None:
    """A page statement packs its actions' answers into integer columns of 30 bits each: 70
    actions (three columns) must still each get their own answer, in one query."""
    policy = _policy()
    levels = {f"level-{n}": (n % 5, bool(n % 2)) for n in range(70)}
    policy.declare(*levels)
    for action, (level, alone) in levels.items():
        # alternately a rule on the target alone and one that also reads the subject
        when = target.level >= level
        policy.allow(
            action,
            subject=User,
            target=Document,
            when=when if alone else when | (target.owner_id == subject.id),
        )
    authz = Authorizer(policy, db)
    db.expunge_all()
    rows = {d.id: (d.level, d.owner_id) for d in db.scalars(sa.select(Document))}
    for user_id in (1, 2, 3):
        db.expunge_all()
        user = db.get(User, user_id)
        docs = db.scalars(sa.select(Document).options(load_only(Document.id))).all()
        with StatementCounter(engine) as counter:
            got = authz.allowed_actions(user, list(docs), actions=list(levels))
        assert counter.count == 1, counter.statements
        want = {
            doc_id: {
                action
                for action, (level, alone) in levels.items()
                if (doc_level is not None and doc_level >= level)
                or (not alone and owner_id == user_id)
            }
            for doc_id, (doc_level, owner_id) in rows.items()
        }
        assert got == want, user_id
        assert any(len(actions) > 40 for actions in got.values())


class _KeyBase(sa.orm.DeclarativeBase):
    pass


class _Big(_KeyBase):
    """Keys a page must pass intact: 64-bit and negative integers."""

    __tablename__ = "page_keys_big"
    id: sa.orm.Mapped[int] = sa.orm.mapped_column(
        sa.BigInteger, primary_key=True, autoincrement=False
    )
    owner_id: sa.orm.Mapped[int | None]


def test_page_keys_big_negative_duplicated_and_gone(engine: Engine, db: Session) -> None:
    """The page's keys travel as one parameter (a JSON array on SQLite, an array literal on
    PostgreSQL): 64-bit and negative keys come back as themselves, an object listed twice is
    asked once, and a row deleted behind the session is denied, not an error."""
    _KeyBase.metadata.create_all(engine)
    try:
        keys = [2**62 + 7, -(2**40), -1, 0, 1, 2**31, -(2**31) - 1]
        with Session(engine) as setup:
            setup.add_all(_Big(id=k, owner_id=1 if k % 2 else 2) for k in keys)
            setup.commit()
        policy = Policy()
        policy.declare("big.own", "big.see")
        policy.allow("big.own", subject=User, target=_Big, when=target.owner_id == subject.id)
        policy.allow("big.see", subject=User, target=_Big, when=target.owner_id != None)  # noqa: E711
        authz = Authorizer(policy, db)
        user = db.get(User, 1)
        page = db.scalars(sa.select(_Big).options(load_only(_Big.id))).all()
        assert sorted(o.id for o in page) == sorted(keys)
        with engine.begin() as conn:  # behind the session's back
            conn.execute(sa.delete(_Big.__table__).where(_Big.__table__.c.id == -1))
        for o in page:
            db.expire(o)
        with StatementCounter(engine) as counter:
            got = authz.check_many(user, "big.own", [*page, page[0]])
            both = authz.allowed_actions(user, list(page), actions=["big.own", "big.see"])
        assert counter.count == 2, counter.statements
        assert got == {k: k != -1 and k % 2 == 1 for k in keys}
        assert both == {
            k: set() if k == -1 else ({"big.own", "big.see"} if k % 2 else {"big.see"})
            for k in keys
        }
    finally:
        db.rollback()
        _KeyBase.metadata.drop_all(engine)


def test_an_unflushed_key_change_is_answered_under_the_identity_key(
    engine: Engine, db: Session
) -> None:
    """A blind page reads each object's key from the object itself, except for an object with
    unflushed changes: a key changed in memory (autoflush off) is not in the database yet, so
    the object is answered under its identity key, as ``check`` asks the database for it."""
    authz = Authorizer(_policy(), db)
    user = db.get(User, 2)
    assert user is not None
    with db.no_autoflush:
        keys_only = sa.select(Document).options(load_only(Document.id)).order_by(Document.id)
        docs = list(db.scalars(keys_only))
        moved = docs[1]
        moved.id = 1000
        assert db.is_modified(moved)
        with StatementCounter(engine) as counter:
            got = authz.check_many(user, "edit", docs)
        assert counter.count == 1, counter.statements
        assert list(got) == list(range(1, 41))
        assert got == {n: authz.check(user, "edit", d) for n, d in enumerate(docs, start=1)}
        assert got[2] is True  # document 2 is user 2's (owner_id = n % 4 -> 2)
    db.rollback()


def test_actions_sharing_branches_run_each_branch_once(engine: Engine, db: Session) -> None:
    """Several actions' rules are split at their top-level OR and each distinct branch is one
    term of the mask: ``shared`` and ``also`` share ``owner`` and ``member``, so the statement
    holds 4 branches (5 CASE terms would repeat 2 of them, 7 did before), each membership
    subquery once in the mask. An action is allowed when one of its branches holds, and the
    answers equal one ``check`` per object, NULLs included."""
    policy = Policy()
    policy.declare("shared", "also", "admin", "public")
    owner = target.owner_id == subject.id
    member = subject.memberships.any(it.org_id == target.org_id)
    admin = subject.memberships.any((it.org_id == target.org_id) & (it.role == "admin"))
    policy.allow("shared", subject=User, target=Document, when=target.is_public | owner | member)
    policy.allow("also", subject=User, target=Document, when=owner | member)
    policy.allow("admin", subject=User, target=Document, when=owner | admin)
    policy.allow("public", subject=User, target=Document, when=target.is_public)
    authz = Authorizer(policy, db)
    actions = ["shared", "also", "admin", "public"]
    db.add_all(
        [
            Membership(user_id=2, org_id=2, role="admin"),
            Membership(user_id=3, org_id=1, role=None),
        ]
    )
    db.commit()
    for user_id in (1, 2, 3):
        db.expunge_all()
        docs = list(db.scalars(sa.select(Document).order_by(Document.id)))
        truth = {
            d.id: {a for a in actions if authz.check(db.get(User, user_id), a, d)} for d in docs
        }
        db.expunge_all()
        user = db.get(User, user_id)
        docs = list(db.scalars(sa.select(Document).options(load_only(Document.id))))
        with StatementCounter(engine) as counter:
            got = authz.allowed_actions(user, docs, actions=actions)
        assert got == truth
        assert counter.count == 1
        (statement,) = counter.statements
        mask = statement[: statement.index(" AS bastion_mask_0")]
        assert mask.count("CASE WHEN") == 4, statement
        assert mask.count("FROM memberships") == 2, statement
    assert any(truth.values())
    assert not all(truth.values())


def test_single_database_checks_reuse_one_statement_per_subject(
    engine: Engine, db: Session
) -> None:
    """``check`` on an object whose rule inputs are not loaded asks the database with a
    statement built once per (class, subject's rule inputs): the target's key is its parameter
    (one column or several), so checking more objects adds no statement, and two subjects never
    share one."""
    policy = _policy()
    authz = Authorizer(policy, db)
    truth = _truth(authz, db)
    users = {u.id: u for u in db.scalars(sa.select(User))}
    docs = db.scalars(sa.select(Document).order_by(Document.id)).all()
    seats = db.scalars(sa.select(Seat)).all()

    def exists_statements() -> list[Any]:
        return [
            value
            for plan in policy.plans_by_call_key.values()
            for key, value in plan.sql_cache.items()
            if isinstance(key, tuple) and key[:1] == ("exists",)
        ]

    for round_ in range(2):
        for user_id, user in users.items():
            for obj, action, key in [
                *((d, "edit", d.id) for d in docs[:12]),
                *((s, "seat", (s.org_id, s.number)) for s in seats),
            ]:
                db.expire(obj)
                with StatementCounter(engine) as counter:
                    got = authz.check(user, action, obj)
                assert counter.count == 1, counter.statements
                assert got == (action in truth[user_id, key]), (user_id, action, key)
        # per subject: one statement for Document "edit", one for Seat "seat"
        assert len(exists_statements()) == 2 * len(users), round_
    assert len({id(s) for s in exists_statements()}) == 2 * len(users)
