"""Authorized sessions (``authorize_queries``, ``authorized_sessionmaker``) and enforcement
coverage (``enforcement``, ``install_enforcement``, ``unrestricted``), on SQLite and PostgreSQL."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    aliased,
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
    authorized_sessionmaker,
    enforcement,
    install_enforcement,
    it,
    subject,
    target,
    unrestricted,
)


class Base(DeclarativeBase):
    pass


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
