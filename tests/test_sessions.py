"""Authorized sessions (``authorize_queries``, ``authorized_sessionmaker``) and enforcement
coverage (``enforcement``, ``install_enforcement``, ``unrestricted``), on SQLite and PostgreSQL.

The second half is their asyncio counterparts, on aiosqlite and asyncpg over the same models and
data: ``authorize_queries(AsyncSession)``, ``authorized_async_sessionmaker`` with a ``ContextVar``
subject, concurrent tasks, and enforcement coverage under asyncio."""

from __future__ import annotations

import asyncio
import logging
import warnings
from collections.abc import Hashable, Iterator
from contextvars import ContextVar

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncAttrs, AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    aliased,
    joinedload,
    mapped_column,
    relationship,
    selectinload,
)

from bastion import (
    Authorizer,
    InvalidArgument,
    Policy,
    UnauthorizedLoad,
    authorize_queries,
    authorized_async_sessionmaker,
    authorized_sessionmaker,
    enforcement,
    install_enforcement,
    it,
    subject,
    target,
    unrestricted,
)
from bastion.asyncio import AsyncAuthorizer


class Base(AsyncAttrs, DeclarativeBase):
    """``AsyncAttrs``: the async tests await lazy loads (``org.awaitable_attrs.documents``)."""


class User(Base):
    __tablename__ = "s_users"
    id: Mapped[int] = mapped_column(primary_key=True)
    is_admin: Mapped[bool] = mapped_column(default=False)
    memberships: Mapped[list[Membership]] = relationship()


class Org(Base):
    __tablename__ = "s_orgs"
    id: Mapped[int] = mapped_column(primary_key=True)
    documents: Mapped[list[Document]] = relationship(back_populates="org")


class Membership(Base):
    __tablename__ = "s_memberships"
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("s_users.id"), primary_key=True)
    org_id: Mapped[int] = mapped_column(sa.ForeignKey("s_orgs.id"), primary_key=True)


class Document(Base):
    __tablename__ = "s_documents"
    id: Mapped[int] = mapped_column(primary_key=True)
    owner_id: Mapped[int | None] = mapped_column(sa.ForeignKey("s_users.id"))
    org_id: Mapped[int | None] = mapped_column(sa.ForeignKey("s_orgs.id"))
    is_public: Mapped[bool] = mapped_column(default=False)
    org: Mapped[Org | None] = relationship(back_populates="documents")


def make_policy() -> Policy:
    policy = Policy(["read", "edit"])
    policy.allow(
        "read",
        subject=User,
        target=Document,
        when=subject.is_admin
        | target.is_public
        | (target.owner_id == subject.id)
        | subject.memberships.any(it.org_id == target.org_id),
    )
    policy.allow("edit", subject=User, target=Document, when=target.owner_id == subject.id)
    return policy


@pytest.fixture
def data(engine: Engine) -> Iterator[Engine]:
    Base.metadata.create_all(engine)
    with Session(engine) as s:
        s.add_all([User(id=1), User(id=2), User(id=3, is_admin=True), Org(id=1), Org(id=2)])
        s.flush()
        s.add_all(
            [
                Membership(user_id=1, org_id=1),
                Document(id=1, owner_id=2, org_id=1),
                Document(id=2, owner_id=2, org_id=2),
                Document(id=3, owner_id=1, org_id=None),
                Document(id=4, owner_id=2, org_id=None, is_public=True),
            ]
        )
        s.commit()
    return engine


def expected(policy: Policy, engine: Engine, user_id: int, action: str) -> list[int]:
    with Session(engine) as s:
        user = s.get(User, user_id)
        authz = Authorizer(policy, s)
        docs = s.scalars(sa.select(Document).order_by(Document.id)).all()
        return [d.id for d in docs if authz.check(user, action, d)]


@pytest.mark.parametrize(
    ("user_id", "action"), [(1, "read"), (2, "read"), (1, "edit"), (3, "read")]
)
def test_every_select_is_restricted_like_filter(data: Engine, user_id: int, action: str) -> None:
    policy = make_policy()
    want = expected(policy, data, user_id, action)
    with Session(data) as s:
        authorize_queries(s, policy, s.get(User, user_id), action)
        got = s.scalars(sa.select(Document).order_by(Document.id)).all()
        assert [d.id for d in got] == want
        legacy = s.query(Document).order_by(Document.id).all()  # the legacy Query too
        assert [d.id for d in legacy] == want
        ids = s.scalars(sa.select(Document.id).order_by(Document.id)).all()
        assert list(ids) == want


def test_aliases_joins_and_relationship_loads_are_restricted(data: Engine) -> None:
    policy = make_policy()
    with Session(data) as s:
        authorize_queries(s, policy, s.get(User, 1), "read")  # may read 1 (org 1), 3 (own), 4
        d = aliased(Document)
        rows = s.execute(sa.select(d.id).order_by(d.id)).scalars().all()
        assert list(rows) == [1, 3, 4]
        joined = s.execute(
            sa.select(Org.id, Document.id).join(Org.documents).order_by(Document.id)
        ).all()
        assert [tuple(r) for r in joined] == [(1, 1)]
        orgs = s.scalars(sa.select(Org).order_by(Org.id)).all()  # orgs are not protected
        assert [o.id for o in orgs] == [1, 2]
        assert [doc.id for doc in orgs[1].documents] == []  # lazy load: doc 2 is hidden
        eager = s.scalars(
            sa.select(Org)
            .options(selectinload(Org.documents))
            .execution_options(populate_existing=True)
        ).all()
        assert {o.id: [x.id for x in o.documents] for o in eager} == {1: [1], 2: []}


def test_get_and_count_are_restricted(data: Engine) -> None:
    policy = make_policy()
    with Session(data) as s:
        authorize_queries(s, policy, s.get(User, 2), "edit")
        assert s.get(Document, 3) is None  # owned by user 1
        assert s.get(Document, 1) is not None
        count = s.scalar(sa.select(sa.func.count()).select_from(Document))
        assert count == 3


def test_unrestricted_lifts_the_restriction_and_logs(
    data: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    policy = make_policy()
    with Session(data) as s:
        authorize_queries(s, policy, s.get(User, 2), "edit")
        with caplog.at_level(logging.WARNING, logger="bastion"), unrestricted(reason="export"):
            assert len(s.scalars(sa.select(Document)).all()) == 4
        assert "export" in caplog.text
        assert len(s.scalars(sa.select(Document)).all()) == 3
        option = sa.select(Document).execution_options(bastion_unrestricted=True)
        assert len(s.scalars(option).all()) == 4


def test_authorized_sessionmaker_reads_the_subject_at_query_time(data: Engine) -> None:
    policy = make_policy()
    current: dict[str, int] = {"user": 1}
    with Session(data) as s:
        users = {u.id: u for u in s.scalars(sa.select(User))}
        s.expunge_all()
    maker = authorized_sessionmaker(policy, lambda: users[current["user"]], bind=data)
    with maker() as s:
        assert [d.id for d in s.scalars(sa.select(Document).order_by(Document.id))] == [1, 3, 4]
    current["user"] = 2
    with maker() as s:
        assert [d.id for d in s.scalars(sa.select(Document).order_by(Document.id))] == [1, 2, 4]


def test_a_protected_model_without_a_rule_for_the_action_yields_nothing(data: Engine) -> None:
    policy = make_policy()
    policy.declare("archive")
    with Session(data) as s:
        authorize_queries(s, policy, s.get(User, 3), "archive")
        assert s.scalars(sa.select(Document)).all() == []


def test_an_alias_only_in_a_join_is_restricted(data: Engine) -> None:
    policy = make_policy()
    with Session(data) as s:
        authorize_queries(s, policy, s.get(User, 1), "read")  # may read 1 (org 1), 3, 4
        d = aliased(Document)
        # org 2 is reached only through document 2, which user 1 may not read
        on_clause = sa.select(Org.id).join(d, d.org_id == Org.id).order_by(Org.id)
        assert list(s.scalars(on_clause)) == [1]
        through = sa.select(Org.id).join(Org.documents.of_type(d)).order_by(Org.id)
        assert list(s.scalars(through)) == [1]
        named = aliased(Document, name="doc_alias")
        assert list(s.scalars(sa.select(Org.id).join(named, Org.documents.of_type(named)))) == [1]
        legacy = s.query(Org.id).join(d, d.org_id == Org.id).order_by(Org.id)
        assert [r.id for r in legacy] == [1]
        in_subquery = sa.select(Org.id).where(Org.id.in_(sa.select(d.org_id))).order_by(Org.id)
        assert list(s.scalars(in_subquery)) == [1]
        # an outer join keeps its outer rows: the clause goes into the ON, not the WHERE
        outer = sa.select(Org.id, d.id).outerjoin(d, d.org_id == Org.id).order_by(Org.id)
        assert [tuple(r) for r in s.execute(outer)] == [(1, 1), (2, None)]
        eager = sa.select(Org).options(joinedload(Org.documents.of_type(d))).order_by(Org.id)
        orgs = s.scalars(eager.execution_options(populate_existing=True)).unique().all()
        assert {o.id: [x.id for x in o.documents] for o in orgs} == {1: [1], 2: []}


def test_a_bare_alias_of_a_protected_table_is_refused(data: Engine) -> None:
    policy = make_policy()
    with Session(data) as s:
        authorize_queries(s, policy, s.get(User, 1), "read")
        d = aliased(Document)
        # of_type(alias).any() builds an EXISTS over a bare table alias: no ORM entity to
        # restrict, so it would run unrestricted (org 2 through document 2): refused
        with pytest.raises(InvalidArgument, match="s_documents"):
            s.scalars(sa.select(Org.id).where(Org.documents.of_type(d).any())).all()
        core = Document.__table__.alias()
        with pytest.raises(InvalidArgument, match="no ORM entity"):
            s.execute(sa.select(Org.id).join(core, core.c.org_id == Org.id)).all()
        # the same questions asked without the bare alias are answered, restricted
        assert list(s.scalars(sa.select(Org.id).where(Org.documents.any()))) == [1]
        with unrestricted(reason="the escape hatch still lifts it"):
            assert (
                len(s.scalars(sa.select(Org.id).where(Org.documents.of_type(d).any())).all()) == 2
            )


def test_a_bulk_update_or_delete_of_a_protected_model_is_refused(data: Engine) -> None:
    """They ran unrestricted, changing rows the subject may not even read (user 1 reads 1, 3
    and 4): now refused, changing nothing, unless lifted."""
    policy = make_policy()
    with Session(data) as s:
        authorize_queries(s, policy, s.get(User, 1), "read")
        bulk = [
            sa.update(Document).values(is_public=True),
            sa.update(Document).where(Document.id == 2).values(owner_id=1),
            sa.delete(Document).where(Document.org_id == 2),
        ]
        for statement in bulk:
            with pytest.raises(InvalidArgument, match="restricts what it reads, not a bulk"):
                s.execute(statement)
        with unrestricted(reason="the allowed keys were selected first"):
            allowed = list(
                s.scalars(
                    Authorizer(policy, s).filter(s.get(User, 1), "edit", sa.select(Document.id))
                )
            )
            s.execute(sa.update(Document).where(Document.id.in_(allowed)).values(is_public=True))
        option = {"bastion_unrestricted": True}
        s.execute(sa.update(Org).values(id=Org.id), execution_options=option)
        s.execute(sa.update(Org).values(id=Org.id))  # not protected: nothing to restrict
        s.commit()
    with Session(data) as s:
        public = s.scalars(sa.select(Document.id).where(Document.is_public).order_by(Document.id))
        assert list(public) == [3, 4]  # 3: changed by its owner; nothing else changed


def test_queries_after_a_commit_are_restricted(data: Engine) -> None:
    """The commit expires the subject; reading it for the next query's criteria refreshed it
    through the restricted session, which read it again: RecursionError on every query after
    a commit (a request that commits, then lists). The same with a get_subject that loads."""
    policy = make_policy()
    with Session(data) as s:
        authorize_queries(s, policy, s.get(User, 1), "read")
        assert sorted(s.scalars(sa.select(Document.id))) == [1, 3, 4]
        s.commit()  # expire_on_commit: the subject's attributes are gone
        assert sorted(s.scalars(sa.select(Document.id))) == [1, 3, 4]
        s.rollback()
        assert [d.id for d in s.query(Document).order_by(Document.id)] == [1, 3, 4]

    holder: dict[str, Session] = {}
    maker = authorized_sessionmaker(policy, lambda: holder["s"].get(User, 2), bind=data)
    with maker() as s:
        holder["s"] = s  # get_subject loads the user through the restricted session itself
        assert sorted(s.scalars(sa.select(Document.id))) == [1, 2, 4]
        s.commit()
        assert sorted(s.scalars(sa.select(Document.id))) == [1, 2, 4]


def test_a_filter_applied_by_the_caller_keeps_its_meaning(data: Engine) -> None:
    policy = make_policy()
    with Session(data) as s:
        user = s.get(User, 1)
        authorize_queries(s, policy, user, "read")  # read: 1, 3, 4; edit: 3
        stmt = Authorizer(policy, s).filter(user, "edit", Document).order_by(Document.id)
        assert [d.id for d in s.scalars(stmt)] == [3]  # bastion's own aliases are not touched


def test_misconfigurations_raise_instead_of_running_unfiltered(data: Engine) -> None:
    policy = make_policy()
    with pytest.raises(InvalidArgument, match="takes a Session"):
        authorize_queries(data, policy, None)  # type: ignore[type-var]
    with pytest.raises(InvalidArgument, match="authorized_async_sessionmaker"):
        authorized_sessionmaker(policy, lambda: None, class_=AsyncSession)
    with pytest.raises(InvalidArgument, match="Session subclass"):
        authorized_sessionmaker(policy, lambda: None, class_=object)

    async def get_user() -> User:  # an async getter cannot run inside the ORM's events
        return User(id=1)

    maker = authorized_sessionmaker(policy, get_user, bind=data)
    with maker() as s, pytest.raises(InvalidArgument, match="plain function"):
        s.scalars(sa.select(Document)).all()


def test_a_subject_the_policy_does_not_know_sees_nothing(data: Engine) -> None:
    with Session(data) as s:
        authorize_queries(s, make_policy(), None, "read")  # e.g. nobody logged in
        assert s.scalars(sa.select(Document)).all() == []
        authorize_queries(s, make_policy(), s.get(Org, 1), "read")
        assert s.scalars(sa.select(Document)).all() == []


# --------------------------------------------------------------------------- enforcement


@pytest.fixture
def enforced(data: Engine) -> Iterator[type[Session]]:
    class EnforcedSession(Session):
        pass

    install_enforcement(EnforcedSession, make_policy())
    return EnforcedSession


def test_loading_a_protected_model_without_authorization_fails_naming_model_and_line(
    data: Engine, enforced: type[Session]
) -> None:
    with enforced(data) as s, enforcement():
        s.get(User, 1)  # users are not protected
        with pytest.raises(UnauthorizedLoad) as caught:
            s.scalars(sa.select(Document)).all()
        assert caught.value.model is Document
        assert "test_sessions.py" in caught.value.location


def test_a_check_or_filter_authorizes_the_model_for_the_scope(
    data: Engine, enforced: type[Session]
) -> None:
    policy = make_policy()
    with enforced(data) as s, enforcement() as scope:
        user = s.get(User, 1)
        authz = Authorizer(policy, s)
        assert [d.id for d in s.scalars(authz.filter(user, "read", Document))]
        s.scalars(sa.select(Document)).all()  # authorized by the filter above
        assert scope.violations == []
    with enforced(data) as s, enforcement():
        user = s.get(User, 1)
        with unrestricted(reason="load for a check"):
            doc = s.get(Document, 3)
        assert Authorizer(policy, s).check(user, "edit", doc)
        s.scalars(sa.select(Document)).all()


def test_warn_mode_warns_and_records(data: Engine, enforced: type[Session]) -> None:
    with enforced(data) as s, enforcement(mode="warn") as scope:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            s.scalars(sa.select(Document)).all()
        assert any("Document loaded at" in str(w.message) for w in caught)
        assert len(scope.violations) == 1


def test_outside_a_scope_nothing_is_enforced(data: Engine, enforced: type[Session]) -> None:
    with enforced(data) as s:
        assert len(s.scalars(sa.select(Document)).all()) == 4


def test_bastions_own_queries_are_not_reported(data: Engine, enforced: type[Session]) -> None:
    policy = make_policy()
    with enforced(data) as s:
        doc = s.get(Document, 1)
        user = s.get(User, 1)
        s.expire(doc)
    with enforced(data) as s, enforcement():
        user = s.get(User, 1)
        with unrestricted(reason="fixture"):
            doc = s.get(Document, 1)
        s.expire(doc)
        # the check runs its own SELECT EXISTS on documents: not a violation
        assert Authorizer(policy, s).check(user, "read", doc) is True


def test_unrestricted_needs_a_reason() -> None:
    with pytest.raises(InvalidArgument, match="reason"), unrestricted(reason=" "):
        pass


def test_an_authorized_session_counts_as_authorization(data: Engine) -> None:
    class AuthorizedEnforced(Session):
        pass

    install_enforcement(AuthorizedEnforced, make_policy())
    with AuthorizedEnforced(data) as s, enforcement() as scope:
        authorize_queries(s, make_policy(), s.get(User, 2), "read")
        assert [d.id for d in s.scalars(sa.select(Document).order_by(Document.id))] == [1, 2, 4]
        assert scope.violations == []


# =============================================================================================
# asyncio: the same behaviours through an AsyncSession (aiosqlite, asyncpg)

#: who may do what on documents 1-4 (the sync tests compute it with Authorizer.check)
VISIBLE = {(1, "read"): [1, 3, 4], (2, "read"): [1, 2, 4], (3, "read"): [1, 2, 3, 4]}
VISIBLE |= {(1, "edit"): [3], (2, "edit"): [1, 2, 4], (3, "edit"): []}


@pytest.fixture
def adata(data: Engine, async_engine: AsyncEngine) -> AsyncEngine:
    """``async_engine`` on the database ``data`` filled (the same ``db_url``)."""
    return async_engine


async def doc_ids(
    session: AsyncSession, stmt: sa.Select[tuple[Document]] | None = None
) -> list[int]:
    stmt = sa.select(Document).order_by(Document.id) if stmt is None else stmt
    return [d.id for d in await session.scalars(stmt)]


async def detached_users(engine: AsyncEngine) -> dict[int, User]:
    async with AsyncSession(engine, expire_on_commit=False) as s:
        users = {u.id: u for u in await s.scalars(sa.select(User))}
        s.expunge_all()
    return users


def test_the_visible_table_is_what_check_says(data: Engine) -> None:
    for (user_id, action), ids in VISIBLE.items():
        assert expected(make_policy(), data, user_id, action) == ids


@pytest.mark.parametrize(
    ("user_id", "action"), [(1, "read"), (2, "read"), (1, "edit"), (3, "read")]
)
async def test_async_every_select_is_restricted(
    adata: AsyncEngine, user_id: int, action: str
) -> None:
    async with AsyncSession(adata) as s:
        authorize_queries(s, make_policy(), await s.get(User, user_id), action)
        assert await doc_ids(s) == VISIBLE[user_id, action]
        ids = await s.scalars(sa.select(Document.id).order_by(Document.id))
        assert list(ids) == VISIBLE[user_id, action]
        count = await s.scalar(sa.select(sa.func.count()).select_from(Document))
        assert count == len(VISIBLE[user_id, action])
        streamed = await s.stream_scalars(sa.select(Document.id).order_by(Document.id))
        assert [i async for i in streamed] == VISIBLE[user_id, action]


async def test_async_aliases_joins_and_relationship_loads(adata: AsyncEngine) -> None:
    async with AsyncSession(adata) as s:
        authorize_queries(s, make_policy(), await s.get(User, 1), "read")  # 1, 3, 4
        d = aliased(Document)
        assert list(await s.scalars(sa.select(d.id).order_by(d.id))) == [1, 3, 4]
        joined = await s.execute(sa.select(Org.id, Document.id).join(Org.documents))
        assert [tuple(r) for r in joined] == [(1, 1)]
        only_in_join = sa.select(Org.id).join(d, d.org_id == Org.id).order_by(Org.id)
        assert list(await s.scalars(only_in_join)) == [1]
        through = sa.select(Org.id).join(Org.documents.of_type(d)).order_by(Org.id)
        assert list(await s.scalars(through)) == [1]
        orgs = (await s.scalars(sa.select(Org).order_by(Org.id))).all()  # not protected
        assert [o.id for o in orgs] == [1, 2]
        assert [x.id for x in await orgs[1].awaitable_attrs.documents] == []  # lazy load
        assert [x.id for x in await orgs[0].awaitable_attrs.documents] == [1]
        for loader in (selectinload, joinedload):
            stmt = sa.select(Org).options(loader(Org.documents)).order_by(Org.id)
            eager = (await s.scalars(stmt.execution_options(populate_existing=True))).unique()
            assert {o.id: [x.id for x in o.documents] for o in eager} == {1: [1], 2: []}
        await s.refresh(orgs[1], ["documents"])
        assert orgs[1].documents == []
        with pytest.raises(InvalidArgument, match="no ORM entity"):
            await s.scalars(sa.select(Org.id).where(Org.documents.of_type(d).any()))


async def test_async_get_is_restricted(adata: AsyncEngine) -> None:
    async with AsyncSession(adata) as s:
        authorize_queries(s, make_policy(), await s.get(User, 1), "edit")
        assert await s.get(Document, 1) is None
        assert (await s.get(Document, 3)) is not None


async def test_async_unrestricted_lifts_the_restriction_and_logs(
    adata: AsyncEngine, caplog: pytest.LogCaptureFixture
) -> None:
    async with AsyncSession(adata) as s:
        assert authorize_queries(s, make_policy(), await s.get(User, 1), "edit") is s
        with caplog.at_level(logging.WARNING, logger="bastion"), unrestricted(reason="export"):
            assert await doc_ids(s) == [1, 2, 3, 4]
        assert "export" in caplog.text
        assert await doc_ids(s) == [3]
        lifted = (
            sa.select(Document).order_by(Document.id).execution_options(bastion_unrestricted=True)
        )
        assert await doc_ids(s, lifted) == [1, 2, 3, 4]


async def test_async_a_protected_model_without_a_rule_for_the_action_yields_nothing(
    adata: AsyncEngine,
) -> None:
    policy = make_policy()
    policy.declare("archive")
    async with AsyncSession(adata) as s:
        authorize_queries(s, policy, await s.get(User, 3), "archive")
        assert await doc_ids(s) == []


CURRENT_USER: ContextVar[User | None] = ContextVar("test_current_user", default=None)
CURRENT_ACTION: ContextVar[Hashable] = ContextVar("test_current_action", default="read")


async def test_authorized_async_sessionmaker_reads_the_subject_at_query_time(
    adata: AsyncEngine,
) -> None:
    users = await detached_users(adata)
    maker = authorized_async_sessionmaker(
        make_policy(), CURRENT_USER.get, CURRENT_ACTION.get, bind=adata, expire_on_commit=False
    )
    assert isinstance(maker, async_sessionmaker)
    async with maker() as s:
        assert await doc_ids(s) == []  # nobody: fail closed
        CURRENT_USER.set(users[1])
        assert await doc_ids(s) == [1, 3, 4]
        CURRENT_ACTION.set("edit")
        assert await doc_ids(s) == [3]
        CURRENT_USER.set(users[2])
        assert await doc_ids(s) == [1, 2, 4]


async def test_concurrent_tasks_never_see_each_others_rows(adata: AsyncEngine) -> None:
    users = await detached_users(adata)
    maker = authorized_async_sessionmaker(
        make_policy(), CURRENT_USER.get, CURRENT_ACTION.get, bind=adata
    )

    async def visit(user_id: int, action: str) -> tuple[int, str, list[list[int]]]:
        CURRENT_USER.set(users[user_id])  # each task runs in its own copy of the context
        CURRENT_ACTION.set(action)
        seen = []
        for _ in range(4):
            async with maker() as s:
                seen.append(await doc_ids(s))
                await asyncio.sleep(0)  # let the other tasks run between two queries
                orgs = await s.scalars(sa.select(Org).options(selectinload(Org.documents)))
                seen.append(sorted(x.id for o in orgs for x in o.documents))
        return user_id, action, seen

    jobs = [(u, a) for u in (1, 2, 3) for a in ("read", "edit")] * 2
    results = await asyncio.gather(*(visit(u, a) for u, a in jobs))
    for user_id, action, seen in results:
        ids = VISIBLE[user_id, action]
        with_org = [i for i in ids if i in (1, 2)]  # the documents that belong to an org
        assert seen == [ids, with_org] * 4, (user_id, action)


async def test_async_misconfigurations_raise(adata: AsyncEngine) -> None:
    policy = make_policy()
    with pytest.raises(InvalidArgument, match="Session subclass"):
        authorized_async_sessionmaker(policy, CURRENT_USER.get, sync_session_class=AsyncSession)
    with pytest.raises(InvalidArgument, match="AsyncSession subclass"):
        authorized_async_sessionmaker(policy, CURRENT_USER.get, class_=Session)

    async def get_user() -> User | None:
        return CURRENT_USER.get()

    async with authorized_async_sessionmaker(policy, get_user, bind=adata)() as s:
        with pytest.raises(InvalidArgument, match="plain function"):
            await s.scalars(sa.select(Document))


async def test_async_queries_after_a_commit_are_restricted(adata: AsyncEngine) -> None:
    async with AsyncSession(adata) as s:
        authorize_queries(s, make_policy(), await s.get(User, 1), "read")
        await s.commit()  # the subject expired: refreshed inside the event, in the greenlet
        assert sorted(await s.scalars(sa.select(Document.id))) == [1, 3, 4]


async def test_async_a_bulk_update_of_a_protected_model_is_refused(adata: AsyncEngine) -> None:
    async with AsyncSession(adata) as s:
        authorize_queries(s, make_policy(), await s.get(User, 1), "read")
        with pytest.raises(InvalidArgument, match="bulk DELETE of Document"):
            await s.execute(sa.delete(Document))
        await s.rollback()
        assert sorted(await s.scalars(sa.select(Document.id))) == [1, 3, 4]  # nothing deleted


# -- enforcement under asyncio ---------------------------------------------------------------


class AsyncEnforced(Session):
    """The ``sync_session_class`` the async tests check (events live on the sync session)."""


install_enforcement(AsyncEnforced, make_policy())


async def test_async_loading_without_authorization_fails_naming_model_and_line(
    adata: AsyncEngine,
) -> None:
    async with AsyncSession(adata, sync_session_class=AsyncEnforced) as s:
        with enforcement():
            await s.get(User, 1)  # users are not protected
            with pytest.raises(UnauthorizedLoad) as caught:
                await s.scalars(sa.select(Document))
            assert caught.value.model is Document
            assert "test_sessions.py" in caught.value.location
        assert len((await s.scalars(sa.select(Document))).all()) == 4  # outside a scope


async def test_async_checks_filters_and_authorized_sessions_authorize(adata: AsyncEngine) -> None:
    policy = make_policy()
    async with AsyncSession(adata, sync_session_class=AsyncEnforced) as s:
        with enforcement() as scope:
            user = await s.get(User, 1)
            authz = AsyncAuthorizer(policy, s)
            readable = authz.filter(user, "read", Document).order_by(Document.id)
            assert await doc_ids(s, readable) == [1, 3, 4]
            await s.scalars(sa.select(Document))  # authorized by the filter above
        assert scope.violations == []
    async with AsyncSession(adata, sync_session_class=AsyncEnforced) as s:
        with enforcement() as scope:
            user = await s.get(User, 1)
            with unrestricted(reason="load for a check"):
                doc = await s.get(Document, 1)
            s.expire(doc)  # the check needs its own SELECT EXISTS: bastion's, not reported
            assert await AsyncAuthorizer(policy, s).check(user, "read", doc) is True
            await s.scalars(sa.select(Document))
        assert scope.violations == []
    async with AsyncSession(adata, sync_session_class=AsyncEnforced) as s:
        with enforcement() as scope:
            authorize_queries(s, policy, await s.get(User, 2), "read")
            assert await doc_ids(s) == [1, 2, 4]
        assert scope.violations == []


async def test_async_warn_mode_and_install_on_one_async_session(adata: AsyncEngine) -> None:
    async with AsyncSession(adata) as s:
        install_enforcement(s, make_policy())  # its sync_session
        with enforcement(mode="warn") as scope, warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            await s.scalars(sa.select(Document))
        assert any("Document loaded at" in str(w.message) for w in caught)
        assert len(scope.violations) == 1
    with pytest.raises(InvalidArgument, match="sync_session_class"):
        install_enforcement(async_sessionmaker(adata), make_policy())


async def test_async_enforcement_scopes_are_per_task(adata: AsyncEngine) -> None:
    policy = make_policy()

    async def request(authorize: bool) -> list[UnauthorizedLoad]:
        async with AsyncSession(adata, sync_session_class=AsyncEnforced) as s:
            with enforcement(mode="warn") as scope:
                user = await s.get(User, 1)
                if authorize:
                    AsyncAuthorizer(policy, s).filter(user, "read", Document)
                await asyncio.sleep(0)
                await s.scalars(sa.select(Document))
            return scope.violations

    # catch_warnings is process-wide state: one around all the tasks, not one per task
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = await asyncio.gather(*(request(i % 2 == 0) for i in range(6)))
    assert [len(v) for v in results] == [0, 1, 0, 1, 0, 1]
    assert len(caught) == 3


# -- an Authorizer on an authorized session ---------------------------------------------------


class CensorBase(DeclarativeBase):
    pass


class CUser(CensorBase):
    __tablename__ = "c_users"
    id: Mapped[int] = mapped_column(primary_key=True)


class CFolder(CensorBase):
    __tablename__ = "c_folders"
    id: Mapped[int] = mapped_column(primary_key=True)
    owner_id: Mapped[int]
    is_locked: Mapped[bool]


class CDocument(CensorBase):
    __tablename__ = "c_documents"
    id: Mapped[int] = mapped_column(primary_key=True)
    folder_id: Mapped[int | None] = mapped_column(sa.ForeignKey("c_folders.id"))
    folder: Mapped[CFolder | None] = relationship()


def censor_policy() -> Policy:
    policy = Policy(["read", "edit", "file"])
    policy.allow("read", subject=CUser, target=CDocument, when=target.id != None)  # noqa: E711
    policy.allow("read", subject=CUser, target=CFolder, when=target.owner_id == subject.id)
    policy.allow("edit", subject=CUser, target=CDocument, when=~target.folder.has(it.is_locked))
    policy.allow("file", subject=CUser, target=CDocument, when=target.folder.has(it.id > 0))
    return policy


@pytest.fixture
def censored(engine: Engine) -> Engine:
    """User 1 reads every document but only their own folders; folder 2 (user 2's) is locked."""
    CensorBase.metadata.create_all(engine)
    with Session(engine) as s:
        s.add_all([CUser(id=1), CUser(id=2)])
        s.add_all(
            [CFolder(id=1, owner_id=1, is_locked=False), CFolder(id=2, owner_id=2, is_locked=True)]
        )
        s.add_all([CDocument(id=1, folder_id=1), CDocument(id=2, folder_id=2), CDocument(id=3)])
        s.commit()
    return engine


def test_an_authorizer_on_an_authorized_session_is_not_fooled_by_hidden_rows(
    censored: Engine,
) -> None:
    """The session hides folder 2 from ``doc.folder`` (documented); the Python path decided from
    that view: "edit unless the folder is locked" allowed document 2, whose folder is locked
    (a silent allow), and "file if it has a folder" denied it. The database decides instead."""
    policy = censor_policy()
    truth = {"edit": {1, 3}, "file": {1, 2}}
    with Session(censored) as s:
        user = s.get(CUser, 1)
        authorize_queries(s, policy, user, "read")
        docs = list(s.scalars(sa.select(CDocument).options(selectinload(CDocument.folder))))
        assert {d.id: d.folder is None for d in docs} == {1: False, 2: True, 3: True}  # hidden
        authz = Authorizer(policy, s)
        for action, allowed in truth.items():
            assert {d.id for d in docs if authz.check(user, action, d)} == allowed, action
            assert set(s.scalars(authz.filter(user, action, sa.select(CDocument.id)))) == allowed
            assert authz.check_many(user, action, docs) == {d.id: d.id in allowed for d in docs}
            for d in docs:
                assert authz.explain(user, action, d).allowed == (d.id in allowed), (action, d.id)
        assert authz.allowed_actions(user, docs, actions=["edit", "file"]) == {
            d.id: {a for a, ids in truth.items() if d.id in ids} for d in docs
        }
        with unrestricted(reason="the same answers without the restriction"):
            plain = Authorizer(policy, s)
            s.expire_all()
            docs = list(s.scalars(sa.select(CDocument).options(selectinload(CDocument.folder))))
            for action, allowed in truth.items():
                assert {d.id for d in docs if plain.check(user, action, d)} == allowed


async def test_async_an_authorizer_on_an_authorized_session_asks_the_database(
    censored: Engine, async_engine: AsyncEngine
) -> None:
    policy = censor_policy()
    async with AsyncSession(async_engine) as s:
        user = await s.get(CUser, 1)
        authorize_queries(s, policy, user, "read")
        stmt = sa.select(CDocument).options(selectinload(CDocument.folder)).order_by(CDocument.id)
        docs = list(await s.scalars(stmt))
        authz = AsyncAuthorizer(policy, s)
        assert [await authz.check(user, "edit", d) for d in docs] == [True, False, True]
        assert [await authz.check(user, "file", d) for d in docs] == [True, True, False]
