"""bastion.asyncio: the Authorizer's tests, awaited on an AsyncSession (aiosqlite and asyncpg).

Three parts:

* the unit data set of ``test_authorizer`` (``_unit_models``, the same ``EXPECTED`` table): the
  Python path sends no statement, the database path one ``SELECT EXISTS`` (counted with a
  ``before_cursor_execute`` listener on the async engine's sync engine), filters agree;
* the scenario of ``test_pages`` (``_pages_world``: rules, static roles on a column and on
  membership rows, stored grants of every tier, deferral, trees, SQL-only and Python-only rules):
  every ``AsyncAuthorizer`` method gives the synchronous ``Authorizer``'s answer;
* ``AsyncGrantStore`` (the grants tests' schema): the same units of work, audit rows, and checks
  that follow grants and revocations.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Hashable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import Session, selectinload

import _pages_world as pages
from _unit_models import Base, Document, Org, User, populate
from bastion import (
    Authorizer,
    InvalidArgument,
    MissingContext,
    NotAuthorized,
    PermissionNotFound,
    RuleNotTranslatable,
)
from bastion.asyncio import AsyncAuthorizer, AsyncGrantStore
from bastion.rules.explain import Explanation
from test_authorizer import CASES, EXPECTED, build_policy
from test_pages import SCENARIO

# -- the unit data set -----------------------------------------------------------------------


@pytest.fixture
async def db(async_engine: AsyncEngine) -> None:
    async with async_engine.begin() as connection:
        await connection.run_sync(Base.metadata.create_all)
    async with AsyncSession(async_engine) as session:
        await session.run_sync(populate)


@pytest.fixture
async def authz(async_session: AsyncSession, db: None) -> AsyncAuthorizer:
    return AsyncAuthorizer(build_policy(), async_session)


@pytest.fixture
def statements(async_engine: AsyncEngine) -> Iterator[list[str]]:
    sent: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        sent.append(" ".join(statement.split()))

    sa.event.listen(async_engine.sync_engine, "before_cursor_execute", record)
    yield sent
    sa.event.remove(async_engine.sync_engine, "before_cursor_execute", record)


async def user(session: AsyncSession, name: str, *, loaded: bool = True) -> User:
    options = [selectinload(User.memberships)] if loaded else []
    stmt = sa.select(User).where(User.name == name).options(*options)
    return (await session.scalars(stmt)).one()


async def documents(session: AsyncSession) -> list[Document]:
    stmt = (
        sa.select(Document)
        .options(selectinload(Document.tags), selectinload(Document.owner))
        .order_by(Document.id)
    )
    return list(await session.scalars(stmt))


async def ids(session: AsyncSession, stmt: sa.Select[Any]) -> set[int]:
    return {x.id if isinstance(x, Document) else x for x in await session.scalars(stmt)}


async def test_check_on_loaded_objects_issues_no_sql(
    authz: AsyncAuthorizer, async_session: AsyncSession, statements: list[str]
) -> None:
    docs = await documents(async_session)
    for permission, name in CASES:
        who = await user(async_session, name)
        statements.clear()
        allowed = {d.id for d in docs if await authz.check(who, permission, d)}
        assert statements == [], (permission, name)
        assert allowed == EXPECTED[permission][name], (permission, name)


async def test_check_on_an_unloaded_object_issues_one_select_exists(
    authz: AsyncAuthorizer, async_session: AsyncSession, statements: list[str]
) -> None:
    queried = 0
    for permission, name in CASES:
        who = await user(async_session, name)
        for doc in await documents(async_session):
            pk = doc.id
            async_session.expire(doc)
            statements.clear()
            expected = pk in EXPECTED[permission][name]
            assert await authz.check(who, permission, doc) is expected, (permission, name, pk)
            assert len(statements) <= 1, (permission, name, pk, statements)
            assert all(s.startswith("SELECT EXISTS") for s in statements)
            assert doc.__dict__.keys() <= {"_sa_instance_state"}  # not refreshed
            queried += len(statements)
    assert queried == len(CASES) * 5 - 10  # root alone decides 'audit' and 'outsider'


async def test_check_with_an_unloaded_subject(
    authz: AsyncAuthorizer, async_session: AsyncSession, statements: list[str]
) -> None:
    bob = await user(async_session, "bob", loaded=False)
    doc4 = (await documents(async_session))[3]  # only bob's membership decides
    statements.clear()
    assert await authz.check(bob, "read", doc4) is True
    assert len(statements) == 1
    assert "memberships" not in bob.__dict__  # answered in SQL, nothing lazy-loaded
    for name, expected in (("alice", True), ("bob", False), ("root", False)):
        loaded = await user(async_session, name)
        statements.clear()
        assert await authz.check(loaded, "manage") is expected
        assert statements == []
        async_session.expunge_all()
        unloaded = await user(async_session, name, loaded=False)
        statements.clear()
        assert await authz.check(unloaded, "manage") is expected
        assert len(statements) == 1
        async_session.expunge_all()


async def test_check_with_context_and_check_only_rules(
    authz: AsyncAuthorizer, async_session: AsyncSession
) -> None:
    alice, docs = await user(async_session, "alice"), await documents(async_session)
    assert {d.id for d in docs if await authz.check(alice, "level", d, max=2)} == {1, 2, 4}
    assert {d.id for d in docs if await authz.check(alice, "tagged", d, tag="urgent")} == {1, 3}
    with pytest.raises(MissingContext):
        await authz.check(alice, "level", docs[1])
    keyed = [(d.id, d) for d in docs]
    for doc in docs:
        async_session.expire(doc)
    assert {k for k, d in keyed if await authz.check(alice, "level", d, max=2)} == {1, 2, 4}
    # a Python-only rule on an expired object: loaded the ordinary way, through run_sync
    assert {k for k, d in keyed if await authz.check(alice, "script", d)} == {1, 2}
    with pytest.raises(RuleNotTranslatable):
        authz.filter(alice, "script", Document)
    with pytest.raises(PermissionNotFound):
        await authz.check(alice, "raed", docs[0])


async def test_check_of_a_new_object_after_commit(
    authz: AsyncAuthorizer, async_session: AsyncSession
) -> None:
    alice = await user(async_session, "alice")
    await async_session.commit()  # expires alice
    draft = Document(id=50, title="new", is_public=False, owner_id=1)
    assert await authz.check(alice, "read", draft) is True
    async_session.add(draft)
    async_session.expire(alice)
    assert await authz.check(alice, "read", draft) is True


async def test_authorize_raises_with_an_explanation(
    authz: AsyncAuthorizer, async_session: AsyncSession
) -> None:
    alice, docs = await user(async_session, "alice"), await documents(async_session)
    assert await authz.authorize(alice, "read", docs[0]) is None  # type: ignore[func-returns-value]
    with pytest.raises(NotAuthorized) as info:
        await authz.authorize(alice, "read", docs[2])
    denied = info.value
    assert (denied.subject, denied.permission, denied.target) == (alice, "read", docs[2])
    assert isinstance(denied.explanation, Explanation)
    assert denied.explanation.outcome is False
    assert "may not 'read' on Document #3" in denied.explanation.reason
    # the object expired: the explanation loads what it needs through run_sync
    async_session.expire(docs[2])
    with pytest.raises(NotAuthorized) as info:
        await authz.authorize(alice, "read", docs[2])
    assert info.value.explanation is not None
    with pytest.raises(NotAuthorized) as info:
        await authz.authorize(await user(async_session, "bob"), "manage")
    assert info.value.target is None


async def test_explain(authz: AsyncAuthorizer, async_session: AsyncSession) -> None:
    bob, docs = await user(async_session, "bob"), await documents(async_session)
    allowed = await authz.explain(bob, "edit", docs[2])
    assert allowed.allowed
    assert "allowed by rule" in allowed.reason
    denied = await authz.explain(bob, "edit", docs[0])
    assert not denied.allowed
    assert denied.to_dict()["children"]
    async_session.expire(docs[0])
    assert (await authz.explain(bob, "edit", docs[0])).allowed is False
    explained = await authz.explain_filter(bob, "read", Document, counts=True)
    assert "documents" in explained.sql
    assert explained.branches[0].rows is not None


async def test_filter_agrees_with_check_and_composes(
    authz: AsyncAuthorizer, async_session: AsyncSession
) -> None:
    docs = await documents(async_session)
    for permission, name in CASES:
        who = await user(async_session, name)
        checked = {d.id for d in docs if await authz.check(who, permission, d)}
        assert await ids(async_session, authz.filter(who, permission, Document)) == checked
        assert checked == EXPECTED[permission][name]
    alice = await user(async_session, "alice")
    page = authz.filter(alice, "read", Document).order_by(Document.id.desc()).limit(2).offset(1)
    assert [d.id for d in await async_session.scalars(page)] == [4, 2]
    joined = authz.filter(alice, "read", sa.select(Document, Org).join(Document.org))
    assert {doc.id for doc, _ in await async_session.execute(joined)} == {1, 4, 5}
    counted = sa.select(sa.func.count()).select_from(
        authz.filter(alice, "read", Document).subquery()
    )
    assert await async_session.scalar(counted) == 4
    plain = AsyncAuthorizer(authz.policy, async_session, union_branches=False)
    assert "UNION" not in str(plain.filter(alice, "read", Document))
    assert await ids(async_session, plain.filter(alice, "read", Document)) == {1, 2, 4, 5}
    # alice's memberships are loaded: written in as values, or (inline_loaded=False) queried
    subqueries = AsyncAuthorizer(authz.policy, async_session, inline_loaded=False)
    for each, reads_memberships in ((authz, False), (subqueries, True)):
        stmt = each.filter(alice, "read", Document)
        assert ("memberships" in str(stmt)) is reads_memberships
        assert await ids(async_session, stmt) == {1, 2, 4, 5}


async def test_filter_with_context_and_cached_clauses(
    authz: AsyncAuthorizer, async_session: AsyncSession
) -> None:
    alice = await user(async_session, "alice")
    assert await ids(async_session, authz.filter(alice, "level", Document, max=2)) == {1, 2, 4}
    with pytest.raises(MissingContext):
        authz.filter(alice, "level", Document)
    for _ in range(2):
        for name in ("alice", "bob", "root"):
            stmt = authz.filter(await user(async_session, name), "edit", Document)
            assert await ids(async_session, stmt) == EXPECTED["edit"][name]


async def test_filter_refuses_an_expired_subject_with_advice(
    authz: AsyncAuthorizer, async_session: AsyncSession
) -> None:
    # Building a filter does no I/O; reading an expired attribute would be a lazy load, which
    # an AsyncSession cannot do there (MissingGreenlet). Refused with what to do instead.
    alice = await user(async_session, "alice")
    await async_session.commit()  # expires alice
    with pytest.raises(InvalidArgument, match="refresh"):
        authz.filter(alice, "audit", Document)  # reads subject.is_admin
    # a rule that only joins from the subject's identity needs no attribute: fine expired
    assert (
        await ids(async_session, authz.filter(alice, "edit", Document)) == EXPECTED["edit"]["alice"]
    )
    await async_session.refresh(alice)
    assert await ids(async_session, authz.filter(alice, "audit", Document)) == {1, 2}


async def test_filter_refuses_a_subject_column_never_loaded(
    authz: AsyncAuthorizer, async_session: AsyncSession
) -> None:
    """Only expired attributes were refused: a column left out by load_only() (or deferred())
    is a lazy load too, and failed deep in SQLAlchemy with MissingGreenlet."""
    stmt = sa.select(User).where(User.name == "alice").options(sa.orm.load_only(User.name))
    alice = (await async_session.scalars(stmt)).one()
    with pytest.raises(InvalidArgument, match=r"is_admin .*not loaded"):
        authz.filter(alice, "audit", Document)  # reads subject.is_admin
    assert (
        await ids(async_session, authz.filter(alice, "edit", Document)) == EXPECTED["edit"]["alice"]
    )


async def test_allowed_actions_refuses_actions_given_as_one_string(
    authz: AsyncAuthorizer, async_session: AsyncSession
) -> None:
    docs = await documents(async_session)
    with pytest.raises(InvalidArgument, match="list of permissions"):
        await authz.allowed_actions(await user(async_session, "alice"), docs[0], "edit")


async def test_check_many_and_allowed_actions(
    authz: AsyncAuthorizer, async_session: AsyncSession, statements: list[str]
) -> None:
    docs = await documents(async_session)
    for permission, name in CASES:
        who = await user(async_session, name)
        expected = {d.id: d.id in EXPECTED[permission][name] for d in docs}
        statements.clear()
        assert await authz.check_many(who, permission, docs) == expected
        assert statements == []  # everything loaded: decided in Python
        for doc in docs:
            async_session.expire(doc)
        statements.clear()
        assert await authz.check_many(who, permission, docs) == expected
        # one query per class of the page (Document, Invoice); none if the subject decides
        assert len(statements) <= 2
        docs = await documents(async_session)
    bob = await user(async_session, "bob")
    actions = ["read", "edit", "view"]
    page = await authz.allowed_actions(bob, docs, actions)
    assert page == {d.id: {a for a in actions if d.id in EXPECTED[a]["bob"]} for d in docs}
    assert await authz.allowed_actions(bob, docs[2], actions) == {"read", "edit"}
    with_context = ["read", "edit", "audit", "level", "tagged"]
    every = await authz.allowed_actions(bob, docs[2], with_context, tag="urgent", max=1)
    assert every == {"read", "edit", "audit", "tagged"}


async def test_who_can(authz: AsyncAuthorizer, async_session: AsyncSession) -> None:
    docs = await documents(async_session)
    for permission in ("read", "edit"):
        for doc in docs:
            stmt = authz.who_can(permission, doc).order_by(User.id)
            names = {u.name for u in await async_session.scalars(stmt)}
            expected = {n for n in ("alice", "bob", "root") if doc.id in EXPECTED[permission][n]}
            assert names == expected, (permission, doc)
    managers = await async_session.scalars(authz.who_can("manage"))
    assert [u.name for u in managers] == ["alice"]


async def test_needs_an_async_session(authz: AsyncAuthorizer) -> None:
    with pytest.raises(InvalidArgument):
        AsyncAuthorizer(authz.policy, Session())  # type: ignore[arg-type]


async def test_concurrent_tasks_keep_their_subjects(async_engine: AsyncEngine, db: None) -> None:
    """Many tasks, one policy (shared plans and clause caches), one session each."""
    policy = build_policy()

    async def task(name: str, permission: str) -> tuple[str, str, set[int], set[int]]:
        async with AsyncSession(async_engine) as session:
            authorizer = AsyncAuthorizer(policy, session)
            who = await user(session, name, loaded=False)
            filtered = await ids(session, authorizer.filter(who, permission, Document))
            docs = list(await session.scalars(sa.select(Document)))
            pages = await authorizer.check_many(who, permission, docs)
            return name, permission, filtered, {k for k, v in pages.items() if v}

    jobs = [task(name, permission) for permission, name in CASES * 3]
    for name, permission, filtered, checked in await asyncio.gather(*jobs):
        assert filtered == checked == EXPECTED[permission][name], (name, permission)


# -- every rule kind: AsyncAuthorizer == Authorizer -------------------------------------------


@pytest.fixture
async def scenario(async_engine: AsyncEngine, async_session: AsyncSession) -> AsyncSession:
    """The pages scenario; its stored permissions, bundles and groups made by AsyncGrantStore."""
    async with async_engine.begin() as connection:
        await connection.run_sync(pages.Base.metadata.create_all)
    store = AsyncGrantStore(async_session, pages.GRANTS, actor="tests")
    for token in pages.TOKENS:
        await store.create_permission(token)
    for label, tokens in pages.BUNDLES.items():
        await store.create_bundle(label, tokens)
    for label in pages.GROUPS:
        await store.create_group(label)
    await async_session.run_sync(pages.load, SCENARIO)
    if async_engine.dialect.name == "postgresql":
        # GUIDE: without statistics PostgreSQL misplans the recursive CTEs (and turns JIT on)
        async with async_engine.connect() as connection:
            await connection.execute(sa.text("ANALYZE"))
    return async_session


def _truth(session: Session, policy: Any) -> dict[tuple[Any, type, Any], set[Hashable]]:
    """The synchronous Authorizer's single checks: {(user id, class, key): actions}."""
    authz = Authorizer(policy, session)
    found = pages.objects(session)
    return {
        (u.id, cls, key): {a for a in ACTIONS[cls] if authz.check(u, a, obj)}
        for u in found[pages.User]
        for cls in ACTIONS
        for key, obj in pages.keyed(found[cls]).items()
    }


ACTIONS: dict[type, tuple[Hashable, ...]] = {
    pages.Document: pages.DOCUMENT_ACTIONS,
    pages.Comment: ("comment.read",),
    pages.Folder: ("folder.view",),
    pages.Seat: ("seat.use",),
}


async def test_a_deleted_object_is_denied_on_the_async_path_too(scenario: AsyncSession) -> None:
    """The I/O-free trial answers from loaded values: it must deny a deleted object as the
    synchronous check does (``test_deleted_objects``), not allow it from its values."""
    authz = AsyncAuthorizer(pages.build_policy(), scenario)
    stmt = sa.select(pages.User).options(selectinload(pages.User.memberships))
    users = list(await scenario.scalars(stmt.order_by(pages.User.id)))
    doc = await scenario.get(pages.Document, 4)  # public: everyone may read it
    assert doc is not None
    assert all([await authz.check(u, "doc.read", doc) for u in users])
    await scenario.delete(doc)
    assert not any([await authz.check(u, "doc.read", doc) for u in users])
    assert await authz.check_many(users[0], "doc.read", [doc]) == {4: False}
    assert await authz.allowed_actions(users[0], doc) == frozenset()
    await scenario.rollback()
    doc = await scenario.get(pages.Document, 4)
    assert all([await authz.check(u, "doc.read", doc) for u in users])


async def test_every_method_agrees_with_the_sync_authorizer(scenario: AsyncSession) -> None:
    session = scenario
    policy = pages.build_policy()
    truth = await session.run_sync(_truth, policy)
    assert any(truth.values())
    assert not all(truth.values())
    session.expunge_all()
    authz = AsyncAuthorizer(policy, session)
    users = list(await session.scalars(sa.select(pages.User).order_by(pages.User.id)))
    for cls, actions in ACTIONS.items():
        items = pages.keyed(await session.scalars(sa.select(cls)))
        for u in users:
            want = {key: truth[u.id, cls, key] for key in items}
            # single checks, on loaded and expired objects
            for key, obj in items.items():
                assert {a for a in actions if await authz.check(u, a, obj)} == want[key]
                session.expire(obj)
                assert {a for a in actions if await authz.check(u, a, obj)} == want[key]
            # pages
            assert await authz.allowed_actions(u, list(items.values()), actions) == want
            for action in actions:
                many = await authz.check_many(u, action, list(items.values()))
                assert many == {k: action in v for k, v in want.items()}, (u, action)
                # filters (not the Python-only rule)
                if action == "doc.flag":
                    continue
                stmt = authz.filter(u, action, cls)
                got = pages.keyed(await session.scalars(stmt))
                assert set(got) == {k for k, v in want.items() if action in v}, (u, action)
            # explanations agree with the decisions
            for key, obj in list(items.items())[:4]:
                for action in actions:
                    explanation = await authz.explain(u, action, obj)
                    assert explanation.allowed is (action in want[key]), (u, action, key)
    # who_can reads every rule kind from the subject's side, trees and deferrals included
    await _assert_who_can(session, authz, truth, users)
    # an object-less permission: a group's global grant or is_staff
    for u in users:
        expected = await session.run_sync(
            lambda s, u=u: Authorizer(policy, s).check(u, "reports.view")
        )
        assert await authz.check(u, "reports.view") is expected
    reporters = {u.id for u in await session.scalars(authz.who_can("reports.view"))}
    assert reporters == {2}  # user 2: is_staff, and in "staff" (team holds reports.view)


async def _assert_who_can(
    session: AsyncSession,
    authz: AsyncAuthorizer,
    truth: dict[tuple[Any, type, Any], set[Hashable]],
    users: list[Any],
) -> None:
    for cls, reversible in pages.REVERSIBLE.items():
        for key, obj in pages.keyed(await session.scalars(sa.select(cls))).items():
            for action in reversible:
                got = {u.id for u in await session.scalars(authz.who_can(action, obj))}
                want = {u.id for u in users if action in truth[u.id, cls, key]}
                assert got == want, (cls.__name__, key, action)


# -- AsyncGrantStore --------------------------------------------------------------------------


@pytest.fixture
async def grants_world(async_engine: AsyncEngine, async_session: AsyncSession) -> AsyncGrantStore:
    from grants import schema

    async with async_engine.begin() as connection:
        await connection.run_sync(schema.Base.metadata.create_all)
        await connection.run_sync(schema.UuidBase.metadata.create_all)
    await async_session.run_sync(schema.populate)
    store = AsyncGrantStore(async_session, schema.grants, actor="admin")
    for token in schema.TOKENS:
        await store.create_permission(token, f"may {token}")
    return store


MINUTE = dt.timedelta(minutes=1)
AUDIT = ("actor", "action", "subject", "object", "scope", "reason")


async def test_grant_store_units_of_work_audit_and_checks(
    grants_world: AsyncGrantStore, async_session: AsyncSession
) -> None:
    from grants.schema import Document as GDocument
    from grants.schema import User as GUser
    from grants.schema import policy as grants_policy

    store, session = grants_world, async_session
    authz = AsyncAuthorizer(grants_policy, session)
    alice, bob = await session.get(GUser, 1), await session.get(GUser, 2)
    doc1, doc3 = await session.get(GDocument, 1), await session.get(GDocument, 3)

    async def readable(who: Any) -> list[int]:
        stmt = authz.filter(who, "doc.read", sa.select(GDocument.id).order_by(GDocument.id))
        return list(await session.scalars(stmt))

    assert await authz.check(alice, "doc.read", doc1) is False
    assert await readable(alice) == []
    await store.create_bundle("readers", ["doc.read"], reason="ticket 1")
    await store.create_group("staff")
    await store.grant(alice, permission="doc.read", scope=("org", 1), reason="onboarding")
    assert await authz.check(alice, "doc.read", doc1) is True
    assert await readable(alice) == [1, 2]
    await store.add_member("staff", bob)
    await store.grant("staff", bundle="readers", scope=("org", 2))
    await store.grant("staff", permission="reports.view")
    assert await authz.check(bob, "doc.read", doc3) is True
    assert await authz.check(bob, "reports.view") is True
    assert await readable(bob) == [3, 7]
    assert await store.effective_permissions(bob) == [
        ("doc.read", ("org", "2"), "group bundle"),
        ("reports.view", ("", ""), "group"),
    ]
    await store.revoke(alice, permission="doc.read", scope=("org", 1), reason="left")
    await store.remove_member("staff", bob)
    assert await authz.check(alice, "doc.read", doc1) is False
    assert await authz.check(bob, "reports.view") is False
    assert await readable(bob) == []
    assert await store.effective_permissions(bob) == []
    await store.rename("bundle", "readers", "viewers")
    await store.add_to_bundle("viewers", "doc.edit")
    await store.remove_from_bundle("viewers", "doc.read")
    await store.delete("group", "staff", reason="reorg")
    rows = [tuple(getattr(r, c) for c in AUDIT) for r in reversed(await store.audit_log(12))]
    assert rows == [
        ("admin", "create bundle", "readers", "doc.read", "", "ticket 1"),
        ("admin", "create group", "staff", "", "", None),
        ("admin", "grant", "User 1", "permission doc.read", "org:1", "onboarding"),
        ("admin", "grant", "User 2", "group staff", "", None),
        ("admin", "grant", "group staff", "bundle readers", "org:2", None),
        ("admin", "grant", "group staff", "permission reports.view", "", None),
        ("admin", "revoke", "User 1", "permission doc.read", "org:1", "left"),
        ("admin", "revoke", "User 2", "group staff", "", None),
        ("admin", "rename bundle", "readers", "viewers", "", None),
        ("admin", "add to bundle", "viewers", "doc.edit", "", None),
        ("admin", "remove from bundle", "viewers", "doc.read", "", None),
        ("admin", "delete group", "staff", "", "", "reorg"),
    ]


async def test_grant_store_time_windows_and_bad_input(
    grants_world: AsyncGrantStore, async_session: AsyncSession
) -> None:
    from grants.schema import Document as GDocument
    from grants.schema import User as GUser
    from grants.schema import policy as grants_policy

    store, session = grants_world, async_session
    authz = AsyncAuthorizer(grants_policy, session)
    alice, doc1 = await session.get(GUser, 1), await session.get(GDocument, 1)
    now = dt.datetime.now(dt.timezone.utc)
    await store.grant(alice, permission="doc.read", expires_at=now - dt.timedelta(hours=1))
    # (a minute ago: PostgreSQL's now() is the transaction's start, which may precede `now`)
    await store.grant(alice, permission="doc.delete", scope=doc1, valid_from=now - MINUTE)
    assert await authz.check(alice, "doc.read", doc1) is False  # expired
    assert await authz.check(alice, "doc.delete", doc1) is True  # on the object itself
    assert await store.effective_permissions(alice) == [("doc.delete", ("Document", "1"), "direct")]
    before = len(await store.audit_log(1000))
    with pytest.raises(PermissionNotFound):
        await store.grant(alice, permission="nope")
    with pytest.raises(InvalidArgument):
        await store.add_member("nope", alice)
    assert len(await store.audit_log(1000)) == before  # nothing changed, nothing audited
    assert await store.revoke_scope(doc1, reason="deleting it") == 1  # the object's grants
    assert await authz.check(alice, "doc.delete", doc1) is False
