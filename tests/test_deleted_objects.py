"""Objects deleted in the session: denied every permission, on every path, on SQLite and
PostgreSQL.

Once a deletion is flushed (and every query flushes first) the database has no row for the
object, so ``filter`` never returns it and a database check finds nothing. ``check`` used to
answer from the object's loaded values instead (allowed on the Python path, denied on the
database path, so the answer depended on what happened to be loaded, and on the order of calls:
the flush itself loads an expired object's values); a Python-only rule on a deleted, expired
object raised SQLAlchemy's ``ObjectDeletedError``. Now ``check``, ``check_many``,
``allowed_actions`` and ``explain`` deny a deleted object every permission, whether the deletion
is pending, flushed or committed, and whatever is loaded; a rollback undoes it.

The scenario is ``test_pages``'s (every rule kind: comparisons, relationships, static roles,
stored grants of every tier, deferral, trees, a SQL-only and a Python-only rule).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, scoped_session, sessionmaker

from _pages_world import DOCUMENT_ACTIONS, Document, User, create_schema, keyed, load
from bastion import Authorizer, InvalidArgument
from test_pages import POLICY, SCENARIO, _load_everything

#: documents no comment, object-scoped grant or other row refers to (deleting them breaks no
#: foreign key); the others stay
DELETED = (1, 4, 5, 8, 9, 10, 11, 12)
#: the actions with a SQL form (``doc.flag`` is Python-only: no filter)
FILTERABLE = tuple(a for a in DOCUMENT_ACTIONS if a != "doc.flag")


@pytest.fixture
def scenario(engine: sa.Engine) -> Iterator[Session]:
    create_schema(engine)
    with Session(engine) as session:
        load(session, SCENARIO)
        yield session


def _actions(authz: Authorizer, user: Any, doc: Any) -> set[Hashable]:
    return {a for a in DOCUMENT_ACTIONS if authz.check(user, a, doc)}


def _filtered(session: Session, authz: Authorizer, user: Any, action: Hashable) -> set[int]:
    stmt = authz.filter(user, action, sa.select(Document.id))
    return set(session.scalars(stmt))


@pytest.mark.parametrize("loading", ["loaded", "expired"])
@pytest.mark.parametrize("when", ["pending", "flushed", "committed"])
def test_deleted_documents_are_denied_every_permission(
    scenario: Session, when: str, loading: str
) -> None:
    authz = Authorizer(POLICY, scenario)
    loaded = _load_everything(scenario)
    users, docs = loaded[User], keyed(loaded[Document])
    before = {(u.id, k): _actions(authz, u, d) for u in users for k, d in docs.items()}
    # not trivial: the documents about to go were allowed something, to several users
    assert sum(bool(before[u.id, k]) for u in users for k in DELETED) >= 10
    gone = [docs[k] for k in DELETED]
    for doc in gone:
        if loading == "expired":
            scenario.expire(doc)
        scenario.delete(doc)
    if when != "pending":
        scenario.flush()
    if when == "committed":
        scenario.commit()  # the deleted objects are detached now; everything else expired

    for u in users:
        for k, doc in docs.items():
            want = set() if k in DELETED else before[u.id, k]
            assert _actions(authz, u, doc) == want, (when, loading, u.id, k)
            assert authz.allowed_actions(u, doc, actions=DOCUMENT_ACTIONS) == want
            if k in DELETED:
                explanation = authz.explain(u, "doc.read", doc)
                assert not explanation.allowed
                assert "deleted" in str(explanation)
        page = list(docs.values())
        expected = {k: frozenset(() if k in DELETED else before[u.id, k]) for k in docs}
        assert authz.allowed_actions(u, page, actions=DOCUMENT_ACTIONS) == expected
        for action in DOCUMENT_ACTIONS:
            many = authz.check_many(u, action, page)
            assert many == {k: action in v for k, v in expected.items()}, (u.id, action)
        # the invariant: check(obj) == (obj in filter), deleted objects included
        for action in FILTERABLE:
            allowed = {k for k, doc in docs.items() if authz.check(u, action, doc)}
            assert allowed == _filtered(scenario, authz, u, action), (u.id, action)


@pytest.mark.parametrize("when", ["pending", "flushed"])
def test_a_rollback_gives_the_objects_their_permissions_back(scenario: Session, when: str) -> None:
    authz = Authorizer(POLICY, scenario)
    loaded = _load_everything(scenario)
    users, docs = loaded[User], keyed(loaded[Document])
    before = {(u.id, k): _actions(authz, u, d) for u in users for k, d in docs.items()}
    for k in DELETED:
        scenario.delete(docs[k])
    if when == "flushed":
        scenario.flush()
    assert not any(_actions(authz, u, docs[k]) for u in users for k in DELETED)
    scenario.rollback()
    for u in users:
        for k, doc in docs.items():
            assert _actions(authz, u, doc) == before[u.id, k], (u.id, k)
        assert authz.allowed_actions(u, list(docs.values()), actions=DOCUMENT_ACTIONS) == {
            k: frozenset(before[u.id, k]) for k in docs
        }


def test_a_python_rule_on_a_deleted_expired_object_denies_instead_of_raising(
    scenario: Session,
) -> None:
    """``doc.flag`` is a Python function: reading the deleted object's expired values loads them,
    which flushes the deletion and finds no row (SQLAlchemy's ObjectDeletedError leaked out)."""
    authz = Authorizer(POLICY, scenario)
    loaded = _load_everything(scenario)
    user = next(u for u in loaded[User] if u.level == 0)  # flag: the document's level above 0
    doc = keyed(loaded[Document])[4]  # level 4 % 5 = 4: flaggable
    assert authz.check(user, "doc.flag", doc)
    scenario.expire(doc)
    scenario.delete(doc)
    assert authz.check(user, "doc.flag", doc) is False
    assert authz.check_many(user, "doc.flag", [doc]) == {4: False}
    assert not authz.explain(user, "doc.flag", doc).allowed


def test_a_scoped_session_is_refused_with_a_clear_error(engine: sa.Engine) -> None:
    """An Authorizer answers through one Session; a scoped_session was accepted, then pages
    failed on it and cached grants were read from the session current at construction."""
    scoped = scoped_session(sessionmaker(engine))
    try:
        with pytest.raises(InvalidArgument, match=r"db.session\(\)"):
            Authorizer(POLICY, scoped)  # type: ignore[arg-type]
        authz = Authorizer(POLICY, scoped())
        with pytest.raises(InvalidArgument, match="needs a Session"):
            authz.session = scoped  # type: ignore[assignment]
        assert authz.session is scoped()  # unchanged
    finally:
        scoped.remove()


def test_actions_given_as_one_string_are_refused(scenario: Session) -> None:
    authz = Authorizer(POLICY, scenario)
    loaded = _load_everything(scenario)
    user, doc = loaded[User][0], loaded[Document][0]
    with pytest.raises(InvalidArgument, match="list of permissions"):
        authz.allowed_actions(user, doc, actions="doc.read")
    assert authz.allowed_actions(user, doc, actions=["doc.read"]) <= {"doc.read"}
