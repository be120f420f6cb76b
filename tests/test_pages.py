"""``check_many`` and ``allowed_actions``: whole pages at once, on SQLite and PostgreSQL.

Both must agree with one ``check`` per (subject, object, action), whether the objects are loaded
(decided in Python) or not (one query per class for the whole page, counted with a
``before_cursor_execute`` listener). The scenario (``_pages_world``) combines every rule kind:
comparisons, relationships from the target and the subject, static roles on a column and on
membership rows, stored grants (direct, bundle, group, group bundle; scoped; expired), deferral,
trees, a SQL-only rule and a Python-only rule.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, selectinload

from _pages_strategies import EXAMPLES, scenarios
from _pages_world import (
    DOCUMENT_ACTIONS,
    GRANTS,
    Comment,
    Data,
    Document,
    Folder,
    Grant,
    Seat,
    StatementCounter,
    User,
    build_policy,
    create_schema,
    keyed,
    load,
)
from bastion import Authorizer, InvalidArgument
from bastion.grants import effective_grants

#: every permission the scenario has rules for on objects, by class
ACTIONS: dict[type, tuple[Hashable, ...]] = {
    Document: DOCUMENT_ACTIONS,
    Comment: ("comment.read",),
    Folder: ("folder.view",),
    Seat: ("seat.use",),
}
PAGE_CLASSES = (Document, Comment, Folder, Seat)
#: one policy for the module: its plans and built SQL clauses are reused across examples, as in
#: an application (a clause depends only on the subject's values, never on the data)
POLICY = build_policy()

SCENARIO = Data(
    users=[
        {"id": 1, "level": 2, "role": "editor", "is_staff": None},
        {"id": 2, "level": None, "role": "author", "is_staff": True},
        {"id": 3, "level": 1, "role": None, "is_staff": False},
        {"id": 4, "level": 0, "role": "guest", "is_staff": None},
        {"id": 5, "level": None, "role": "nobody", "is_staff": None},
    ],
    memberships=[
        {"user_id": 1, "org_id": 1, "role": "admin"},
        {"user_id": 3, "org_id": 2, "role": "member"},
        {"user_id": 4, "org_id": 1, "role": None},
        {"user_id": 5, "org_id": 2, "role": "admin"},
    ],
    folders=[
        {"id": 1, "parent_id": None, "owner_id": 1},
        {"id": 2, "parent_id": 1, "owner_id": None},
        {"id": 3, "parent_id": 2, "owner_id": 3},
        {"id": 4, "parent_id": 5, "owner_id": None},  # 4 and 5: a cycle
        {"id": 5, "parent_id": 4, "owner_id": 5},
    ],
    documents=[
        {
            "id": n,
            "org_id": (None, 1, 2, 1, None, 2, 3, 1)[n % 8],
            "owner_id": (None, 1, 2, 3, 4, 5)[n % 6],
            "folder_id": (None, 1, 2, 3, 4, 5)[n % 6],
            "level": (None, 0, 1, 2, 3)[n % 5],
            "status": (None, "draft", "done", "published")[n % 4],
            "is_public": (None, True, False)[n % 3],
        }
        for n in range(1, 13)
    ],
    comments=[
        {"id": 1, "document_id": 2},
        {"id": 2, "document_id": None},
        {"id": 3, "document_id": 7},
    ],
    seats=[
        {"org_id": 1, "number": 1, "holder_id": 3},
        {"org_id": 2, "number": 1, "holder_id": None},
        {"org_id": 2, "number": 2, "holder_id": 2},
        {"org_id": 3, "number": 1, "holder_id": None},
    ],
    grants=[
        Grant(3, permission="doc.read", scope=("org", 1)),  # direct, scoped
        Grant(4, bundle="readers"),  # bundle, global
        Grant("staff", bundle="editors", scope=("doc", 3)),  # group bundle, one object
        Grant("staff", permission="doc.delete", scope=("org", 2)),  # group, scoped
        Grant(2, group="staff"),
        Grant(3, permission="folder.view", scope=("folder", 1), window="past"),  # expired
        Grant(5, permission="folder.view", scope=("folder", 2)),
        Grant(5, permission="doc.edit", scope=("doc", 6), window="future"),  # not yet valid
        Grant("team", permission="reports.view"),
        Grant(3, group="team", scope=("org", 9)),  # the group edge scoped: grants nothing global
    ],
)


@pytest.fixture
def db(engine: Engine) -> Iterator[Session]:
    """A session on a database with the scenario's schema (no example rows yet)."""
    create_schema(engine)
    with Session(engine) as session:
        yield session


@pytest.fixture
def scenario(db: Session) -> Session:
    load(db, SCENARIO)
    return db


def _load_everything(session: Session) -> dict[type, list[Any]]:
    """Every object loaded, with the relationships the rules read (the Python path). The lists
    hold the objects: the identity map alone would let them be collected."""
    session.expunge_all()

    def every(cls: type, *options: Any) -> list[Any]:
        order = cls.__table__.primary_key.columns  # type: ignore[attr-defined]
        return list(session.scalars(sa.select(cls).options(*options).order_by(*order)))

    return {
        User: every(User, selectinload(User.memberships)),
        Folder: every(Folder, selectinload(Folder.parent)),
        Document: every(Document, selectinload(Document.owner), selectinload(Document.folder)),
        Comment: every(Comment, selectinload(Comment.document)),
        Seat: every(Seat),
    }


def _unload(session: Session, items: list[Any]) -> None:
    for obj in items:
        session.expire(obj)


def _single_checks(
    authz: Authorizer, user: Any, items: list[Any], actions: tuple[Hashable, ...]
) -> dict[Any, set[Hashable]]:
    return {
        key: {a for a in actions if authz.check(user, a, obj)} for key, obj in keyed(items).items()
    }


def _assert_pages_agree(session: Session, authz: Authorizer) -> None:
    """For every user, class and action: check_many / allowed_actions == single checks, on
    loaded objects and on unloaded ones (and on a page mixing every class)."""
    loaded = _load_everything(session)
    truth = {
        (u.id, cls): _single_checks(authz, u, loaded[cls], ACTIONS[cls])
        for u in loaded[User]
        for cls in PAGE_CLASSES
    }
    # the reference itself: single checks on unloaded objects (the SQL path) agree
    for cls in PAGE_CLASSES:
        _unload(session, loaded[cls])
        for u in loaded[User]:
            assert _single_checks(authz, u, loaded[cls], ACTIONS[cls]) == truth[u.id, cls]
    for state in ("unloaded", "loaded"):
        if state == "loaded":
            loaded = _load_everything(session)
        for u in loaded[User]:
            for cls in PAGE_CLASSES:
                items = loaded[cls]
                expected = truth[u.id, cls]
                if state == "unloaded":
                    _unload(session, items)
                assert authz.allowed_actions(u, items, actions=ACTIONS[cls]) == expected, (
                    state,
                    u,
                    cls,
                )
                if state == "unloaded":
                    _unload(session, items)
                assert authz.allowed_actions(u, items) == expected, (state, u, cls)
                for action in ACTIONS[cls]:
                    if state == "unloaded":
                        _unload(session, items)
                    many = authz.check_many(u, action, items)
                    assert many == {k: action in v for k, v in expected.items()}, (state, u, action)
            # one page mixing classes (keys that cannot collide): one query per class
            mixed = [*loaded[Document], *loaded[Seat]]
            if state == "unloaded":
                _unload(session, mixed)
            every = (*ACTIONS[Document], *ACTIONS[Seat])
            want = {**truth[u.id, Document], **truth[u.id, Seat]}
            assert authz.allowed_actions(u, mixed, actions=every) == want, (state, u)


def test_pages_agree_with_single_checks_on_every_rule_kind(scenario: Session) -> None:
    _assert_pages_agree(scenario, Authorizer(POLICY, scenario))


def test_the_scenario_is_not_trivial(scenario: Session) -> None:
    """Every action is allowed somewhere and denied somewhere (else agreement proves little)."""
    authz = Authorizer(POLICY, scenario)
    loaded = _load_everything(scenario)
    for cls in PAGE_CLASSES:
        for action in ACTIONS[cls]:
            answers = {authz.check(u, action, o) for u in loaded[User] for o in loaded[cls]}
            assert answers == {True, False}, action


def _assert_random_pages_agree(
    session: Session, authz: Authorizer, who: int, action: Hashable
) -> None:
    """The property test's (cheaper) version, for one drawn subject: single checks on loaded
    objects as the reference; every action of a class at once with ``allowed_actions`` and one
    drawn action with ``check_many``, on unloaded objects (SQL) and loaded ones (Python)."""
    loaded = _load_everything(session)
    user_id = loaded[User][who % len(loaded[User])].id
    truth = {}
    for cls in PAGE_CLASSES:
        truth[cls] = _single_checks(authz, session.get(User, user_id), loaded[cls], ACTIONS[cls])
    for state in ("loaded", "unloaded"):  # the reference loaded them all
        user = session.get(User, user_id)
        for cls in PAGE_CLASSES:
            if not loaded[cls]:
                continue
            if state == "unloaded":
                _unload(session, loaded[cls])
            expected = truth[cls]
            assert authz.allowed_actions(user, loaded[cls]) == expected, (state, cls)
            if action in ACTIONS[cls]:
                if state == "unloaded":
                    _unload(session, loaded[cls])
                many = authz.check_many(user, action, loaded[cls])
                assert many == {k: action in v for k, v in expected.items()}, state


@settings(max_examples=EXAMPLES)
@given(data=scenarios(), who=st.integers(0, 3), action=st.sampled_from(DOCUMENT_ACTIONS))
def test_pages_agree_with_single_checks_on_random_data(
    db: Session, data: Data, who: int, action: Hashable
) -> None:
    load(db, data)
    _assert_random_pages_agree(db, Authorizer(POLICY, db), who, action)


# -- the cost of a page ----------------------------------------------------------------------


def _big_page(session: Session, size: int) -> None:
    data = Data(
        users=[{"id": 1, "level": 1, "role": "author", "is_staff": None}],
        memberships=[{"user_id": 1, "org_id": 2, "role": "member"}],
        folders=[{"id": 1, "parent_id": None, "owner_id": 1}, {"id": 2, "parent_id": 1}],
        documents=[
            {
                "id": n,
                "org_id": n % 4,
                "owner_id": 1 if n % 5 == 0 else None,
                "folder_id": (None, 1, 2)[n % 3],
                "level": n % 3,
                "status": ("draft", "done", None)[n % 3],
                "is_public": n % 7 == 0,
            }
            for n in range(1, size + 1)
        ],
        seats=[{"org_id": n % 3, "number": n, "holder_id": n % 2} for n in range(1, size + 1)],
        grants=[Grant(1, permission="doc.read", scope=("org", 3))],
    )
    data.folders[1]["owner_id"] = None
    load(session, data)


FOUR = ("doc.read", "doc.edit", "doc.delete", "doc.manage")


@pytest.mark.parametrize("size", [50, 200])
def test_a_page_of_unloaded_objects_costs_one_query(engine: Engine, db: Session, size: int) -> None:
    _big_page(db, size)
    authz = Authorizer(POLICY, db)
    user = db.scalars(sa.select(User).options(selectinload(User.memberships))).one()
    docs = db.scalars(sa.select(Document).order_by(Document.id)).all()
    assert len(docs) == size
    expected = {d.id: {a for a in FOUR if authz.check(user, a, d)} for d in docs}
    for action in FOUR:  # each action allowed on some documents and denied on others
        assert {action in v for v in expected.values()} == {True, False}, action

    for action in (*FOUR, "doc.archive"):
        _unload(db, list(docs))
        with StatementCounter(engine) as counter:
            many = authz.check_many(user, action, docs)
        assert counter.count == 1, counter.statements
        if action in FOUR:
            assert many == {k: action in v for k, v in expected.items()}

    _unload(db, list(docs))
    with StatementCounter(engine) as counter:
        actions = authz.allowed_actions(user, docs, actions=FOUR)
    assert counter.count == 1, counter.statements
    assert actions == expected
    # one statement for the whole page of keys, one parameter holding them all
    assert " IN (" in counter.statements[0] or "= ANY (" in counter.statements[0]

    # one query per class: a page of documents and seats is two
    seats = db.scalars(sa.select(Seat)).all()
    _unload(db, [*docs, *seats])
    with StatementCounter(engine) as counter:
        mixed = authz.allowed_actions(user, [*docs, *seats], actions=["doc.read", "seat.use"])
    assert counter.count == 2, counter.statements
    assert {k: v for k, v in mixed.items() if isinstance(k, int)} == {
        k: v & {"doc.read"} for k, v in expected.items()
    }
    assert any(mixed[(s.org_id, s.number)] == {"seat.use"} for s in seats)


def test_a_page_needs_no_query_for_the_grants_either(engine: Engine, db: Session) -> None:
    """A cold session (effective grants not loaded): still one query, the grants are in it."""
    _big_page(db, 50)
    db.expire_all()
    authz = Authorizer(POLICY, db)
    user = db.scalars(sa.select(User).options(selectinload(User.memberships))).one()
    docs = db.scalars(sa.select(Document)).all()
    _unload(db, list(docs))
    with StatementCounter(engine) as counter:
        authz.allowed_actions(user, docs, actions=FOUR)
    assert counter.count == 1, counter.statements


@pytest.mark.parametrize("size", [50, 200])
def test_loaded_objects_with_python_rules_cost_nothing(
    engine: Engine, db: Session, size: int
) -> None:
    _big_page(db, size)
    authz = Authorizer(POLICY, db)
    user = db.scalars(sa.select(User).options(selectinload(User.memberships))).one()
    db.scalars(sa.select(Folder).options(selectinload(Folder.parent))).all()
    docs = db.scalars(
        sa.select(Document).options(selectinload(Document.owner), selectinload(Document.folder))
    ).all()
    seats = db.scalars(sa.select(Seat)).all()
    effective_grants(db, GRANTS, user)  # cached for the session, as after the first check
    with StatementCounter(engine) as counter:
        many = authz.check_many(user, "doc.read", docs)
        actions = authz.allowed_actions(user, docs, actions=FOUR)
        by_seat = authz.allowed_actions(user, seats)
        flags = authz.check_many(user, "doc.flag", docs)  # Python-only: loaded, no query
    assert counter.count == 0, counter.statements
    assert many == {k: "doc.read" in v for k, v in actions.items()}
    assert set(by_seat) == {(s.org_id, s.number) for s in seats}
    assert flags == {d.id: authz.check(user, "doc.flag", d) for d in docs}


# -- shapes ----------------------------------------------------------------------------------


def test_one_object_gives_a_set_and_a_list_gives_a_dict(scenario: Session) -> None:
    authz = Authorizer(POLICY, scenario)
    editor = scenario.get(User, 1)
    doc = scenario.get(Document, 1)
    assert editor is not None
    assert doc is not None
    actions = authz.allowed_actions(editor, doc)
    assert isinstance(actions, frozenset)
    assert actions == {a for a in DOCUMENT_ACTIONS if authz.check(editor, a, doc)}
    assert "doc.edit" in actions
    assert authz.allowed_actions(editor, doc, actions=["doc.read"]) == {"doc.read"}
    assert authz.allowed_actions(editor, [doc]) == {1: actions}
    assert authz.allowed_actions(editor, (doc,)) == {1: actions}
    assert authz.check_many(editor, "doc.edit", []) == {}
    assert authz.allowed_actions(editor, []) == {}


def test_composite_primary_keys_are_tuples(scenario: Session) -> None:
    authz = Authorizer(POLICY, scenario)
    user = scenario.get(User, 3)  # holds seat (1, 1); member of org 2
    seats = scenario.scalars(sa.select(Seat).order_by(Seat.org_id, Seat.number)).all()
    expected = {(1, 1): True, (2, 1): True, (2, 2): True, (3, 1): False}
    assert authz.check_many(user, "seat.use", seats) == expected
    _unload(scenario, list(seats))
    assert authz.check_many(user, "seat.use", seats) == expected
    assert authz.allowed_actions(user, seats[0]) == {"seat.use"}
    assert authz.allowed_actions(user, seats) == {
        k: {"seat.use"} if v else set() for k, v in expected.items()
    }


def test_equal_keys_of_two_classes_are_refused(scenario: Session) -> None:
    """Results are keyed by primary key: Document 1 and Folder 1 in one page would share an
    entry (each getting the other's actions), so such a page raises instead."""
    authz = Authorizer(POLICY, scenario)
    user = scenario.get(User, 1)
    doc, folder = scenario.get(Document, 1), scenario.get(Folder, 1)
    with pytest.raises(InvalidArgument, match="same key 1"):
        authz.allowed_actions(user, [doc, folder], actions=["doc.read", "folder.view"])
    with pytest.raises(InvalidArgument, match="same key 1"):
        authz.check_many(user, "doc.read", [doc, folder])
    assert authz.check_many(user, "doc.read", [doc, doc]) == {1: authz.check(user, "doc.read", doc)}


def test_new_objects_are_decided_like_check(scenario: Session) -> None:
    """Objects not in the database yet are decided from their own values, as ``check`` does
    (the page query would find no row for them and deny)."""
    authz = Authorizer(POLICY, scenario)
    user = scenario.get(User, 4)  # member of org 1; memberships not loaded
    transient = Document(id=101, org_id=1, level=9, is_public=False)
    assert authz.check_many(user, "doc.read", [transient]) == {101: True}
    scenario.expire(user, ["memberships"])
    assert authz.allowed_actions(user, transient, actions=["doc.read", "doc.edit"]) == {"doc.read"}
    scenario.expire(user, ["memberships"])
    pending = Document(id=102, org_id=1, level=9, is_public=False)
    scenario.add(pending)
    with scenario.no_autoflush:
        assert authz.check_many(user, "doc.read", [pending]) == {102: True}
    scenario.expire(user, ["memberships"])
    assert authz.check(user, "doc.read", transient)
    with pytest.raises(InvalidArgument, match="needs the database"):  # a SQL-only rule
        authz.check_many(user, "doc.archive", [transient])
    with pytest.raises(InvalidArgument, match="needs the database"):
        authz.check(user, "doc.archive", transient)
    scenario.rollback()


def test_default_actions_are_those_with_rules_for_the_class(scenario: Session) -> None:
    authz = Authorizer(POLICY, scenario)
    user = scenario.get(User, 2)
    comment = scenario.get(Comment, 1)
    folder = scenario.get(Folder, 1)
    assert authz.allowed_actions(user, comment) <= {"comment.read"}
    assert authz.allowed_actions(user, folder) <= {"folder.view"}
    policy = build_policy()
    assert authz.policy.permissions == policy.permissions


def test_page_results_are_frozensets_and_booleans_in_page_order(scenario: Session) -> None:
    """A page's answers are built per class in one pass (bit masks): the caller gets a
    frozenset per key (equal ones shared, none can be changed), plain booleans from
    ``check_many``, keys in page order, and any iterable is accepted."""
    authz = Authorizer(POLICY, scenario)
    user = scenario.get(User, 1)
    assert user is not None
    docs = scenario.scalars(sa.select(Document).order_by(Document.id.desc())).all()
    _unload(scenario, list(docs))
    expected = {d.id: {a for a in DOCUMENT_ACTIONS if authz.check(user, a, d)} for d in docs}
    _unload(scenario, list(docs))
    got = authz.allowed_actions(user, list(docs), actions=DOCUMENT_ACTIONS)
    assert got == expected
    assert list(got) == [d.id for d in docs]
    assert all(type(actions) is frozenset for actions in got.values())
    assert len({id(actions) for actions in got.values()}) == len(set(got.values()))
    _unload(scenario, list(docs))
    many = authz.check_many(user, "doc.read", (d for d in docs))
    assert many == {k: "doc.read" in v for k, v in expected.items()}
    assert all(type(v) is bool for v in many.values())
    with pytest.raises(InvalidArgument, match="not an instance of a mapped class"):
        authz.check_many(user, "doc.read", [*docs, object()])
